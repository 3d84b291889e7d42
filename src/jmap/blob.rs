//! Blob download (RFC 8620 §6.2): `GET /jmap/download/{accountId}/{blobId}/{name}?accept=type`.
//! `r<n>` is the stored raw message, byte for byte; `p<n>-<part>` one
//! MIME part, transfer-decoded. Served like the HTTP API's attachments:
//! as a download, never rendered in our origin.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::{account_id, ids, mime};
use crate::http::AppState;
use crate::http::download::attachment_response;
use crate::http::error::ApiError;
use crate::http::extract::{Caller, PathParam, QueryParam};
use crate::store::view;

#[derive(Debug, Deserialize)]
pub struct Download {
    accept: Option<String>,
}

/// A media type safe to send back: `type/subtype` of token characters,
/// parameters allowed; anything else becomes application/octet-stream.
fn media_type(accept: Option<&str>) -> String {
    let fallback = "application/octet-stream".to_string();
    let Some(a) = accept
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.len() <= 200)
    else {
        return fallback;
    };
    if !a.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return fallback;
    }
    let essence = a.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => a.to_string(),
        _ => fallback,
    }
}

pub async fn download(
    State(st): State<AppState>,
    caller: Caller,
    PathParam((account, blob, name)): PathParam<(String, String, String)>,
    QueryParam(q): QueryParam<Download>,
) -> Result<Response, ApiError> {
    if account != account_id(caller.0.id) {
        return Err(ApiError::NotFound("account"));
    }
    let (message, part) = ids::parse_blob(&blob).ok_or(ApiError::NotFound("blob"))?;
    let viewer = view::Viewer {
        role: caller.0.role,
        user_id: caller.0.id,
    };
    let data = st
        .store
        .read(move |c| {
            if view::placed(c, viewer, message)?.is_none() {
                return Ok(None);
            }
            let Some(raw) = view::raw(c, message)? else {
                return Ok(None);
            };
            let Some(part) = part else {
                return Ok(Some(raw));
            };
            let msg = mime::parse(&raw);
            match msg.parts.get(part).map(|p| &p.body) {
                None | Some(mail_parser::PartType::Multipart(_)) => Ok(None),
                Some(_) => Ok(Some(mime::part_bytes(&msg, part).into_owned())),
            }
        })
        .await?
        .ok_or(ApiError::NotFound("blob"))?;
    let ctype = media_type(q.accept.as_deref());
    Ok(attachment_response(Some(&name), &ctype, data))
}

#[cfg(test)]
mod tests {
    use super::media_type;

    #[test]
    fn media_types_are_checked() {
        assert_eq!(media_type(Some("application/pdf")), "application/pdf");
        assert_eq!(
            media_type(Some("text/plain; charset=utf-8")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(media_type(Some("nonsense")), "application/octet-stream");
        assert_eq!(media_type(Some("a/b\r\nX: y")), "application/octet-stream");
        assert_eq!(media_type(None), "application/octet-stream");
    }
}
