//! Files handed to a browser (attachments, raw messages): always a
//! download of the declared type, never rendered in the gateway's origin.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// A file name safe inside a Content-Disposition header.
pub fn safe_filename(name: &str) -> String {
    crate::model::file_name(name).replace(['"', ';'], "_")
}

/// An attachment as a download of its declared type, never rendered in
/// our origin (`attachment` disposition, nosniff, sandboxing CSP).
pub fn attachment_response(filename: Option<&str>, ctype: &str, data: Vec<u8>) -> Response {
    let name = safe_filename(filename.unwrap_or("attachment"));
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let ctype = HeaderValue::from_str(ctype)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition =
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            ),
        ],
        data,
    )
        .into_response()
}
