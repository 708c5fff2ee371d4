//! The binary end to end on the fixture model: files, names, keys, and every bad input of the
//! contract answered with one error line, a non-zero exit and nothing written.

use std::path::{Path, PathBuf};

use crate::common::{bin, cosine, fixtures, rel_l2, run, stderr, tiny_model_dir, Golden};
use train_vector::vector::SteeringVector;

fn today() -> String {
    chrono::Local::now().format("%Y%m%d").to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Runs a failing command: one `error:` line containing `needle`, non-zero exit, no panic,
/// and the output directory (not existing before) still absent.
fn assert_fails(extra: &[&str], needle: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = tiny_model_dir();
    let mut args = vec!["--output-dir", out.to_str().unwrap(), "--no-progress"];
    for (flag, default) in [
        ("--contrast-type", "tom"),
        ("--model", model.to_str().unwrap()),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    let o = run(&args);
    let err = stderr(&o);
    assert!(!o.status.success(), "expected failure for {extra:?}\n{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(needle),
        "`{needle}` not in `{}`",
        errors[0]
    );
    assert!(!out.exists(), "{extra:?} left {:?}", files_in(&out));
    err
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn trains_the_fixture_and_writes_three_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a/b");
    let model = tiny_model_dir();
    let o = run(&[
        "--contrast-type",
        "tom",
        "--model",
        model.to_str().unwrap(),
        "--num-samples",
        "10",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for stage in ["[1/4]", "[2/4]", "[3/4]", "[4/4]", "Tokens processed"] {
        assert!(err.contains(stage), "{stage} missing:\n{err}");
    }
    let base = format!("tom_tiny-gemma2_all-layers_{}", today());
    let want: Vec<String> = ["json", "pkl", "safetensors"]
        .iter()
        .map(|e| format!("{base}.{e}"))
        .collect();
    assert_eq!(files_in(&out), want);
    // stdout carries the saved paths and nothing else
    let stdout = String::from_utf8(o.stdout).unwrap();
    let mut printed: Vec<&str> = stdout.lines().collect();
    printed.sort();
    let expected: Vec<String> = want
        .iter()
        .map(|n| out.join(n).display().to_string())
        .collect();
    assert_eq!(printed, expected);

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(&want[0])).unwrap()).unwrap();
    let keys: Vec<&str> = meta
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..10],
        [
            "contrast_type",
            "contrast_name",
            "model",
            "num_layers",
            "layers",
            "num_samples",
            "batch_size",
            "timestamp",
            "date_trained",
            "filename"
        ]
    );
    assert_eq!(meta["contrast_name"], "Theory of Mind");
    assert_eq!(meta["num_layers"], 4);
    assert_eq!(meta["layers"], "all");
    assert_eq!(meta["num_samples"], 10);
    assert_eq!(meta["batch_size"], 2);
    assert_eq!(meta["filename"], base.as_str());
    assert_eq!(meta["timestamp"].as_str().unwrap().len(), 15);

    let st = SteeringVector::load(&out.join(&want[2])).unwrap();
    let pkl = SteeringVector::load(&out.join(&want[1])).unwrap();
    assert_eq!(st.layer_activations, pkl.layer_activations);
    assert_eq!(st.layer_type, "decoder_block");
    assert_eq!(
        st.layer_activations.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(st.layer_activations.values().all(|v| v.len() == 64));
    assert_eq!(st.provenance.contrast_type.as_deref(), Some("tom"));

    // the raw safetensors: F32 [64] tensors named layer_k
    let bytes = std::fs::read(out.join(&want[2])).unwrap();
    let raw = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = raw.names();
    names.sort();
    assert_eq!(names, ["layer_0", "layer_1", "layer_2", "layer_3"]);
    for (_, view) in raw.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        assert_eq!(view.shape(), [64]);
    }
}

