//! API errors: JSON `{"code", "message"}` with a stable code from one table.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;
use scheduler::protocol::ApiError;

/// Every error the API answers with. The `code` strings are part of the API: never rename one.
#[derive(Debug)]
pub enum Error {
    Unauthorized(&'static str),
    Forbidden(&'static str),
    NotFound(&'static str),
    BadRequest(String),
    Conflict(String),
    PayloadTooLarge(String),
    Internal(String),
}

impl Error {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", (*m).to_string()),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", (*m).to_string()),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", format!("no such {m}: check the id or name in the URL")),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Error::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Error::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m.clone()),
            Error::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%message, "internal error");
        }
        (status, Json(ApiError { code: code.into(), message })).into_response()
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, .. } => Error::NotFound(what),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

pub type ApiResult<T> = Result<T, Error>;
