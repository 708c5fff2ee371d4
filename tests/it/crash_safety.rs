//! Nothing lost, nothing half-written: a run killed (SIGKILL) at any moment, interrupted
//! (SIGINT) or out of disk space leaves each vector's three files complete or absent, and no
//! temporary files.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, tiny_model_dir};
use train_vector::vector::SteeringVector;

fn train_args(out: &Path, samples: &str) -> Vec<String> {
    [
        "--contrast-type",
        "tom",
        "--model",
        tiny_model_dir().to_str().unwrap(),
        "--num-samples",
        samples,
        "--output-dir",
        out.to_str().unwrap(),
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Waits until no naming step is still finishing in `dir` (no hidden `.partial-` names for a
/// moment): a killed run's naming step, which no signal stops, may outlive it by milliseconds.
fn settle(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut quiet_since = Instant::now();
    let mut last = names_in(dir);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let now = names_in(dir);
        if now != last || now.iter().any(|n| n.contains(".partial-")) {
            quiet_since = Instant::now();
            last = now;
        } else if quiet_since.elapsed() > Duration::from_millis(100) {
            return;
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Nothing,
    Complete,
}

/// The directory holds nothing, or exactly one complete, consistent set equal to `reference`.
fn assert_all_or_nothing(out: &Path, reference: &SteeringVector, what: &str) -> Outcome {
    settle(out);
    let names = names_in(out);
    if names.is_empty() {
        return Outcome::Nothing;
    }
    let bases: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.rsplit_once('.').map(|(b, _)| b))
        .collect();
    assert_eq!(bases.len(), 1, "{what}: unexpected files {names:?}");
    let base = bases.into_iter().next().unwrap();
    let want: BTreeSet<String> = ["json", "pkl", "safetensors"]
        .iter()
        .map(|e| format!("{base}.{e}"))
        .collect();
    assert_eq!(names, want, "{what}: not a complete set");
    let st = SteeringVector::load(&out.join(format!("{base}.safetensors")))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pkl = SteeringVector::load(&out.join(format!("{base}.pkl")))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{base}.json"))).unwrap())
            .unwrap_or_else(|e| panic!("{what}: json: {e}"));
    assert_eq!(st.layer_activations, reference.layer_activations, "{what}");
    assert_eq!(pkl, st, "{what}");
    // All three come from the same run.
    assert_eq!(
        json["date_trained"],
        st.provenance.date_trained.as_deref().unwrap(),
        "{what}"
    );
    Outcome::Complete
}

/// A complete run's vector, and how long the run took.
fn reference(samples: &str) -> (SteeringVector, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let started = Instant::now();
    let o = bin().args(train_args(&out, samples)).output().unwrap();
    let took = started.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = names_in(&out)
        .into_iter()
        .find(|n| n.ends_with(".safetensors"))
        .unwrap();
    (SteeringVector::load(&out.join(st)).unwrap(), took)
}

/// xorshift64*, seeded from the clock; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CRASH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("CRASH_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D) % n.max(1)
    }
}

#[test]
fn sigkill_at_random_moments_leaves_the_whole_set_or_nothing() {
    let (reference, took) = reference("40");
    let span = took.as_micros() as u64 * 6 / 5;
    let mut rng = Rng::new();
    let mut seen = Vec::new();
    for i in 0..24 {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut child = bin()
            .args(train_args(&out, "40"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_micros(rng.below(span));
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        seen.push(assert_all_or_nothing(
            &out,
            &reference,
            &format!("kill {i} after {delay:?}"),
        ));
        // Nothing else of the run anywhere in the parent either.
        let left: Vec<String> = names_in(tmp.path())
            .into_iter()
            .filter(|n| n != "out")
            .collect();
        assert!(left.is_empty(), "kill {i}: {left:?}");
    }
    eprintln!(
        "{} kills: {} left nothing, {} a complete set",
        seen.len(),
        seen.iter().filter(|o| **o == Outcome::Nothing).count(),
        seen.iter().filter(|o| **o == Outcome::Complete).count()
    );
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The binary under strace, with the environment of [`bin`]: `trace` selects the system calls
/// (and `-P` paths) that `inject` counts and acts on.
fn strace(trace: &[&str], inject: &str, args: &[String]) -> Output {
    let probe = bin();
    let mut c = Command::new("strace");
    c.args(["-o", "/dev/null"]).args(trace).args(["-e", inject]);
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.arg(probe.get_program()).args(args).output().unwrap()
}

/// The calls of each kind only saving makes, and how to select them: the files' contents are
/// written with positional writes (nothing else in a run uses them) and synced once each;
/// unnamed files are opened in `anchor`; the naming step is started and awaited with one
/// pipe, one fork and one wait.
fn saving_calls(anchor: &Path) -> Vec<(&'static str, Vec<String>)> {
    let only = |call: &str| vec!["-e".to_string(), format!("trace={call}")];
    let mut openat = only("openat");
    openat.extend(["-P".to_string(), anchor.display().to_string()]);
    vec![
        ("openat", openat),
        ("pwrite64", only("pwrite64")),
        ("fsync", only("fsync")),
        ("pipe2", only("pipe2")),
        ("clone", only("clone")),
        ("wait4", only("wait4")),
    ]
}

/// Kills the run at every system call of saving in turn: the k-th call of each kind for
/// k = 1, 2, ... until a run makes fewer than k and finishes. Each stop, before or after any of
/// them, leaves the whole set or nothing; with `--overwrite` over an earlier run's files, the
/// earlier set or the new one, never a mix. Which calls are reached depends only on the code,
/// not on the log or the machine's load.
#[test]
fn sigkill_at_every_system_call_of_saving() {
    if !strace_works() {
        eprintln!("skipped: strace is not installed or cannot trace here");
        return;
    }
    let (reference, _) = reference("10");
    let mut outcomes = Vec::new();
    for overwrite in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut args = train_args(&out, "10");
        if overwrite {
            let o = bin().args(&args).output().unwrap();
            assert!(o.status.success());
            args.push("--overwrite".into());
        }
        // Unnamed files are made in the output directory, or above it while it is missing.
        let anchor = if overwrite {
            out.clone()
        } else {
            tmp.path().to_path_buf()
        };
        // Without `--overwrite`, every run starts from an empty directory.
        let reset = || {
            if !overwrite {
                let _ = std::fs::remove_dir_all(&out);
            }
        };
        for (call, trace) in saving_calls(&anchor) {
            let trace: Vec<&str> = trace.iter().map(String::as_str).collect();
            let mut killed = 0;
            for k in 1.. {
                assert!(
                    k <= 32,
                    "overwrite={overwrite}: more than 32 `{call}` calls"
                );
                reset();
                let o = strace(
                    &trace,
                    &format!("inject={call}:signal=KILL:when={k}"),
                    &args,
                );
                let what = format!("overwrite={overwrite} kill at {call} #{k}");
                let got = assert_all_or_nothing(&out, &reference, &what);
                if o.status.success() {
                    assert_eq!(got, Outcome::Complete, "{what}: finished without its files");
                    break;
                }
                if overwrite {
                    assert_eq!(got, Outcome::Complete, "{what}: the earlier set was lost");
                }
                outcomes.push((overwrite, what, got));
                killed += 1;
            }
            assert!(
                killed > 0,
                "overwrite={overwrite}: saving made no `{call}` call"
            );
        }
    }
    let complete = outcomes
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Complete)
        .count();
    eprintln!(
        "{} kills: {} left nothing, {complete} a complete set",
        outcomes.len(),
        outcomes.len() - complete
    );
    // Both outcomes happen: the kill points straddle the moment the files are named.
    let fresh: Vec<Outcome> = outcomes.iter().filter(|o| !o.0).map(|o| o.2).collect();
    assert!(fresh.contains(&Outcome::Nothing));
    assert!(fresh.contains(&Outcome::Complete));
}

fn sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Ctrl-C during training: a message, exit status 130, and no output directory at all.
#[test]
fn sigint_during_training_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut args = train_args(&out, "252");
    args.extend(["--batch-size".to_string(), "1".to_string()]);
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{log}");
        log.push_str(&line);
        if line.contains("Processing") {
            break;
        }
    }
    sigint(child.id());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        !log.contains("Saved"),
        "it finished before the signal:\n{log}"
    );
    let last = log.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert!(last.starts_with("error: interrupted"), "{log}");
    assert!(!out.exists(), "{:?}", names_in(&out));
    assert!(names_in(tmp.path()).is_empty());
}