#[test]
fn cli_vector_matches_steering_vectors_through_data_dir() {
    // The reference pairs as an irony file (positive = literal), trained by the binary.
    let g = Golden::load();
    let tmp = tempfile::tempdir().unwrap();
    let entries: Vec<serde_json::Value> = g
        .pairs()
        .iter()
        .map(|(p, n)| serde_json::json!({"literal": p, "ironic": n}))
        .collect();
    let data = tmp.path().join("data");
    write(
        &data,
        "irony.json",
        &serde_json::to_string(&entries).unwrap(),
    );
    let out = tmp.path().join("out");
    let model = tiny_model_dir();
    let o = run(&[
        "--contrast-type=irony",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
        "--layers=-1,-3,0",
        "--batch-size",
        "4",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&data.join("irony.json").display().to_string()));
    let base = format!("irony_tiny-gemma2_layers--1--3-0_{}", today());
    let v = SteeringVector::load(&out.join(format!("{base}.safetensors"))).unwrap();
    assert_eq!(
        v.layer_activations.keys().copied().collect::<Vec<_>>(),
        [0, 1, 3]
    );
    for (k, got) in &v.layer_activations {
        let want = g.vec1(&format!("vector_negative.layer{k}"));
        assert!(cosine(got, &want) >= 0.99999);
        assert!(rel_l2(got, &want) <= 1e-4, "layer {k}");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{base}.json"))).unwrap())
            .unwrap();
    assert_eq!(meta["layers"], serde_json::json!([-1, -3, 0]));
}

#[test]
fn several_contrast_types_share_one_model_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = tiny_model_dir();
    let o = run(&[
        "--contrast-type",
        "tom,harmfulness",
        "--model",
        model.to_str().unwrap(),
        "--num-samples",
        "3",
        "--layers",
        "1",
        "--output-dir",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("[2/4]").count(), 1);
    let names = files_in(&out);
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.contains(&format!("harmfulness_tiny-gemma2_layers-1_{}.pkl", today())));
}

#[test]
fn num_samples_beyond_the_file_is_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write(
        &data,
        "self_other.json",
        r#"[{"self_subject": "I like tea.", "other_subject": "Ann likes tea."}]"#,
    );
    let model = tiny_model_dir();
    let out = tmp.path().join("out");
    let o = run(&[
        "--contrast-type",
        "self_other",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--num-samples",
        "50",
        "--output-dir",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("note:"));
    let json = std::fs::read_to_string(out.join(format!(
        "self_other_tiny-gemma2_all-layers_{}.json",
        today()
    )))
    .unwrap();
    assert!(json.contains("\"num_samples\": 1"));
}

#[test]
fn name_clash_stops_before_training_and_keeps_the_old_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = tiny_model_dir();
    let args = [
        "--contrast-type",
        "irony",
        "--model",
        model.to_str().unwrap(),
        "--num-samples",
        "2",
        "--output-dir",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    assert!(run(&args).status.success());
    let pkl = out.join(format!("irony_tiny-gemma2_all-layers_{}.pkl", today()));
    let before = std::fs::read(&pkl).unwrap();
    let o = run(&args);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("already exists") && err.contains("hint: pass `--overwrite`"),
        "{err}"
    );
    assert!(
        !err.contains("[2/4]"),
        "model was loaded before the clash was reported"
    );
    assert_eq!(std::fs::read(&pkl).unwrap(), before);
    assert_eq!(files_in(&out).len(), 3);
    let mut again = args.to_vec();
    again.push("--overwrite");
    assert!(run(&again).status.success());
}

#[test]
fn hf_repo_id_resolves_through_an_offline_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let repo = cache.join("models--acme--tiny-gemma2");
    let snap = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(&snap).unwrap();
    write(
        &repo.join("refs"),
        "main",
        "0123456789abcdef0123456789abcdef01234567",
    );
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(f), snap.join(f)).unwrap();
    }
    let out = tmp.path().join("out");
    let o = bin()
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "--contrast-type",
            "tom",
            "--model",
            "acme/tiny-gemma2",
            "--num-samples",
            "2",
            "--output-dir",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out
        .join(format!("tom_tiny-gemma2_all-layers_{}.pkl", today()))
        .exists());

    // not in the cache, offline: a clear error naming the repo, with a hint
    let o = bin()
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "--contrast-type",
            "tom",
            "--model",
            "acme/absent",
            "--output-dir",
        ])
        .arg(tmp.path().join("out2"))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`acme/absent`") && err.contains("hint:"),
        "{err}"
    );
    assert!(!tmp.path().join("out2").exists());
}

