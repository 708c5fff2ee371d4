//! The HTTP API: OpenAI's `/v1/completions`, `/v1/chat/completions` and `/v1/models` (with
//! steering in a `steering` field), `/api/vectors` and `/api/info` for the page. Every bad
//! request gets an OpenAI-style JSON error with a 4xx status, naming the field.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body as RawBody, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::{Event, Finish, Job};
pub use super::errors::{authorize, ApiError};
use super::errors::{parse, read_body, ApiResult};
use super::text::TextStream;
use super::Shared;
use crate::chat::{Message, Role};
use crate::generate::{prompt_ids, Sampling};
use crate::model::LayerType;

/// A string, or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One vector to add, by name from `/api/vectors`.
#[derive(Debug, Deserialize)]
pub struct SteeringEntry {
    pub vector: String,
    pub multiplier: f64,
    pub layers: Option<Vec<i64>>,
}

/// Both endpoints' fields (OpenAI's, plus `steering`); others are accepted and ignored.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    prompt: Option<OneOrMany>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    steering: Option<Vec<SteeringEntry>>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Value,
}

/// A request resolved against the model and the limits.
struct Plan {
    prompt: Vec<u32>,
    job_steering: std::collections::BTreeMap<(usize, LayerType), Vec<f32>>,
    max_tokens: usize,
    sampling: Option<Sampling>,
    stops: Vec<String>,
    stream: bool,
}

fn plan(shared: &Shared, prompt: Vec<u32>, c: Body, default_max: usize) -> ApiResult<Plan> {
    let limits = &shared.limits;
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("n", "only `n: 1` is supported"));
    }
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::bad(
            "prompt",
            format!(
                "the prompt is {} tokens, more than the {} this server accepts",
                prompt.len(),
                limits.max_prompt_tokens
            ),
        ));
    }
    let room = shared.context.saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::bad(
            "prompt",
            "the prompt fills the model's whole context",
        ));
    }
    let (param, asked) = match (c.max_completion_tokens, c.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let max_tokens = match asked {
        None => default_max.min(limits.max_tokens),
        Some(m) if m < 1 => {
            return Err(ApiError::bad(
                param,
                format!("`{param}` must be at least 1"),
            ))
        }
        Some(m) if m as u64 > limits.max_tokens as u64 => {
            return Err(ApiError::bad(
                param,
                format!(
                    "`{param}` is {m}, more than this server's limit of {}",
                    limits.max_tokens
                ),
            ))
        }
        Some(m) => m as usize,
    }
    .min(room);
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad("top_p", "`top_p` must be in (0, 1]"));
    }
    let seed = match c.seed {
        Some(s) => s as u64,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let stops = c.stop.map(OneOrMany::into_vec).unwrap_or_default();
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::bad(
            "stop",
            "`stop` takes up to 4 non-empty strings of at most 256 bytes",
        ));
    }
    let entries = c.steering.unwrap_or_default();
    let job_steering = shared
        .vectors
        .lock()
        .map_err(|_| {
            ApiError::bad("", "the vector list is unavailable")
                .status(StatusCode::INTERNAL_SERVER_ERROR)
        })?
        .steering(&entries, limits)?;
    Ok(Plan {
        prompt,
        job_steering,
        max_tokens,
        sampling: (temperature > 0.0).then_some(Sampling {
            temperature,
            top_p,
            seed,
        }),
        stops,
        stream: c.stream.unwrap_or(false),
    })
}

/// Queues the plan's job; its events arrive on the receiver.
fn submit(shared: &Shared, plan: &Plan) -> ApiResult<UnboundedReceiver<Event>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        prompt: plan.prompt.clone(),
        steering: plan.job_steering.clone(),
        max_tokens: plan.max_tokens,
        sampling: plan.sampling,
        stop: shared.stop_ids.clone(),
        events: tx,
    };
    shared.jobs.send(job).map_err(|_| {
        ApiError::bad("", "the model is not running").status(StatusCode::SERVICE_UNAVAILABLE)
    })?;
    Ok(rx)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// Whether a response is a chat message or plain text, for the body's shape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Chat,
}

pub async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: RawBody,
) -> Response {
    respond(shared, headers, body, Kind::Text).await
}

