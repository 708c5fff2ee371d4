//! `train-vector serve`: one model, every vector of a directory, a page to compare steered
//! and unsteered text side by side, and an OpenAI-compatible API ([`api`]) that steers per
//! request. One worker thread decodes every running request together ([`engine`]).

pub mod api;
pub mod engine;
mod errors;
pub mod text;
pub mod vectors;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::Router;
use tokenizers::Tokenizer;

use crate::chat::{stop_ids, ChatFormat};
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use engine::{EngineOptions, Job};
use vectors::Registry;

/// The page, with its styles and script; nothing is fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

/// Bounds on what one request may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bodies, in bytes.
    pub max_body: usize,
    pub max_prompt_tokens: usize,
    pub max_tokens: usize,
    pub max_steering: usize,
    pub max_multiplier: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_prompt_tokens: 8192,
            max_tokens: 2048,
            max_steering: 16,
            max_multiplier: 1000.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub vectors: PathBuf,
    pub api_key: Option<String>,
    /// Requests decoded together at most.
    pub max_rows: usize,
    pub limits: Limits,
}

/// What every handler reads.
pub struct Shared {
    pub model_name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: ChatFormat,
    pub chat_default: bool,
    pub stop_ids: Arc<Vec<u32>>,
    pub context: usize,
    pub num_layers: usize,
    pub vectors: Mutex<Registry>,
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub api_key: Option<String>,
    pub limits: Limits,
    pub started: u64,
    ids: AtomicU64,
}

impl Shared {
    /// A fresh id for a response.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether a model has chat turns: its tokenizer knows a turn marker.
fn is_chat_model(tok: &Tokenizer) -> bool {
    [
        "<start_of_turn>",
        "<|im_start|>",
        "<|start_header_id|>",
        "[INST]",
    ]
    .iter()
    .any(|t| tok.token_to_id(t).is_some())
}

/// Serves until SIGINT or SIGTERM. `ready` is called with the bound address once requests can
/// be taken.
pub fn serve(
    loaded: LoadedModel,
    model_name: &str,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let LoadedModel {
        model, tokenizer, ..
    } = loaded;
    let model: Arc<dyn crate::model::DecoderModel> = Arc::from(model);
    let cfg = model.config().clone();
    let (jobs, queue) = std::sync::mpsc::channel();
    let engine_model = model.clone();
    let engine_opts = EngineOptions {
        max_rows: opts.max_rows,
    };
    std::thread::Builder::new()
        .name("generation".into())
        .spawn(move || engine::run(engine_model, queue, engine_opts))
        .map_err(|e| Error::new(format!("cannot start the generation thread: {e}")))?;
    let shared = Arc::new(Shared {
        model_name: model_name.to_string(),
        chat: ChatFormat::detect(&tokenizer),
        chat_default: is_chat_model(&tokenizer),
        stop_ids: Arc::new(stop_ids(&tokenizer, &cfg.eos_token_id)),
        context: cfg.max_position_embeddings.unwrap_or(usize::MAX),
        num_layers: cfg.num_hidden_layers,
        vectors: Mutex::new(Registry::new(&opts.vectors, cfg, model_name)),
        tokenizer: Arc::new(tokenizer),
        jobs,
        api_key: opts.api_key.clone(),
        limits: opts.limits.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ids: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/v1/completions", post(api::completions))
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/models", get(api::models))
        .route("/api/vectors", get(api::vectors))
        .route("/api/info", get(api::info))
        .fallback(not_found)
        .with_state(shared);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the server: {e}")))?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
            Error::new(format!("cannot listen on `{addr}`: {e}"))
                .with_hint("choose another `--port`, or `--port 0` for any free one")
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::new(format!("cannot read the bound address: {e}")))?;
        ready(bound);
        // On a signal, stop taking connections and give running requests a moment to finish.
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown().await;
            notify.notify_one();
        });
        tokio::select! {
            r = server => r.map_err(|e| Error::new(format!("the server stopped: {e}"))),
            _ = async {
                stopping.notified().await;
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            } => Ok(()),
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn not_found() -> impl IntoResponse {
    api::ApiError::bad("", "no such endpoint").status(axum::http::StatusCode::NOT_FOUND)
}