#[test]
fn help_shows_the_python_examples() {
    let o = run(&["--help"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert!(text.contains("train-vector --contrast-type tom --layers=-1,-2,-3"));
    assert!(text.contains("--num-samples 100 --output-dir ./my_vectors/"));
}

// ---- bad inputs (contract §6): one error line, exit 1, nothing written ----

#[test]
fn unknown_contrast_type() {
    let err = assert_fails(&["--contrast-type", "humor"], "`--contrast-type`");
    assert!(err.contains("hint:"));
}

#[test]
fn malformed_layers() {
    for bad in ["", "1,,2", "a", "1.5", "--1"] {
        assert_fails(&[&format!("--layers={bad}")], "`--layers`");
    }
}

#[test]
fn out_of_range_and_duplicate_layers() {
    assert_fails(&["--layers", "4"], "out of range for a model with 4 layers");
    assert_fails(&["--layers=-5"], "out of range");
    assert_fails(&["--layers=3,-1"], "twice");
}

#[test]
fn zero_batch_size_and_samples() {
    assert_fails(&["--batch-size", "0"], "`--batch-size`");
    assert_fails(&["--num-samples", "0"], "`--num-samples`");
}

#[test]
fn cuda_in_a_cpu_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    assert_fails(&["--device", "cuda"], "no CUDA support");
}

#[test]
fn missing_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    assert_fails(&["--data-dir", d], "theory_of_mind.json");
}

#[test]
fn malformed_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("{not json", "not valid JSON"),
        (r#"{"a": 1}"#, "expected a JSON list"),
        ("[]", "empty"),
        (
            r#"[{"literal": "a", "ironic": "b"}, 7]"#,
            "entry 1 is a number",
        ),
        (r#"[{"literal": "a"}]"#, "entry 0 has no `ironic` field"),
        (
            r#"[{"literal": "", "ironic": "b"}]"#,
            "entry 0 has an empty `literal` field",
        ),
        (
            r#"[{"literal": 3, "ironic": "b"}]"#,
            "entry 0 field `literal` is a number",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("d{i}"));
        let file = write(&dir, "irony.json", text);
        let err = assert_fails(
            &[
                "--contrast-type",
                "irony",
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            needle,
        );
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
    let dir = tmp.path().join("utf8");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("irony.json"), b"[{\"literal\": \"\xff\"}]").unwrap();
    assert_fails(
        &[
            "--contrast-type",
            "irony",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "not valid UTF-8",
    );
}

#[test]
fn missing_model_and_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("nope");
    assert_fails(&["--model", absent.to_str().unwrap()], "does not exist");
    for (missing, needle) in [
        ("config.json", "no `config.json`"),
        ("tokenizer.json", "no `tokenizer.json`"),
        ("model.safetensors", "no `model.safetensors`"),
    ] {
        let dir = tmp.path().join(missing.replace('.', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            if f != missing {
                std::fs::copy(tiny_model_dir().join(f), dir.join(f)).unwrap();
            }
        }
        assert_fails(&["--model", dir.to_str().unwrap()], needle);
    }
}

#[test]
fn unsupported_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(tiny_model_dir().join(f), dir.join(f)).unwrap();
    }
    write(
        &dir,
        "config.json",
        r#"{"architectures": ["BertForMaskedLM"]}"#,
    );
    let err = assert_fails(
        &["--model", dir.to_str().unwrap()],
        "unsupported model architecture `BertForMaskedLM`",
    );
    assert!(
        err.contains("hint: supported architectures: Gemma2ForCausalLM"),
        "{err}"
    );
}

#[test]
fn missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-gemma2-sharded");
    let dir = tmp.path().join("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "model-00002-of-00003.safetensors" {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    assert_fails(
        &["--model", dir.to_str().unwrap()],
        "shard `model-00002-of-00003.safetensors`",
    );
}

