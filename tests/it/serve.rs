//! `train-vector serve` over real HTTP on the fixture model: completions (streamed and not)
//! equal `train-vector generate`, steering entries add up as vector arithmetic says,
//! concurrent requests do not leak into each other, every bad request gets its 4xx and the
//! server keeps serving; the OpenAI Python client and a real browser when they are installed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use train_vector::vector::SteeringVector;

use crate::common::{bin, run, saved, stderr, tiny_model_dir, Golden};

/// A running server, stopped (with SIGTERM) when dropped unless it has already exited.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn reference() -> SteeringVector {
    let g = Golden::load();
    SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    )
}

/// Another direction: the reference vector reversed in its components.
fn other() -> SteeringVector {
    let mut v = reference();
    for d in v.layer_activations.values_mut() {
        d.reverse();
    }
    v
}

fn save(v: &SteeringVector, path: &Path) {
    std::fs::write(path, v.to_safetensors().unwrap()).unwrap();
}

/// Vectors `tom` and `other`, and `small`, which belongs to a model of another width.
fn vectors_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save(&reference(), &dir.path().join("tom.safetensors"));
    save(&other(), &dir.path().join("other.safetensors"));
    let small = SteeringVector::new([(1, vec![0.5f32; 32])].into_iter().collect());
    save(&small, &dir.path().join("small.safetensors"));
    dir
}

fn start(extra: &[&str]) -> Server {
    start_in(vectors_dir(), extra)
}

/// A directory holding only `tom.safetensors`, trained by the CLI on five ToM pairs (a vector
/// whose steered text on the fixture model is not empty), for the client scripts.
fn trained_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train");
    let model = tiny_model_dir();
    let st = saved(
        &[
            "--contrast-type",
            "tom",
            "--num-samples",
            "5",
            "--model",
            model.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
            "--no-progress",
        ],
        ".safetensors",
    );
    std::fs::copy(st, dir.path().join("tom.safetensors")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    dir
}

fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
    let model = tiny_model_dir();
    let mut child = bin()
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
        .arg("--vectors")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("http://127.0.0.1:"), "{line}");
    Server {
        child,
        url: line.trim().to_string(),
        _dir: dir,
    }
}

/// Status and JSON body of a request (4xx and 5xx included).
fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, &body.to_string(), &[])
}

