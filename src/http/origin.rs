//! Whether a form post comes from the gateway's own pages (the portal's
//! and the console's forms), by the `Origin` header the browser sends, else
//! its `Referer`. A request with neither (a script, curl) is left to the
//! form's CSRF token.

use axum::http::{HeaderMap, header};

/// What `Origin: null` means for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullOrigin {
    /// The page sets `Referrer-Policy: no-referrer`, so browsers send
    /// `null` for its own forms: the CSRF token decides.
    Allowed,
    /// The page's forms send their origin: `null` is a sandboxed or opaque
    /// document, refused.
    Refused,
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find(['/', '?', '#']).map_or(url.len(), |e| i + 3 + e);
            &url[..end]
        }
        None => url,
    }
}

/// Whether a post is from `public_url`'s origin or the `Host` it was sent
/// to; a post from another site is refused when the browser says so.
pub fn same_origin(headers: &HeaderMap, public_url: &str, null: NullOrigin) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let allowed = |origin: &str| {
        origin.eq_ignore_ascii_case(origin_of(public_url))
            || (!host.is_empty()
                && (origin.eq_ignore_ascii_case(&format!("http://{host}"))
                    || origin.eq_ignore_ascii_case(&format!("https://{host}"))))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        return match origin.to_str() {
            Ok("null") => null == NullOrigin::Allowed,
            Ok(o) => allowed(o),
            Err(_) => false,
        };
    }
    if let Some(referer) = headers.get(header::REFERER) {
        return referer.to_str().is_ok_and(|r| allowed(origin_of(r)));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://gw.example.com/p/x?y"),
            "https://gw.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        let same = |h: &HeaderMap, url: &str| same_origin(h, url, NullOrigin::Allowed);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5000"));
        assert!(same(&h, "https://gw.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5000"),
        );
        assert!(same(&h, "https://gw.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://gw.example.com"),
        );
        assert!(same(&h, "https://gw.example.com/"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same(&h, "https://gw.example.com"));
        assert!(!same_origin(
            &h,
            "https://gw.example.com",
            NullOrigin::Refused
        ));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same(&h, "https://gw.example.com"));
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://evil.example/x"),
        );
        assert!(!same(&h, "https://gw.example.com"));
    }
}