#[test]
fn unwritable_output_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "plain-file", "x");
    let o = run(&[
        "--contrast-type",
        "tom",
        "--model",
        tiny_model_dir().to_str().unwrap(),
        "--output-dir",
        file.join("sub").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("`--output-dir`")),
        "{err}"
    );
    assert!(!err.contains("[1/4]"), "{err}");
}

fn copy_model(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(f), dst.join(f)).unwrap();
    }
}

/// A copy of the fixture model in `tmp` with one string of its config.json replaced.
fn model_with_config_edit(tmp: &Path, from: &str, to: &str) -> PathBuf {
    let dir = tmp.join("m");
    copy_model(&dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(cfg.contains(from), "fixture config has no `{from}`");
    std::fs::write(dir.join("config.json"), cfg.replace(from, to)).unwrap();
    dir
}

#[test]
fn truncated_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_model(&dir);
    let w = dir.join("model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&w).unwrap();
    f.set_len(len - 100).unwrap();
    let err = assert_fails(
        &["--model", dir.to_str().unwrap()],
        "not a valid safetensors file",
    );
    assert!(err.contains("truncated"), "{err}");
    f.set_len(3).unwrap();
    assert_fails(
        &["--model", dir.to_str().unwrap()],
        "not a valid safetensors file",
    );
}

#[test]
fn tensor_with_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_with_config_edit(
        tmp.path(),
        "\"intermediate_size\": 128",
        "\"intermediate_size\": 100",
    );
    assert_fails(
        &["--model", dir.to_str().unwrap()],
        "tensor `model.layers.0.mlp.gate_proj.weight`",
    );
}

#[test]
fn config_vocab_disagrees_with_the_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    // the embedding then no longer matches either; the check names what is wrong
    let dir = model_with_config_edit(tmp.path(), "\"vocab_size\": 512", "\"vocab_size\": 300");
    assert_fails(&["--model", dir.to_str().unwrap()], "embed_tokens.weight");
}

#[test]
fn tensor_with_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_model(&dir);
    // Relabel one tensor's dtype in the header; the byte size (4 per element) is unchanged.
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let key = "\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\"";
    let at = header.find(key).expect("header layout");
    let patched = header.replacen(key, &key.replace("F32", "I32"), 1);
    assert!(at > 0 && patched.len() == header.len());
    bytes[8..8 + n].copy_from_slice(patched.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert_fails(
        &["--model", dir.to_str().unwrap()],
        "tensor `model.layers.0.mlp.up_proj.weight`",
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_with_config_edit(
        tmp.path(),
        "\"max_position_embeddings\": 1024",
        "\"max_position_embeddings\": 16",
    );
    let err = assert_fails(
        &["--model", dir.to_str().unwrap()],
        "more than the model's context of 16",
    );
    assert!(err.contains("pair 0"), "{err}");
}

#[test]
fn a_50_mb_data_file_is_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // A valid JSON list padded with whitespace to 50 MB.
    let mut text = vec![b' '; 50_000_000];
    text[0] = b'[';
    *text.last_mut().unwrap() = b']';
    std::fs::write(dir.join("theory_of_mind.json"), &text).unwrap();
    let err = assert_fails(
        &["--data-dir", dir.to_str().unwrap()],
        "theory_of_mind.json` is 47.68 MiB, over the 32.00 MiB limit",
    );
    assert!(err.contains("hint: check that `--data-dir`"), "{err}");
}

#[test]
fn tokenizer_larger_than_the_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_model(&dir);
    let path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    for i in 0..200 {
        vocab.insert(format!("extra{i}"), serde_json::json!(1000 + i));
    }
    let other = tmp.path().join("other-tokenizer.json");
    std::fs::write(&other, tok.to_string()).unwrap();
    // Beside the weights, and given with `--tokenizer`.
    std::fs::copy(&other, &path).unwrap();
    assert_fails(
        &["--model", dir.to_str().unwrap()],
        "has 600 tokens but the model's embedding has only 512",
    );
    copy_model(&dir);
    let err = assert_fails(&["--tokenizer", other.to_str().unwrap()], "tokenizer `");
    assert!(err.contains("other-tokenizer.json"), "{err}");
}

