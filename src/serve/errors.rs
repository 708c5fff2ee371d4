//! The API's errors as OpenAI sends them (a JSON body with a 4xx status, naming the field), the
//! API key check and request-body parsing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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

/// Parses a JSON body, naming the field that is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let body = body.map_err(|e| {
        ApiError::bad("", format!("cannot read the request body: {e}")).status(e.status())
    })?;
    let value: Value = serde_json::from_slice(&body)
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