pub async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: RawBody,
) -> Response {
    respond(shared, headers, body, Kind::Chat).await
}

async fn respond(shared: Arc<Shared>, headers: HeaderMap, body: RawBody, kind: Kind) -> Response {
    let body = match read_body(body, shared.limits.max_body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match start(&shared, &headers, &body, kind) {
        Ok((plan, rx)) if plan.stream => stream_response(shared, plan, rx, kind).into_response(),
        Ok((plan, rx)) => whole_response(&shared, plan, rx, kind)
            .await
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn start(
    shared: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
    kind: Kind,
) -> ApiResult<(Plan, UnboundedReceiver<Event>)> {
    authorize(shared, headers)?;
    let tokenize = |text: &str, param: &str| {
        prompt_ids(&shared.tokenizer, text, false).map_err(|e| ApiError::bad(param, e.to_string()))
    };
    let mut req: Body = parse(body)?;
    let plan = match kind {
        Kind::Text => {
            let mut prompts = req
                .prompt
                .take()
                .ok_or_else(|| ApiError::bad("prompt", "`prompt` is missing"))?
                .into_vec();
            if prompts.len() != 1 {
                return Err(ApiError::bad("prompt", "`prompt` must be one string"));
            }
            let text = prompts.remove(0);
            if text.is_empty() {
                return Err(ApiError::bad("prompt", "`prompt` is empty"));
            }
            plan(shared, tokenize(&text, "prompt")?, req, 16)?
        }
        Kind::Chat => {
            let raw = req
                .messages
                .take()
                .ok_or_else(|| ApiError::bad("messages", "`messages` is missing"))?;
            let text = shared.chat.render(&messages(&raw)?);
            let max = shared.limits.max_tokens;
            plan(shared, tokenize(&text, "messages")?, req, max)?
        }
    };
    let rx = submit(shared, &plan)?;
    Ok((plan, rx))
}

fn messages(raw: &[ChatMessage]) -> ApiResult<Vec<Message>> {
    if raw.is_empty() {
        return Err(ApiError::bad("messages", "`messages` is empty"));
    }
    raw.iter()
        .enumerate()
        .map(|(i, m)| {
            let param = format!("messages[{i}]");
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::bad(
                        &format!("{param}.role"),
                        format!("`{param}.role` `{other}` is not system, user or assistant"),
                    ))
                }
            };
            let content = match &m.content {
                Value::String(s) => s.clone(),
                // OpenAI's content parts: only text parts are supported.
                Value::Array(parts) => parts
                    .iter()
                    .map(|p| {
                        match (
                            p.get("type").and_then(Value::as_str),
                            p.get("text").and_then(Value::as_str),
                        ) {
                            (Some("text"), Some(t)) => Ok(t.to_string()),
                            _ => Err(ApiError::bad(
                                &format!("{param}.content"),
                                format!("`{param}.content` may only hold text parts"),
                            )),
                        }
                    })
                    .collect::<ApiResult<Vec<_>>>()?
                    .concat(),
                _ => {
                    return Err(ApiError::bad(
                        &format!("{param}.content"),
                        format!("`{param}.content` must be a string"),
                    ))
                }
            };
            Ok(Message { role, content })
        })
        .collect()
}

/// Collects every token, then answers once.
async fn whole_response(
    shared: &Shared,
    plan: Plan,
    mut rx: UnboundedReceiver<Event>,
    kind: Kind,
) -> ApiResult<Json<Value>> {
    let mut text = TextStream::new(shared.tokenizer.clone(), plan.stops.clone());
    let mut tokens = 0;
    let finish = loop {
        match rx.recv().await {
            Some(Event::Token(t)) => {
                tokens += 1;
                text.push(t);
                if text.stopped() {
                    break Finish::Stop;
                }
            }
            Some(Event::Done(f)) => break f,
            Some(Event::Error(e)) => {
                return Err(ApiError::bad("", e)
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .kind("server_error"))
            }
            None => {
                return Err(ApiError::bad("", "generation ended early")
                    .status(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    };
    let content = text.finish();
    let usage = json!({
        "prompt_tokens": plan.prompt.len(),
        "completion_tokens": tokens,
        "total_tokens": plan.prompt.len() + tokens,
    });
    let id = shared.next_id();
    Ok(Json(match kind {
        Kind::Text => json!({
            "id": format!("cmpl-{id}"),
            "object": "text_completion",
            "created": now(),
            "model": shared.model_name,
            "choices": [{"text": content, "index": 0, "logprobs": null, "finish_reason": finish_name(finish)}],
            "usage": usage,
        }),
        Kind::Chat => json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": now(),
            "model": shared.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_name(finish)}],
            "usage": usage,
        }),
    }))
}

