//! Request extractors: the authenticated caller (bearer token, looked up by
//! its hash, compared in constant time) and JSON bodies whose rejections
//! become the API's own errors (400, 413).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::listener::client_ip;
use crate::conversations::Actor;
use crate::http::AppState;
use crate::model::Role;
use crate::store::users::{self, User};

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.0.id,
            name: self.0.name.clone(),
            email: self.0.email.clone(),
        }
    }

    /// The caller as the audit log names them.
    pub fn audit_actor(&self) -> crate::store::audit::Actor {
        crate::store::audit::Actor::user(self.0.id, &self.0.email)
    }

    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Owner/admin only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.role.can_administer() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the owner or admin role"))
        }
    }

    /// Everyone but viewers.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        if self.0.role.can_write() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("viewers can only read"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // No credentials at all is not a guess.
            return Err(ApiError::Unauthorized);
        };
        // An address that sent too many bad tokens is refused before its
        // token is looked at: a blocked guesser learns nothing more.
        let ip = client_ip(&parts.extensions);
        let limiter = &state.limits.api_login;
        if let Some(ip) = ip
            && let Err(wait) = limiter.check(ip)
        {
            return Err(ApiError::LoginThrottled {
                retry_after: wait.secs(),
            });
        }
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .map(str::to_string);
        let user = match token {
            Some(token) => {
                state
                    .store
                    .read(move |c| users::by_token(c, &token))
                    .await?
            }
            None => None,
        };
        // Blocked meanwhile by a concurrent request from the address: this
        // one is refused too, right or wrong (see `limits`).
        match (user, ip) {
            (Some(user), ip) => {
                if let Some(ip) = ip
                    && let Err(wait) = limiter.success(ip)
                {
                    return Err(ApiError::LoginThrottled {
                        retry_after: wait.secs(),
                    });
                }
                Ok(Caller(user))
            }
            (None, ip) => {
                crate::metrics::inc("auth_failures_total", &[("service", "api")]);
                if let Some(ip) = ip
                    && let Err(wait) = limiter.failure(ip)
                {
                    return Err(ApiError::LoginThrottled {
                        retry_after: wait.secs(),
                    });
                }
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The client's IP address (none for requests that did not come through
/// the listener, as in router tests).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

/// `Json<T>` with the API's error shape.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read as a JSON value first: the body must be an object (serde would
        // otherwise take an array in its place).
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => {
                if !v.is_object() {
                    return Err(ApiError::BadRequest(
                        "the body must be a JSON object".into(),
                    ));
                }
                serde_json::from_value(v)
                    .map(Body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
            }
            Err(JsonRejection::BytesRejection(e)) => {
                let text = e.body_text();
                if text.to_ascii_lowercase().contains("length limit") || e.status().as_u16() == 413
                {
                    Err(ApiError::TooLarge(
                        "the request body is over the size limit".into(),
                    ))
                } else {
                    Err(ApiError::BadRequest(text))
                }
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            )),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A path parameter; a malformed one is a 400 in the API's error shape.
pub struct PathParam<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParam(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters; malformed ones are a 400 in the API's error shape.
pub struct QueryParam<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| QueryParam(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A field that may be absent (`None`, with `#[serde(default)]`), `null`
/// (`Some(None)`: clear it) or a value (`Some(Some(v))`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(d).map(Some)
}

/// Deserializes an optional nested object, refusing arrays in its place.
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom("expected an object")),
    }
}

/// Deserializes an optional list of objects, refusing arrays in their place.
pub fn objects<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    match Option::<Vec<serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(list) => list
            .into_iter()
            .map(|v| {
                if v.is_object() {
                    serde_json::from_value(v).map_err(D::Error::custom)
                } else {
                    Err(D::Error::custom("expected a list of objects"))
                }
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some),
    }
}