/// Overflow in the forward (as bf16 Gemma-2 can): the run stops naming the layer and the pair,
/// and writes nothing.
#[test]
fn non_finite_activations_name_the_layer_and_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_model(&dir);
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offsets = &header["model.layers.1.post_feedforward_layernorm.weight"]["data_offsets"];
    let (start, end) = (
        8 + n + offsets[0].as_u64().unwrap() as usize,
        8 + n + offsets[1].as_u64().unwrap() as usize,
    );
    for chunk in bytes[start..end].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::MAX.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let err = assert_fails(
        &["--model", dir.to_str().unwrap(), "--num-samples", "3"],
        "non-finite activation at layer 1 for pair ",
    );
    assert!(
        err.contains("hint: reduced precision can overflow"),
        "{err}"
    );
}

#[test]
fn bad_memory_budgets() {
    for bad in ["abc", "0", "10QB", "1.2.3GB"] {
        assert_fails(&[&format!("--max-memory={bad}")], "`--max-memory`");
    }
    assert_fails(&["--max-memory=-1GB"], "`--max-memory`");
    // Less than two of the fixture's blocks (145 KiB each in f32) and the forward.
    let err = assert_fails(&["--max-memory", "64KiB"], "two blocks of");
    assert!(err.contains("hint: allow at least"), "{err}");
}

/// Streaming the blocks (by default on the CPU, forced, or because the budget is small) writes
/// the vector a run holding every block writes.
#[test]
fn streamed_training_writes_the_same_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir();
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--contrast-type",
            "irony",
            "--model",
            model.to_str().unwrap(),
            "--num-samples",
            "12",
            "--max-batch-tokens",
            "64",
            "--no-progress",
            "--output-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let path = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap()
            .to_string();
        (SteeringVector::load(Path::new(&path)).unwrap(), stderr(&o))
    };
    let (plain, log) = train(&tmp.path().join("a"), &["--stream-weights=false"]);
    assert!(!log.contains("read one at a time"), "{log}");
    // The same batches either way, so the same vector bit for bit. On the CPU, streaming is
    // the default.
    let runs: [&[&str]; 4] = [
        &[],
        &["--stream-weights"],
        &["--stream-weights=true"],
        &["--max-memory", "760KiB", "--stream-weights=false"],
    ];
    for (i, extra) in runs.into_iter().enumerate() {
        let (streamed, log) = train(&tmp.path().join(i.to_string()), extra);
        assert!(log.contains("read one at a time"), "{extra:?}: {log}");
        assert_eq!(
            streamed.layer_activations, plain.layer_activations,
            "{extra:?}"
        );
    }
}

#[test]
fn bad_training_knobs() {
    assert_fails(&["--aggregator", "median"], "unknown aggregator `median`");
    assert_fails(&["--read", "sideways"], "unknown read mode `sideways`");
    assert_fails(&["--read", "-2"], "`-2` is a token index");
    assert_fails(
        &["--layer-type", "attention"],
        "unknown layer type `attention`",
    );
    let err = assert_fails(
        &["--read-token-index", "5000"],
        "`--read-token-index 5000` is outside pair 0 (positive), which has",
    );
    assert!(err.contains("theory_of_mind.json"), "{err}");
    assert_fails(&["--read-token-index", "-400"], "outside pair 0 (positive)");
}

#[test]
fn pair_files_of_unknown_shape_name_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            r#"[{"question": "a", "answer": "b"}]"#,
            "entry 0 is not a contrast pair",
        ),
        (
            r#"[{"positive": "a", "negative": "b"}, {"positive": "c", "negativ": "d"}]"#,
            "entry 1 has no `negative` field",
        ),
        (
            r#"[{"positive": "a", "negative": "b", "prompt": 4}]"#,
            "entry 0 field `prompt` is a number",
        ),
    ] {
        let file = write(tmp.path(), "custom.json", text);
        let err = assert_fails(&["--pairs", file.to_str().unwrap()], needle);
        assert!(err.contains("custom.json"), "{err}");
    }
}