/// Server-sent events as OpenAI sends them: one chunk per piece of text, a last chunk with the
/// finish reason, then `[DONE]`. Dropping the stream (the client left) drops the receiver,
/// which stops the row.
fn stream_response(
    shared: Arc<Shared>,
    plan: Plan,
    rx: UnboundedReceiver<Event>,
    kind: Kind,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>> {
    let id = match kind {
        Kind::Text => format!("cmpl-{}", shared.next_id()),
        Kind::Chat => format!("chatcmpl-{}", shared.next_id()),
    };
    let created = now();
    let chunk = {
        let model = shared.model_name.clone();
        move |delta: Option<&str>, finish: Option<Finish>, first: bool| -> SseEvent {
            let finish = finish.map(finish_name);
            let body = match kind {
                Kind::Text => json!({
                    "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": delta.unwrap_or(""), "index": 0, "logprobs": null, "finish_reason": finish}],
                }),
                Kind::Chat => {
                    let mut d = serde_json::Map::new();
                    if first {
                        d.insert("role".into(), "assistant".into());
                    }
                    if let Some(t) = delta {
                        d.insert("content".into(), t.into());
                    }
                    json!({
                        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
                    })
                }
            };
            SseEvent::default().data(body.to_string())
        }
    };
    struct St {
        rx: UnboundedReceiver<Event>,
        text: TextStream,
        first: bool,
        done: bool,
        sent_done: bool,
    }
    let state = St {
        rx,
        text: TextStream::new(shared.tokenizer.clone(), plan.stops.clone()),
        first: true,
        done: false,
        sent_done: false,
    };
    let events = stream::unfold(state, move |mut st| {
        let chunk = chunk.clone();
        async move {
            if st.sent_done {
                return None;
            }
            if st.done {
                st.sent_done = true;
                return Some((Ok(SseEvent::default().data("[DONE]")), st));
            }
            loop {
                let finish = match st.rx.recv().await {
                    Some(Event::Token(t)) => {
                        st.text.push(t);
                        if !st.text.stopped() {
                            let delta = st.text.ready();
                            if delta.is_empty() && !st.first {
                                continue;
                            }
                            let ev = chunk(Some(&delta), None, st.first);
                            st.first = false;
                            return Some((Ok(ev), st));
                        }
                        Finish::Stop
                    }
                    Some(Event::Done(f)) => f,
                    Some(Event::Error(_)) | None => Finish::Stop,
                };
                // The text held back (a possible stop string, an unfinished character) and the
                // finish reason, in the last chunk.
                let rest = st.text.finish_delta();
                st.done = true;
                let ev = chunk(
                    (!rest.is_empty()).then_some(rest.as_str()),
                    Some(finish),
                    st.first,
                );
                st.first = false;
                return Some((Ok(ev), st));
            }
        }
    });
    Sse::new(events)
}

pub async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&shared, &headers) {
        return e.into_response();
    }
    Json(json!({"object": "list", "data": [{
        "id": shared.model_name, "object": "model", "created": shared.started, "owned_by": "train-vector",
    }]}))
    .into_response()
}

pub async fn vectors(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&shared, &headers) {
        return e.into_response();
    }
    match shared.vectors.lock() {
        Ok(mut v) => {
            v.rescan();
            Json(v.describe()).into_response()
        }
        Err(_) => ApiError::bad("", "the vector list is unavailable")
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    }
}

pub async fn info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&shared, &headers) {
        return e.into_response();
    }
    Json(json!({
        "model": shared.model_name,
        "chat_default": shared.chat_default,
        "context": shared.context,
        "layers": shared.num_layers,
        "max_tokens": shared.limits.max_tokens,
        "auth": shared.api_key.is_some(),
    }))
    .into_response()
}
