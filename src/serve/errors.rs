//! The API's errors as OpenAI sends them (a JSON body with a 4xx status, naming the field), the
//! API key check, and reading and parsing request bodies.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::Shared;

/// An error as OpenAI sends them.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    kind: &'static str,
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: (!param.is_empty()).then(|| param.to_string()),
            kind: "invalid_request_error",
        }
    }

    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn kind(mut self, kind: &'static str) -> ApiError {
        self.kind = kind;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": null,
        }});
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// `Authorization: Bearer KEY` when the server has a key; compared in constant time.
pub fn authorize(shared: &Shared, headers: &HeaderMap) -> ApiResult<()> {
    let Some(key) = &shared.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::bad("", "missing or wrong API key")
            .status(StatusCode::UNAUTHORIZED)
            .kind("authentication_error"))
    }
}

/// How much of an oversized body is read and dropped before the 413 goes out, as a multiple of
/// the limit, and for how long at most.
const DRAIN_FACTOR: usize = 16;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads a request body of at most `max` bytes. A longer one is answered 413, but only after
/// the rest of it is read and dropped (up to `DRAIN_FACTOR` times the limit, within
/// `DRAIN_TIME`): a client that sends its whole body before reading the answer, as most do,
/// then gets the 413 instead of a connection reset while it is still writing. A body whose
/// declared length is past that is refused without reading.
pub async fn read_body(body: Body, max: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::bad(
            "",
            format!("cannot read the request body: it is larger than this server's limit of {max} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let drain_cap = max.saturating_mul(DRAIN_FACTOR);
    let declared = HttpBody::size_hint(&body).lower();
    if declared > drain_cap as u64 {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut data = Vec::with_capacity(declared.min(max as u64) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad("", format!("cannot read the request body: {e}")))?;
        if data.len() + chunk.len() > max {
            let mut seen = data.len() + chunk.len();
            let drain = async {
                while let Some(Ok(chunk)) = stream.next().await {
                    seen += chunk.len();
                    if seen > drain_cap {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(too_large());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(data))
}

/// Parses a JSON body, naming the field that is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let param = e.path().to_string();
        let inner = e.into_inner();
        ApiError::bad(&param, format!("`{param}`: {inner}"))
    })
}
