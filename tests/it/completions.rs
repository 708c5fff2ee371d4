//! `generate --prompts`: batched generation over a dataset equals one prompt at a time, the
//! output is each item with its completions, and a stopped run resumes where it left off.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use train_vector::generate::{generate, generate_batch, prompt_ids, GenerateOptions, Sampling};
use train_vector::model::{load_model, LoadOptions, ModelSpec};
use train_vector::steer::Steering;
use train_vector::vector::SteeringVector;

use crate::common::{bin, run, stderr, tiny_model_dir, Golden};

const PROMPTS: [&str; 5] = [
    "Hi",
    "Mira put the red ball in the basket and went outside to play.",
    "The weather today is lovely, said Jonah,",
    "Please explain how to pick a lock.",
    "Theory of mind means tracking what other people believe, even when they are wrong. So",
];

fn vector_file(dir: &Path) -> PathBuf {
    let g = Golden::load();
    let v = SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    );
    let p = dir.join("v.safetensors");
    std::fs::write(&p, v.to_safetensors().unwrap()).unwrap();
    p
}

fn prompts_file(dir: &Path) -> PathBuf {
    let items: Vec<serde_json::Value> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": i, "prompt": p}))
        .collect();
    let p = dir.join("prompts.json");
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    p
}

/// Rows of different lengths decode together exactly as each does alone, greedy and sampled.
#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let dir = tiny_model_dir();
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    let m = load_model(spec, &LoadOptions::for_logits(Device::Cpu, DType::F32)).unwrap();
    let g = Golden::load();
    let v = SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    );
    let ids: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| prompt_ids(&m.tokenizer, p, false).unwrap())
        .collect();
    for sampling in [
        None,
        Some(Sampling {
            temperature: 0.9,
            top_p: 0.9,
            seed: 5,
        }),
    ] {
        let opts = GenerateOptions {
            max_new_tokens: 12,
            sampling,
            stop: Vec::new(),
        };
        let mut hook = Steering::new(&v, 0.5, None, &Device::Cpu).unwrap();
        let batched = generate_batch(m.model.as_ref(), &ids, &mut hook, &opts).unwrap();
        for (p, got) in ids.iter().zip(&batched) {
            let alone = generate(m.model.as_ref(), p, &mut hook, &opts).unwrap();
            assert_eq!(got, &alone, "{sampling:?}");
            assert_eq!(got.len(), 12);
        }
    }
}

fn dataset(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = tiny_model_dir();
    let v = vector_file(dir);
    let prompts = prompts_file(dir);
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--vector",
        v.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--multipliers=-1,1",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn read(path: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Each item keeps its fields and gains one completion per multiplier (the baseline first),
/// equal to `generate --prompt` on that item alone.
#[test]
fn dataset_output_matches_single_prompt_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.json");
    let o = dataset(tmp.path(), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("multiplier 1: 5 completions"),
        "{}",
        stderr(&o)
    );
    let items = read(&out);
    assert_eq!(items.len(), PROMPTS.len());
    let v = vector_file(tmp.path());
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["id"], i);
        assert_eq!(item["prompt"], PROMPTS[i]);
        let c = item["completions"].as_array().unwrap();
        let ms: Vec<f64> = c
            .iter()
            .map(|c| c["multiplier"].as_f64().unwrap())
            .collect();
        assert_eq!(ms, [0.0, -1.0, 1.0]);
        for entry in c {
            assert!(entry["degenerate"].is_boolean());
            assert!(entry["tokens"].as_u64().unwrap() <= 8);
        }
        let model = tiny_model_dir();
        let one = run(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--prompt",
            PROMPTS[i],
            "--multiplier=-1",
            "--max-new-tokens",
            "8",
        ]);
        assert!(one.status.success(), "{}", stderr(&one));
        let text = String::from_utf8(one.stdout).unwrap();
        assert_eq!(
            text.trim_end_matches('\n'),
            c[1]["completion"].as_str().unwrap()
        );
    }
}

/// A run stopped after some batches leaves their items; `--resume` finishes the rest and the
/// file equals an uninterrupted run's. Without `--resume` an existing output is refused.
#[test]
fn a_stopped_run_resumes_where_it_left_off() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.json");
    assert!(dataset(tmp.path(), &full, &[]).status.success());
    let part = tmp.path().join("part.json");
    let mut first_two = read(&full);
    first_two.truncate(2);
    std::fs::write(&part, serde_json::to_string(&first_two).unwrap()).unwrap();
    let refused = dataset(tmp.path(), &part, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("already exists"),
        "{}",
        stderr(&refused)
    );
    let resumed = dataset(tmp.path(), &part, &["--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("after 2 finished items"));
    assert_eq!(read(&part), read(&full));

    // Killed for real while it runs: whatever it saved resumes to the same file.
    let killed = tmp.path().join("killed.json");
    let model = tiny_model_dir();
    let v = vector_file(tmp.path());
    let prompts = prompts_file(tmp.path());
    let mut child = bin()
        .args(["generate", "--model", model.to_str().unwrap()])
        .args([
            "--vector",
            v.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
        ])
        .args(["--output", killed.to_str().unwrap(), "--multipliers=-1,1"])
        .args([
            "--max-new-tokens",
            "8",
            "--batch-size",
            "2",
            "--no-progress",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !killed.exists() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    if killed.exists() {
        let saved = read(&killed);
        assert!(saved.len() <= PROMPTS.len());
        assert_eq!(saved[..], read(&full)[..saved.len()]);
    }
    let again = dataset(tmp.path(), &killed, &["--resume"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(read(&killed), read(&full));
}

#[test]
fn bad_prompts_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir();
    let v = vector_file(tmp.path());
    let cases = [
        (
            r#"[{"prompt": "a"}, {"text": "b"}]"#,
            "item 1 has no `prompt` or `question`",
        ),
        (r#"[{"prompt": "a"}, 3]"#, "item 1 is not an object"),
        (r#"{"prompt": "a"}"#, "expected a JSON list"),
        (
            r#"[{"prompt": " "}]"#,
            "item 0 has an empty or non-string prompt",
        ),
    ];
    for (text, needle) in cases {
        let p = tmp.path().join("p.json");
        std::fs::write(&p, text).unwrap();
        let out = tmp.path().join("o.json");
        let o = run(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--prompts",
            p.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains(needle) && errors[0].contains("p.json"),
            "{err}"
        );
        assert!(!out.exists());
    }
    let bad_multiplier = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--vector",
        v.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--multipliers=1,nan",
    ]);
    assert_eq!(bad_multiplier.status.code(), Some(1));
    assert!(stderr(&bad_multiplier).contains("invalid `--multipliers` value `nan`"));
}
