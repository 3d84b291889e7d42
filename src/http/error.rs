//! The one error type of the HTTP API: every refusal is
//! `{"error":{"code":"…","message":"…"}}` (plus `field` for validation
//! errors) with the status SPEC §7 gives it. Internal details are logged,
//! never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::conversations::ServiceError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request could not be read (bad JSON, bad query parameter).
    BadRequest(String),
    /// 401: no token or an unknown one.
    Unauthorized,
    /// 403: the caller's role may not do this.
    Forbidden(&'static str),
    /// 404.
    NotFound(&'static str),
    /// 409: the state forbids it.
    Conflict(String),
    /// 413: the body is over the limit.
    TooLarge(String),
    /// 429: too many requests in a time window.
    TooManyRequests(String),
    /// 429 with `Retry-After` (seconds): the address sent too many bad
    /// tokens and is refused for a while, whatever token it sends now.
    LoginThrottled { retry_after: u64 },
    /// 422: valid JSON that a rule refuses; names the field.
    Invalid { field: String, message: String },
    /// 422 `forbidden_destination`: a URL or address the gateway will not
    /// connect to on a user's behalf (SPEC §10); names the field.
    ForbiddenDestination { field: String, message: String },
    /// 500: logged with details, answered without.
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry: Option<u64> = None;
        let (status, code, message, field) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m, None),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".to_string(),
                None,
            ),
            ApiError::Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", why.to_string(), None),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
                None,
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, None),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m, None),
            ApiError::TooManyRequests(m) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", m, None)
            }
            ApiError::LoginThrottled { retry_after } => {
                retry = Some(retry_after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many invalid tokens from your address; try again in {retry_after} s"
                    ),
                    None,
                )
            }
            ApiError::Invalid { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("{field}: {message}"),
                Some(field),
            ),
            ApiError::ForbiddenDestination { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "forbidden_destination",
                format!("{field}: {message}"),
                Some(field),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error answering an API request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_string(),
                    None,
                )
            }
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(f) = field {
            body["error"]["field"] = json!(f);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED
            && let Ok(v) = "Bearer".parse()
        {
            response.headers_mut().insert("www-authenticate", v);
        }
        if let Some(secs) = retry
            && let Ok(v) = secs.to_string().parse()
        {
            response.headers_mut().insert("retry-after", v);
        }
        // The unread rest of an oversized body makes the connection unusable:
        // say so, so clients do not send the next request on it.
        if status == StatusCode::PAYLOAD_TOO_LARGE
            && let Ok(v) = "close".parse()
        {
            response.headers_mut().insert("connection", v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => ApiError::NotFound(what),
            ServiceError::Invalid { field, message } => ApiError::Invalid { field, message },
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::RateLimited(m) => ApiError::TooManyRequests(m),
            ServiceError::Store(m) => ApiError::Internal(m),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
