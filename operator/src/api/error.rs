//! One error type for every handler: a status and a JSON body `{"error": {"message", "field"}}`.
//! Internal failures are logged here once and answered with a generic message, never the cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfarm_core::protocol::{ErrorBody, ErrorReply};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input that is not about one field (bad query string, unreadable body).
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but invalid: the schema or a semantic rule, naming the field.
    #[error("{message}")]
    Invalid {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The client was too slow sending its request.
    #[error("{0}")]
    RequestTimeout(String),
    /// A `Range` that the log cannot satisfy; carries the log's length.
    #[error("range not satisfiable: the log has {0} bytes")]
    RangeNotSatisfiable(u64),
    /// Our fault; the cause is logged, the client gets a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        ApiError::Invalid {
            message: message.into(),
            field: (!field.is_empty()).then_some(field),
        }
    }

    /// Every problem found with a document, the first one's field named.
    pub fn fields(errs: &[bootfarm_core::spec::FieldError]) -> Self {
        let field = errs.first().map(|e| e.field.clone()).unwrap_or_default();
        let message = errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::invalid(field, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Invalid { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "Request failed");
                "internal error (see the operator's log)".to_string()
            }
            other => other.to_string(),
        };
        let reply = ErrorReply {
            error: ErrorBody {
                message,
                code: status.as_u16(),
                field: self.field().map(str::to_string),
            },
        };
        let mut resp = (status, Json(reply)).into_response();
        if let ApiError::RangeNotSatisfiable(len) = &self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn invalid_names_the_field() {
        let resp = ApiError::invalid("spec.arch", "unknown variant").into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v = body(resp).await;
        assert_eq!(v["error"]["field"], "spec.arch");
        assert_eq!(v["error"]["message"], "unknown variant");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let resp = ApiError::internal("sqlite: disk I/O error at /secret/path").into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = body(resp).await;
        assert!(!v.to_string().contains("secret"), "{v}");
    }
}
