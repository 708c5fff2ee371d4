//! The commands that use a trained vector: `generate`, `inspect` and `export`, end to end on
//! the fixture model.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{run, stderr, stdout, tiny_model_dir, Golden};
use candle_core::quantized::gguf_file;
use train_vector::vector::SteeringVector;

/// The reference vector (steering-vectors on the fixture pairs), saved as a train-vector file.
fn reference_vector_file(dir: &Path) -> PathBuf {
    let g = Golden::load();
    let mut v = SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    );
    v.provenance.model = Some(tiny_model_dir().display().to_string());
    v.provenance.model_type = Some("gemma2".into());
    v.provenance.num_layers = Some(4);
    let path = dir.join("v.safetensors");
    std::fs::write(&path, v.to_safetensors().unwrap()).unwrap();
    path
}

fn generate(vector: &Path, extra: &[&str]) -> Output {
    let model = tiny_model_dir();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--vector",
        vector.to_str().unwrap(),
        "--prompt",
        "Mira put the red ball in the basket",
        "--max-new-tokens",
        "6",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn generate_labels_each_multiplier_and_zero_is_the_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let v = reference_vector_file(tmp.path());
    let o = generate(&v, &["--multipliers=-2,0.7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let labels: Vec<&str> = text.lines().filter(|l| l.starts_with("=== ")).collect();
    assert_eq!(
        labels,
        [
            "=== multiplier 0 (baseline) ===",
            "=== multiplier -2 ===",
            "=== multiplier 0.7 ==="
        ]
    );
    // A lone multiplier of 0 prints exactly the baseline block's text.
    let zero = stdout(&generate(&v, &["--multiplier", "0"]));
    let baseline = text.split("=== multiplier -2 ===").next().unwrap();
    let baseline = baseline.trim_start_matches("=== multiplier 0 (baseline) ===\n");
    assert_eq!(zero.trim_end(), baseline.trim_end());
    // Greedy by default: the same command gives the same text.
    assert_eq!(stdout(&generate(&v, &["--multipliers=-2,0.7"])), text);
}

#[test]
fn sampling_is_deterministic_with_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let v = reference_vector_file(tmp.path());
    let args = ["--temperature", "1.0", "--top-p", "0.9", "--seed", "11"];
    let a = generate(&v, &args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&generate(&v, &args)));
}

#[test]
fn a_vector_from_another_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let other = SteeringVector::new([(1, vec![0.5f32; 32])].into_iter().collect());
    let path = tmp.path().join("other.pkl");
    std::fs::write(&path, other.to_pkl().unwrap()).unwrap();
    let o = generate(&path, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("hidden size 32, the model 64"), "{err}");
    assert!(
        err.contains("hint: the vector was trained on another model"),
        "{err}"
    );
}