fn post_raw(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = ureq::post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_string(body) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Status and raw response of a POST whose body goes out in 64 KiB pieces with a pause between
/// them, the response read only once the whole body is sent (as a slow uploader does).
fn post_slowly(base: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(64 << 10) {
        tcp.write_all(piece)
            .unwrap_or_else(|e| panic!("{path}: the server stopped reading the body: {e}"));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: not an HTTP response: {response:?}"));
    (status, response)
}

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

/// The text of a streamed completion, and its finish reason.
fn stream(url: &str, body: &Value) -> (String, String) {
    let r = ureq::post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(r.content_type(), "text/event-stream");
    let (mut text, mut finish) = (String::new(), String::new());
    let mut done = false;
    for line in BufReader::new(r.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        let c = &chunk["choices"][0];
        text.push_str(
            c["text"]
                .as_str()
                .or(c["delta"]["content"].as_str())
                .unwrap_or(""),
        );
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert!(done, "no [DONE]");
    (text, finish)
}

fn completion(server: &Server, body: Value) -> String {
    let (status, r) = post(&format!("{}/v1/completions", server.url), &body);
    assert_eq!(status, 200, "{r}");
    r["choices"][0]["text"].as_str().unwrap().to_string()
}

/// `train-vector generate` with the same settings.
fn generate(vector: &Path, prompt: &str, m: f64, extra: &[&str]) -> String {
    let model = tiny_model_dir();
    let mut args = vec![
        "generate".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--vector".into(),
        vector.display().to_string(),
        "--prompt".into(),
        prompt.into(),
        format!("--multiplier={m}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}

const PROMPT: &str = "Mira put the red ball in the basket and went outside to play.";

#[test]
fn completions_equal_generate_streamed_or_not() {
    let s = start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let v = tmp.path().join("v.safetensors");
    save(&reference(), &v);
    for (sampling, cli) in [
        (json!({"temperature": 0}), vec!["--max-new-tokens", "10"]),
        (
            json!({"temperature": 0.9, "top_p": 0.8, "seed": 11}),
            vec![
                "--max-new-tokens",
                "10",
                "--temperature",
                "0.9",
                "--top-p",
                "0.8",
                "--seed",
                "11",
            ],
        ),
    ] {
        for m in [0.7, -1.0] {
            let mut body = json!({"model": "anything", "prompt": PROMPT, "max_tokens": 10,
                "steering": [{"vector": "tom", "multiplier": m}]});
            body.as_object_mut()
                .unwrap()
                .extend(sampling.as_object().unwrap().clone());
            let want = generate(&v, PROMPT, m, &cli);
            assert_eq!(completion(&s, body.clone()), want, "{body}");
            body["stream"] = json!(true);
            let (streamed, finish) = stream(&format!("{}/v1/completions", s.url), &body);
            assert_eq!(streamed, want, "{body}");
            assert!(finish == "length" || finish == "stop");
        }
    }
    // Without steering the model runs unsteered: multiplier 0.
    let plain = completion(
        &s,
        json!({"prompt": PROMPT, "max_tokens": 10, "temperature": 0}),
    );
    assert_eq!(
        plain,
        generate(&v, PROMPT, 0.0, &["--max-new-tokens", "10"])
    );
    let chat = post(
        &format!("{}/v1/chat/completions", s.url),
        &json!({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "temperature": 0,
                "steering": [{"vector": "tom", "multiplier": 0.7}]}),
    );
    assert_eq!(chat.0, 200, "{}", chat.1);
    assert_eq!(chat.1["object"], "chat.completion");
    let want = generate(&v, PROMPT, 0.7, &["--max-new-tokens", "6", "--chat"]);
    assert_eq!(chat.1["choices"][0]["message"]["content"], want.as_str());
    let (streamed, _) = stream(
        &format!("{}/v1/chat/completions", s.url),
        &json!({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "temperature": 0,
                "stream": true, "steering": [{"vector": "tom", "multiplier": 0.7}]}),
    );
    assert_eq!(streamed, want);
}

/// Two entries steer as their sum does: `tom * 0.5 + other * -0.25` as one vector at 1.
#[test]
fn steering_entries_add_up() {
    let s = start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let sum = (&reference() * 0.5)
        .checked_add(&(&other() * -0.25))
        .unwrap();
    let v = tmp.path().join("sum.safetensors");
    save(&sum, &v);
    let got = completion(
        &s,
        json!({"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "steering": [
            {"vector": "tom", "multiplier": 0.5}, {"vector": "other", "multiplier": -0.25}]}),
    );
    assert_eq!(got, generate(&v, PROMPT, 1.0, &["--max-new-tokens", "10"]));
    // A layer subset steers only those layers, as `generate --layers` does.
    let some = completion(
        &s,
        json!({"prompt": PROMPT, "max_tokens": 10, "temperature": 0,
               "steering": [{"vector": "tom", "multiplier": 1.5, "layers": [1, -1]}]}),
    );
    let tom = tmp.path().join("tom.safetensors");
    save(&reference(), &tom);
    assert_eq!(
        some,
        generate(
            &tom,
            PROMPT,
            1.5,
            &["--max-new-tokens", "10", "--layers=1,-1"]
        )
    );
}

/// Requests with different vectors, strengths and seeds, all at once, each get what they get
/// alone: rows of one batch do not see each other's steering or padding.
#[test]
fn concurrent_requests_equal_their_solo_runs() {
    let s = start(&[]);
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            let vector = if i % 2 == 0 { "tom" } else { "other" };
            let mut b = json!({"prompt": &PROMPT[..10 + 5 * i], "max_tokens": 6 + i,
                "steering": [{"vector": vector, "multiplier": 0.25 * i as f64 - 1.0}]});
            if i % 3 == 0 {
                b["temperature"] = json!(0);
            } else {
                b["temperature"] = json!(0.8);
                b["seed"] = json!(i);
            }
            b
        })
        .collect();
    let solo: Vec<String> = bodies.iter().map(|b| completion(&s, b.clone())).collect();
    let url = format!("{}/v1/completions", s.url);
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| {
                let url = url.clone();
                scope.spawn(move || {
                    let (status, r) = post(&url, b);
                    assert_eq!(status, 200, "{r}");
                    r["choices"][0]["text"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, solo);
}

/// Bad requests get OpenAI-style 4xx errors naming the field, and the server keeps serving.
#[test]
fn bad_requests_get_their_4xx_and_the_server_keeps_serving() {
    let s = start(&[]);
    let url = format!("{}/v1/completions", s.url);
    let good = json!({"prompt": PROMPT, "max_tokens": 4, "temperature": 0});
    let want = completion(&s, good.clone());
    let big = "x".repeat(2 << 20);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "not valid JSON"),
        ("[1, 2]".into(), 400, "must be a JSON object"),
        (json!({"max_tokens": 4}).to_string(), 400, "`prompt` is missing"),
        (json!({"prompt": PROMPT, "steering": [{"vector": "nope", "multiplier": 1}]}).to_string(), 404, "no vector named `nope`"),
        (json!({"prompt": PROMPT, "steering": [{"vector": "small", "multiplier": 1}]}).to_string(), 400, "hidden size 32"),
        (json!({"prompt": PROMPT, "steering": [{"vector": "tom", "multiplier": 1e9}]}).to_string(), 400, "`steering[0].multiplier`"),
        (r#"{"prompt": "x", "steering": [{"vector": "tom", "multiplier": NaN}]}"#.into(), 400, "not valid JSON"),
        (json!({"prompt": PROMPT, "steering": [{"vector": "tom", "multiplier": "big"}]}).to_string(), 400, "`steering[0].multiplier`"),
        (json!({"prompt": PROMPT, "steering": [{"vector": "tom", "multiplier": 1, "layers": [9]}]}).to_string(), 400, "`steering[0].layers`"),
        (json!({"prompt": PROMPT, "max_tokens": -3}).to_string(), 400, "`max_tokens` must be at least 1"),
        (json!({"prompt": PROMPT, "max_tokens": 100000000}).to_string(), 400, "more than this server's limit"),
        (json!({"prompt": PROMPT, "temperature": 5}).to_string(), 400, "`temperature`"),
        (json!({"prompt": PROMPT, "n": 3}).to_string(), 400, "`n: 1`"),
        (json!({"prompt": PROMPT, "steering": vec![json!({"vector": "tom", "multiplier": 0.1}); 40]}).to_string(), 400, "at most 16 steering entries"),
        (json!({"prompt": big}).to_string(), 413, "cannot read the request body"),
    ];
    for (body, status, needle) in &cases {
        let (got, r) = post_raw(&url, body, &[]);
        assert_eq!(got, *status, "{needle}: {r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {r}");
        assert_eq!(r["error"]["type"], "invalid_request_error", "{r}");
        assert_eq!(completion(&s, good.clone()), want, "after {needle}");
    }
    // A client that sends an oversized body slowly and reads only after sending all of it gets
    // its 413 too, not a reset connection.
    let (status, r) = post_slowly(
        &s.url,
        "/v1/completions",
        json!({"prompt": big}).to_string().as_bytes(),
    );
    assert_eq!(status, 413, "{r}");
    assert!(r.contains("larger than this server's limit"), "{r}");
    assert_eq!(
        completion(&s, good.clone()),
        want,
        "after a slow oversized body"
    );
    // A client that leaves mid-stream stops its generation; the next request is served.
    let r = ureq::post(&url)
        .set("Content-Type", "application/json")
        .send_string(&json!({"prompt": PROMPT, "max_tokens": 500, "stream": true}).to_string())
        .unwrap();
    let mut first = [0u8; 64];
    let _ = r.into_reader().read(&mut first).unwrap();
    assert_eq!(completion(&s, good.clone()), want);
    assert_eq!(
        get(&format!("{}/v1/models", s.url))["data"][0]["object"],
        "model"
    );
}

#[test]
fn api_keys_are_required_when_set() {
    let s = start(&["--api-key", "sesame"]);
    let url = format!("{}/v1/completions", s.url);
    let body = json!({"prompt": PROMPT, "max_tokens": 2}).to_string();
    for auth in [None, Some("Bearer open"), Some("sesame")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let (status, r) = post_raw(&url, &body, &headers);
        assert_eq!(status, 401, "{auth:?}: {r}");
        assert_eq!(r["error"]["type"], "authentication_error");
    }
    let (status, _) = post_raw(&url, &body, &[("Authorization", "Bearer sesame")]);
    assert_eq!(status, 200);
    let page = ureq::get(&s.url).call().unwrap();
    assert_eq!(page.status(), 200, "the page itself needs no key");
    assert!(matches!(
        ureq::get(&format!("{}/api/vectors", s.url)).call(),
        Err(ureq::Error::Status(401, _))
    ));
}

/// The vector list: usable vectors with their facts, the others with why; a file added later
/// appears without a restart.
#[test]
fn vectors_are_listed_and_rescanned() {
    let s = start(&[]);
    let list = get(&format!("{}/api/vectors", s.url));
    let names: Vec<&str> = list["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "tom"]);
    let tom = &list["vectors"][1];
    assert_eq!(tom["layers"], json!([0, 1, 2, 3]));
    let norm = reference().norms()[&2];
    assert!((tom["norms"]["2"].as_f64().unwrap() - norm).abs() < 1e-9);
    assert_eq!(list["unusable"][0]["name"], "small");
    assert!(list["unusable"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("hidden size 32"));
    save(
        &(&reference() * 2.0),
        &s._dir.path().join("double.safetensors"),
    );
    let list = get(&format!("{}/api/vectors", s.url));
    assert_eq!(list["vectors"].as_array().unwrap().len(), 3);
    let page = ureq::get(&s.url).call().unwrap().into_string().unwrap();
    assert!(
        page.contains("id=\"generate\"") && !page.contains("http://") && !page.contains("https://")
    );
}

/// SIGTERM stops the server cleanly: exit status 0.
#[test]
fn the_server_stops_on_sigterm() {
    let mut s = start(&[]);
    let _ = completion(&s, json!({"prompt": PROMPT, "max_tokens": 2}));
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// 8 clients, 4 requests each, steered and not: none fails.
#[test]
fn a_bounded_load_has_no_failures() {
    let s = start(&[]);
    let url = format!("{}/v1/completions", s.url);
    let started = Instant::now();
    let latencies: Vec<(f64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let url = url.clone();
                scope.spawn(move || {
                    (0..4)
                        .map(|i| {
                            let t = Instant::now();
                            let steering = if (c + i) % 2 == 0 {
                                json!([])
                            } else {
                                json!([{"vector": "tom", "multiplier": 0.5}])
                            };
                            let (status, r) = post(
                                &url,
                                &json!({"prompt": PROMPT, "max_tokens": 16, "steering": steering}),
                            );
                            assert_eq!(status, 200, "{r}");
                            (
                                t.elapsed().as_secs_f64(),
                                r["usage"]["completion_tokens"].as_u64().unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut l: Vec<f64> = latencies.iter().map(|x| x.0).collect();
    l.sort_by(f64::total_cmp);
    let tokens: u64 = latencies.iter().map(|x| x.1).sum();
    eprintln!(
        "load: {} requests, 0 failed, p50 {:.3}s, p99 {:.3}s, {:.0} tokens/s",
        l.len(),
        l[l.len() / 2],
        l[(l.len() * 99 / 100).min(l.len() - 1)],
        tokens as f64 / started.elapsed().as_secs_f64()
    );
}

fn tool(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

/// The official OpenAI Python client, streamed and not, steering through `extra_body`.
#[test]
fn the_openai_python_client_works() {
    let Some(python) = tool("TRAIN_VECTOR_OPENAI_PYTHON") else {
        eprintln!(
            "skipped: set TRAIN_VECTOR_OPENAI_PYTHON to a python with `openai` (.ci/run does)"
        );
        return;
    };
    let s = start_in(trained_dir(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_client.py");
    let o = Command::new(python)
        .arg(script)
        .arg(&s.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = s._dir.path().join("tom.safetensors");
    let prompt = "Mira put the red ball in the basket";
    assert_eq!(
        r["completion"],
        generate(&v, prompt, 1.0, &["--max-new-tokens", "8"]).as_str()
    );
    assert_eq!(r["completion"], r["completion_stream"]);
    assert_eq!(r["chat"], r["chat_stream"]);
    assert_eq!(r["error_status"], 404);
}

/// A real browser: the page's slider and number box move together, Generate fills the
/// baseline and the steered column, they differ, and the steered one is what the API says.
#[test]
fn the_page_works_in_a_real_browser() {
    let (Some(modules), Some(chromium)) = (tool("TRAIN_VECTOR_NODE_MODULES"), tool("CHROMIUM"))
    else {
        eprintln!(
            "skipped: set TRAIN_VECTOR_NODE_MODULES (playwright-core) and CHROMIUM (.ci/run does)"
        );
        return;
    };
    let s = start_in(trained_dir(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("page.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/browser.mjs");
    let o = Command::new("node")
        .arg(script)
        .arg(&s.url)
        .arg(&shot)
        .env("TRAIN_VECTOR_NODE_MODULES", modules)
        .env("CHROMIUM", chromium)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(r["baseline"], r["steered"]);
    let m: f64 = r["multiplier"].as_str().unwrap().parse().unwrap();
    // The column's header names its vector: "NAME × MULTIPLIER".
    let vector = r["title"].as_str().unwrap().split(" × ").next().unwrap();
    let api = completion(
        &s,
        json!({"prompt": "Mira put the red ball in the basket", "max_tokens": 12, "temperature": 0,
               "seed": 3, "steering": [{"vector": vector, "multiplier": m}]}),
    );
    assert_eq!(r["steered"], api.as_str());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    if let Some(keep) = std::env::var_os("TRAIN_VECTOR_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
