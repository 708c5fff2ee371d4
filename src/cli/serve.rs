//! `train-vector serve`: the steering playground and the OpenAI-compatible API.

use std::path::PathBuf;

use clap::Args;

use super::args::{at_least_one, ModelArgs};
use super::print_data;
use crate::error::Result;
use crate::model::{load_model, LoadOptions};
use crate::serve::{serve, Limits, ServeOptions};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Directory of vector files to offer (.safetensors, .pkl, .gguf), read again when it
    /// changes
    #[arg(long, value_name = "DIR", default_value = "./trained_vectors")]
    pub vectors: PathBuf,

    /// Address to listen on; anything but a loopback address is reachable from other machines
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one (the address is printed on stdout)
    #[arg(long, default_value_t = 7860)]
    pub port: u16,

    /// Require `Authorization: Bearer KEY` on the API
    #[arg(
        long,
        value_name = "KEY",
        env = "TRAIN_VECTOR_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Requests decoded together at most; more wait their turn
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = at_least_one)]
    pub max_batch: usize,

    /// The most tokens one request may generate
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = at_least_one)]
    pub max_tokens: usize,
}

fn loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") || host.starts_with("127.")
}

pub fn run(a: &ServeArgs) -> Result<()> {
    if !loopback(&a.host) {
        log!(
            "warning: listening on `{}` makes the model reachable from other machines{}",
            a.host,
            if a.api_key.is_some() {
                ""
            } else {
                "; consider `--api-key`"
            }
        );
    }
    let spec = a.model.spec()?;
    let device = a.model.device.open()?;
    let dtype = a.model.dtype.resolve(&device);
    let loaded = load_model(spec, &LoadOptions::for_logits(device, dtype))?;
    let opts = ServeOptions {
        host: a.host.clone(),
        port: a.port,
        vectors: a.vectors.clone(),
        api_key: a.api_key.clone().filter(|k| !k.is_empty()),
        max_rows: a.max_batch,
        limits: Limits {
            max_tokens: a.max_tokens,
            ..Limits::default()
        },
    };
    let model = a.model.model.clone();
    let vectors = a.vectors.display().to_string();
    serve(loaded, &model, opts, |addr| {
        log!(
            "serving `{model}` with the vectors in `{vectors}`; open http://{addr}/ (Ctrl-C stops)"
        );
        print_data(&format!("http://{addr}"));
    })?;
    log!("stopped");
    Ok(())
}