/// Ctrl-C while the files are being written and named: the naming finishes, then the run stops
/// with status 130; the set is complete and its paths were printed.
#[test]
fn sigint_during_saving_finishes_the_set_then_stops() {
    if !strace_works() {
        eprintln!("skipped: strace is not installed or cannot trace here");
        return;
    }
    let (reference, _) = reference("10");
    let mut interrupted = 0;
    for k in 1.. {
        assert!(k <= 8, "more than 8 `fsync` calls");
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let inject = format!("inject=fsync:signal=INT:when={k}");
        let o = strace(&["-e", "trace=fsync"], &inject, &train_args(&out, "10"));
        let err = String::from_utf8_lossy(&o.stderr);
        let got = assert_all_or_nothing(&out, &reference, &format!("SIGINT at fsync #{k}"));
        if o.status.success() {
            // Fewer than k syncs: the signal was never sent.
            assert_eq!(got, Outcome::Complete, "fsync #{k}: {err}");
            break;
        }
        assert_eq!(o.status.code(), Some(130), "fsync #{k}: {err}");
        assert!(err.contains("error: interrupted"), "{err}");
        if got == Outcome::Complete {
            let printed = String::from_utf8_lossy(&o.stdout).lines().count();
            assert_eq!(
                printed, 3,
                "fsync #{k}: the saved paths were not all printed"
            );
        }
        interrupted += 1;
    }
    assert!(interrupted > 0, "saving made no `fsync` call");
}

/// A full disk: the error names the directory, and the disk holds nothing of the run. Needs a
/// private tmpfs: as root, or through an unprivileged user namespace.
#[test]
fn full_disk_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=128k tmpfs '{m}' || exit 90
         dd if=/dev/zero of='{m}/filler' bs=4k 2>/dev/null
         '{bin}' {args}
         echo \"exit=$?\"
         ls -A '{m}'",
        m = mount.display(),
        bin = env!("CARGO_BIN_EXE_train-vector"),
        args = train_args(&mount.join("out"), "10")
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let mut ran: Option<Output> = None;
    for prefix in [
        &["unshare", "--mount"][..],
        &["unshare", "--user", "--map-root-user", "--mount"][..],
    ] {
        let o = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", &script])
            .output();
        if let Ok(o) = o {
            if o.status.code() != Some(90) && o.status.success() {
                ran = Some(o);
                break;
            }
        }
    }
    let Some(o) = ran else {
        eprintln!("skipped: cannot mount a private tmpfs here (needs root or user namespaces)");
        return;
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"exit=1"), "{stdout}\n{stderr}");
    let after: Vec<&&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("exit="))
        .skip(1)
        .collect();
    assert_eq!(after, [&"filler"], "{stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("No space left on device"), "{stderr}");
    assert!(errors[0].contains(&mount.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
