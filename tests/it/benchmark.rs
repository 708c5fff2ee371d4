//! `evaluate --benchmark` against `golden/benchmark.json`: HF transformers (eager) scored every
//! candidate unsteered and under steering-vectors' `apply`, and scipy/statsmodels computed the
//! intervals and tests (see `tests/fixtures/make_fixtures.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;
use train_vector::benchmark::{load_benchmark, parse_benchmark, Prompting, DEFAULT_CUE};
use train_vector::evaluate::score::{baseline, steered};
use train_vector::evaluate::{tokenize_items, ScoreOptions, Setup};
use train_vector::model::{load_model, LoadOptions, LoadedModel, ModelSpec};
use train_vector::vector::SteeringVector;

use crate::common::{fixtures, run, stderr, tiny_model_dir, Golden};

/// Candidate scores (sums of log-probs) against HF, relative to the score's size.
const SCORE_TOL: f64 = 1e-4;

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/benchmark.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn vector() -> SteeringVector {
    let g = Golden::load();
    SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    )
}

fn vector_file(dir: &Path) -> PathBuf {
    let p = dir.join("v.safetensors");
    std::fs::write(&p, vector().to_safetensors().unwrap()).unwrap();
    p
}

fn model() -> LoadedModel {
    let dir = tiny_model_dir();
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    load_model(spec, &LoadOptions::for_logits(Device::Cpu, DType::F32)).unwrap()
}

/// The golden's contrast pairs as a benchmark file of `{"positive", "negative"}` objects.
fn pairs_file(dir: &Path, g: &Value) -> PathBuf {
    let items: Vec<Value> = g["files"]["pairs"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| serde_json::json!({"positive": it["candidates"][0], "negative": it["candidates"][1]}))
        .collect();
    let p = dir.join("pairs.json");
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    p
}

fn benchmark_path(dir: &Path, g: &Value, name: &str) -> PathBuf {
    match name {
        "pairs" => pairs_file(dir, g),
        _ => fixtures().join("benchmark").join(name),
    }
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: {got} vs {want}"
    );
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Tokens, shared prefixes and every candidate score, unsteered and in every setup at every
/// multiplier, match HF with steering-vectors.
#[test]
fn candidate_scores_match_hf_in_every_setup() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let m = model();
    let v = vector();
    let multipliers = f64s(&g["multipliers"]);
    let setups: Vec<Setup> = std::iter::once(Setup::all(&v))
        .chain((0..4).map(Setup::layer))
        .collect();
    let prompting = Prompting {
        cue: DEFAULT_CUE.to_string(),
        chat: None,
    };
    let opts = ScoreOptions {
        max_batch_tokens: 512,
    };
    let bar = indicatif::ProgressBar::hidden();
    let mut worst: f64 = 0.0;
    for name in ["choice.json", "ab.json", "pairs"] {
        let file = &g["files"][name];
        let (_, items) = load_benchmark(&benchmark_path(tmp.path(), &g, name), &prompting).unwrap();
        let tokens = tokenize_items(&m.tokenizer, &items, m.model.as_ref()).unwrap();
        for (i, (t, want)) in tokens
            .iter()
            .zip(file["items"].as_array().unwrap())
            .enumerate()
        {
            assert_eq!(items[i].correct as u64, want["correct"].as_u64().unwrap());
            assert_eq!(
                t.prefix.len() as u64,
                want["prefix_len"].as_u64().unwrap(),
                "{name} {i}"
            );
            let ids: Vec<Vec<u32>> = serde_json::from_value(want["token_ids"].clone()).unwrap();
            for (c, full) in ids.iter().enumerate() {
                assert_eq!(
                    [&t.prefix[..], &t.suffixes[c][..]].concat(),
                    *full,
                    "{name} {i}"
                );
            }
        }
        let point = train_vector::model::LayerType::DecoderBlock;
        let base = baseline(m.model.as_ref(), &tokens, &[], point, &opts, &bar).unwrap();
        let all = steered(
            m.model.as_ref(),
            &tokens,
            &v,
            &setups,
            &multipliers,
            &opts,
            &bar,
        )
        .unwrap();
        for (s, setup) in setups.iter().enumerate() {
            for (k, mult) in multipliers.iter().enumerate() {
                let want = &file["scores"][&setup.name][k];
                for (i, scores) in all[s][k].iter().enumerate() {
                    for (c, got) in scores.iter().enumerate() {
                        let w = want[i][c].as_f64().unwrap();
                        let what = format!("{name} {} x{mult} item {i} candidate {c}", setup.name);
                        close(*got, w, SCORE_TOL, &what);
                        worst = worst.max((got - w).abs() / w.abs().max(1.0));
                        if *mult == 0.0 {
                            close(base.scores[i][c], w, SCORE_TOL, &what);
                        }
                    }
                }
            }
        }
    }
    eprintln!("candidate scores: worst relative difference to HF {worst:e}");
}

