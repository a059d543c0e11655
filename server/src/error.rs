//! API errors: JSON `{"code", "message"}` with a stable code from one table.
//!
//! Internal errors keep their cause (the source chain) for the server's log; the client only
//! learns that something failed and an id to find the log line by.

use std::error::Error as StdError;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;
use scheduler::protocol::ApiError;

/// An error whose details are for the server's log, not for clients.
pub type Internal = Box<dyn StdError + Send + Sync>;

/// Every error the API answers with. The `code` strings are part of the API: never rename one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such {0}: check the id or name in the URL")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("internal error")]
    Internal(#[source] Internal),
}

impl Error {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// `error: cause: cause's cause...`, for the log.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            Error::Internal(cause) => {
                // The id ties the client's answer to the log line; the cause stays here.
                let mut id = [0u8; 6];
                let id = match getrandom::fill(&mut id) {
                    Ok(()) => hex::encode(id),
                    Err(_) => "unknown".into(),
                };
                tracing::error!(error_id = %id, error = %chain(cause.as_ref()), "internal error answering a request");
                format!("internal error (see the server log, id {id})")
            }
            other => other.to_string(),
        };
        (status, Json(ApiError { code: code.into(), message })).into_response()
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, .. } => Error::NotFound(what),
            other => Error::Internal(other.into()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.into())
    }
}

pub type ApiResult<T> = Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_answer_an_id_and_never_their_cause() {
        let cause = std::io::Error::other("disk /secret/path is full");
        let response = Error::from(StoreError::Database(Box::new(sqlx::Error::Io(cause)))).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("internal error (see the server log, id "), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn chains_name_every_cause() {
        let e = StoreError::Database(Box::new(sqlx::Error::Io(std::io::Error::other("disk full"))));
        let text = chain(&e);
        assert!(text.starts_with("database error") && text.ends_with("disk full"), "{text}");
    }
}
