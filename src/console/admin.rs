//! The admin pages (SPEC §11): sender addresses, signature and settings,
//! templates, webhooks, users and the audit log.

use axum::Router;

use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