/// The command's metrics equal the reference's: accuracy, Wilson intervals, McNemar p-values,
/// slopes and groups to float precision; the percentile-bootstrap intervals (numpy's generator
/// against ours, 10,000 resamples each) to their Monte Carlo error.
#[test]
fn metrics_match_scipy_and_statsmodels() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let v = vector_file(tmp.path());
    let model = tiny_model_dir();
    for name in ["choice.json", "ab.json", "pairs"] {
        let file = &g["files"][name];
        let bench = benchmark_path(tmp.path(), &g, name);
        let o = run(&[
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--benchmark",
            bench.to_str().unwrap(),
            "--per-layer",
            "--multipliers=-1,-0.5,0,0.5,1",
            "--json",
            "--no-progress",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut worst_ci: f64 = 0.0;
        for row in report["results"].as_array().unwrap() {
            let setup = row["setup"].as_str().unwrap();
            let mult = row["multiplier"].as_f64().unwrap();
            let want = file["metrics"][setup]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["multiplier"].as_f64() == Some(mult))
                .unwrap();
            let what = format!("{name} {setup} x{mult}");
            for key in ["n", "accuracy", "delta_accuracy", "mcnemar_p"] {
                close(
                    row[key].as_f64().unwrap(),
                    want[key].as_f64().unwrap(),
                    1e-12,
                    &format!("{what} {key}"),
                );
            }
            for key in ["mean_p_correct", "delta_p_correct"] {
                close(
                    row[key].as_f64().unwrap(),
                    want[key].as_f64().unwrap(),
                    1e-4,
                    &format!("{what} {key}"),
                );
            }
            for (a, b) in f64s(&row["accuracy_ci"])
                .iter()
                .zip(f64s(&want["accuracy_ci"]))
            {
                close(*a, b, 1e-12, &format!("{what} accuracy_ci"));
            }
            for key in [
                "mean_p_correct_ci",
                "delta_p_correct_ci",
                "delta_accuracy_ci",
            ] {
                for (a, b) in f64s(&row[key]).iter().zip(f64s(&want[key])) {
                    worst_ci = worst_ci.max((a - b).abs());
                    // One resampling step of an n-item mean, or 0.03 for continuous means.
                    let step = 1.0 / want["n"].as_f64().unwrap();
                    assert!((a - b).abs() <= step.max(0.03), "{what} {key}: {a} vs {b}");
                }
            }
        }
        eprintln!("{name}: bootstrap interval ends within {worst_ci:.4} of scipy's");
        for s in report["steerability"].as_array().unwrap() {
            let setup = s["setup"].as_str().unwrap();
            let want = &file["steerability"][setup];
            for key in ["mean_slope", "median_slope", "anti_steerable"] {
                close(
                    s[key].as_f64().unwrap(),
                    want[key].as_f64().unwrap(),
                    1e-4,
                    &format!("{name} {setup} {key}"),
                );
            }
        }
        if name == "choice.json" {
            for (field, values) in g["files"][name]["groups"].as_object().unwrap() {
                for (value, by_m) in values.as_object().unwrap() {
                    for (m, want) in by_m.as_object().unwrap() {
                        let got = report["groups"][field][value]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|r| {
                                r["setup"] == "all" && r["multiplier"].as_f64() == m.parse().ok()
                            })
                            .unwrap();
                        assert_eq!(got["n"], want["n"], "{field} {value}");
                        close(
                            got["accuracy"].as_f64().unwrap(),
                            want["accuracy"].as_f64().unwrap(),
                            1e-12,
                            value,
                        );
                        close(
                            got["mean_p_correct"].as_f64().unwrap(),
                            want["mean_p_correct"].as_f64().unwrap(),
                            1e-4,
                            value,
                        );
                    }
                }
            }
        }
    }
}