#[test]
fn inspect_prints_layers_and_norms() {
    let tmp = tempfile::tempdir().unwrap();
    let v = reference_vector_file(tmp.path());
    let o = run(&["inspect", v.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("hidden_size: 64"));
    assert!(text.contains("layers: 4"));
    let g = Golden::load();
    let l3 = g.vec1("vector_all.layer3");
    let norm = l3.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    assert!(text.contains(&format!("{norm:.6}")), "{text}");
}

#[test]
fn export_writes_a_llama_cpp_control_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let v = reference_vector_file(tmp.path());
    let out = tmp.path().join("cv.gguf");
    let o = run(&[
        "export",
        "--vector",
        v.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("layer 0 cannot be expressed"));

    let mut f = std::fs::File::open(&out).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let md = &content.metadata;
    assert_eq!(
        md["general.architecture"].to_string().unwrap(),
        "controlvector"
    );
    assert_eq!(
        md["controlvector.model_hint"].to_string().unwrap(),
        "gemma2"
    );
    assert_eq!(md["controlvector.layer_count"].to_i32().unwrap(), 4);
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    assert_eq!(names, ["direction.1", "direction.2", "direction.3"]);
    let g = Golden::load();
    for k in 1..4 {
        let t = content
            .tensor(&mut f, &format!("direction.{k}"), &candle_core::Device::Cpu)
            .unwrap()
            .dequantize(&candle_core::Device::Cpu)
            .unwrap();
        assert_eq!(t.dims(), [64]);
        assert_eq!(
            t.to_vec1::<f32>().unwrap(),
            g.vec1(&format!("vector_all.layer{k}"))
        );
    }
    // and it reads back as a vector file, in every command
    let back = SteeringVector::load(&out).unwrap();
    assert_eq!(back.layer_activations.len(), 3);
    for k in 1..4 {
        assert_eq!(
            back.layer_activations[&k],
            g.vec1(&format!("vector_all.layer{k}"))
        );
    }
    let shown = run(&["inspect", out.to_str().unwrap()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("layers: 3"), "{}", stdout(&shown));
    // no silent overwrite
    let again = run(&[
        "export",
        "--vector",
        v.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));
}

#[test]
fn bare_invocation_still_trains_and_requires_a_contrast_type() {
    let o = run(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--contrast-type"));
}

/// Every command that reads a vector answers a bad vector file with one error line naming the
/// file, exit status 1, no panic, and (for `export`) nothing written.
#[test]
fn bad_vector_files_are_one_line_errors_in_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let good = SteeringVector::load(&reference_vector_file(tmp.path())).unwrap();
    let st = good.to_safetensors().unwrap();
    let pkl = good.to_pkl().unwrap();
    let (gguf, _) = train_vector::export::control_vector_gguf(&good, "gemma2", 4).unwrap();
    let not_a_control_vector = {
        let at = gguf
            .windows(13)
            .position(|w| w == b"controlvector")
            .unwrap();
        let mut b = gguf.clone();
        b[at..at + 13].copy_from_slice(b"gemma2_model_");
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text.safetensors",
            b"{\"layer_0\": [1, 2]}".to_vec(),
            "not a valid safetensors file",
        ),
        ("vector.txt", st.clone(), "cannot tell the format"),
        ("swapped.pkl", st.clone(), "not a train-vector .pkl file"),
        (
            "cut.safetensors",
            st[..st.len() / 2].to_vec(),
            "not a valid safetensors file",
        ),
        (
            "cut.pkl",
            pkl[..pkl.len() - 5].to_vec(),
            "not a train-vector .pkl file",
        ),
        (
            "cut.gguf",
            gguf[..gguf.len() / 2].to_vec(),
            "not a valid GGUF file",
        ),
        ("empty.pkl", Vec::new(), "not a train-vector .pkl file"),
        ("model.gguf", not_a_control_vector, "not a control vector"),
    ];
    let model = tiny_model_dir();
    let model = model.to_str().unwrap();
    for (name, bytes, needle) in &cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let exported = tmp.path().join("out.gguf");
        let commands: [Vec<&str>; 4] = [
            vec!["inspect", p],
            vec!["export", "--vector", p, "-o", exported.to_str().unwrap()],
            vec![
                "generate", "--model", model, "--vector", p, "--prompt", "Hi",
            ],
            vec![
                "evaluate",
                "--model",
                model,
                "--vector",
                p,
                "--contrast-type",
                "tom",
            ],
        ];
        for args in commands {
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{name} {args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{name} {args:?}: {err}");
            assert!(errors[0].contains(needle), "{name} {args:?}: {err}");
            assert!(errors[0].contains(name), "{name} {args:?}: {err}");
            assert!(!exported.exists(), "{name}: export wrote a file");
        }
    }
}

/// A vector trained on another model is refused by `evaluate` as by `generate`.
#[test]
fn evaluate_refuses_another_models_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let other = SteeringVector::new([(1, vec![0.5f32; 32])].into_iter().collect());
    let path = tmp.path().join("other.safetensors");
    std::fs::write(&path, other.to_safetensors().unwrap()).unwrap();
    let model = tiny_model_dir();
    let o = run(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--vector",
        path.to_str().unwrap(),
        "--contrast-type",
        "tom",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("hidden size 32, the model 64"), "{err}");
}