/// The same seed gives the same intervals; another seed may not.
#[test]
fn intervals_are_deterministic_under_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vector_file(tmp.path());
    let model = tiny_model_dir();
    let bench = fixtures().join("benchmark/ab.json");
    let eval = |seed: &str| {
        let o = run(&[
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--benchmark",
            bench.to_str().unwrap(),
            "--seed",
            seed,
            "--json",
            "--no-progress",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut r: Value = serde_json::from_slice(&o.stdout).unwrap();
        r.as_object_mut().unwrap().remove("timing");
        r
    };
    assert_eq!(eval("7"), eval("7"));
    assert_ne!(eval("7")["results"], eval("8")["results"]);
}

/// Bad benchmark items: one error line naming the file and the item, exit status 1.
#[test]
fn bad_benchmark_items_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vector_file(tmp.path());
    let model = tiny_model_dir();
    let choice = |extra: &str| {
        format!(
            r#"[{{"prompt": "Where?", "choices": {{"labels": ["A", "B"]}}, "correct_answer": "A"}},
                {{"prompt": "Where?", {extra}}}]"#
        )
    };
    // Past the fixture's context of 1024 positions.
    let long = "the ball ".repeat(1200);
    let cases: Vec<(String, &str)> = vec![
        (
            choice(r#""choices": {"labels": ["A", "B"]}, "correct_answer": "C""#),
            "item 1: has `correct_answer` `C`",
        ),
        (
            choice(r#""choices": {"labels": ["A"]}, "correct_answer": "A""#),
            "item 1: has fewer than two choices",
        ),
        (
            choice(r#""choices": {"labels": ["A", "A"]}, "correct_answer": "A""#),
            "item 1: has the label `A` twice",
        ),
        (
            r#"[{"choices": {"labels": ["A", "B"]}, "correct_answer": "A"}]"#.to_string(),
            "item 0: has no `prompt`",
        ),
        (
            r#"[{"text": "x"}]"#.to_string(),
            "item 0 has none of the shapes",
        ),
        (
            format!(r#"[{{"positive": "{long} basket", "negative": "{long} box"}}]"#),
            "item 0 (positive) is",
        ),
    ];
    for (text, needle) in &cases {
        let bench = tmp.path().join("bench.json");
        std::fs::write(&bench, text).unwrap();
        let o = run(&[
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--benchmark",
            bench.to_str().unwrap(),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains(needle) && errors[0].contains("bench.json"),
            "{needle}: {err}"
        );
    }
    for bad in ["--multipliers=1,inf", "--multipliers=x"] {
        let bench = fixtures().join("benchmark/ab.json");
        let o = run(&[
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--vector",
            v.to_str().unwrap(),
            "--benchmark",
            bench.to_str().unwrap(),
            bad,
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("invalid `--multipliers` value"),
            "{}",
            stderr(&o)
        );
    }
    let unknown = parse_benchmark(
        r#"[{"q": 1}]"#,
        &Prompting {
            cue: String::new(),
            chat: None,
        },
    )
    .unwrap_err();
    assert!(unknown.hint().unwrap().contains("correct_answer"));
}
