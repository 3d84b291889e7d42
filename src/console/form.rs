//! Forms as lists of fields, so a field may repeat (`to` once per address)
//! and scripts can post the API's field names: url-encoded bodies, and
//! multipart bodies whose files are counted while they are read (a body
//! cannot stream past `console.max_upload_bytes`).

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;

use super::Refusal;
use crate::http::AppState;

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct File {
    pub field: String,
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// A posted form.
#[derive(Debug, Clone, Default)]
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<File>,
}

/// Most fields one form may have.
const MAX_FIELDS: usize = 500;
/// Most bytes of one text field of a multipart form.
const MAX_TEXT_FIELD: usize = 2 * 1024 * 1024;

impl Form {
    /// The first value of a field, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first value of a field as posted (not trimmed), or "".
    pub fn raw(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The value as posted when it is not blank, else `None` (an optional
    /// text such as a signature: kept exactly, but empty means none).
    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(|_| self.raw(name).to_string())
    }

    /// Whether the form has the field at all (a form that leaves a field
    /// out keeps what is stored).
    pub fn posts(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A checkbox: present with any value but `false`/`0`/`off`.
    pub fn checked(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|(k, v)| k == name && !matches!(v.trim(), "false" | "0" | "off"))
    }

    /// Addresses from every value of a field, each split on commas,
    /// semicolons and white space (a person types a list; a script may
    /// repeat the field).
    pub fn addresses(&self, name: &str) -> Vec<String> {
        self.all(name)
            .into_iter()
            .flat_map(|v| v.split([',', ';', ' ', '\n', '\r', '\t']))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = Refusal;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Self::Rejection> {
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.starts_with("multipart/form-data") {
            let limit = st.config.console.max_upload_bytes;
            let mp = Multipart::from_request(req, st)
                .await
                .map_err(|e| Refusal::BadRequest(format!("The form could not be read: {e}")))?;
            return read_multipart(mp, limit).await;
        }
        if !ctype.is_empty() && !ctype.starts_with("application/x-www-form-urlencoded") {
            return Err(Refusal::BadRequest(
                "Forms are posted as application/x-www-form-urlencoded or multipart/form-data."
                    .into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, st)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Refusal::TooLarge("The form is too large.".into())
                } else {
                    Refusal::BadRequest(format!("The form could not be read: {e}"))
                }
            })?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| Refusal::BadRequest("The form could not be read.".into()))?;
        if fields.len() > MAX_FIELDS {
            return Err(Refusal::BadRequest("The form has too many fields.".into()));
        }
        Ok(Form {
            fields,
            files: Vec::new(),
        })
    }
}

async fn read_multipart(mut mp: Multipart, max_upload: usize) -> Result<Form, Refusal> {
    let too_large = || {
        Refusal::TooLarge(format!(
            "Attachments may add up to {} at most.",
            crate::http::human_size(max_upload)
        ))
    };
    let mut form = Form::default();
    let mut uploaded = 0usize;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(too_large());
                }
                return Err(Refusal::BadRequest(format!(
                    "The form could not be read: {}",
                    e.body_text()
                )));
            }
        };
        if form.fields.len() + form.files.len() >= MAX_FIELDS {
            return Err(Refusal::BadRequest("The form has too many fields.".into()));
        }
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        let mut field = field;
        let mut data = Vec::new();
        let cap = if filename.is_some() {
            max_upload.saturating_sub(uploaded)
        } else {
            MAX_TEXT_FIELD
        };
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if data.len() + chunk.len() > cap {
                        return Err(if filename.is_some() {
                            too_large()
                        } else {
                            Refusal::TooLarge("A field of the form is too large.".into())
                        });
                    }
                    data.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Refusal::BadRequest(format!(
                        "The form could not be read: {}",
                        e.body_text()
                    )));
                }
            }
        }
        match filename {
            // A file input left empty posts a part with no name and no bytes.
            Some(f) if f.is_empty() && data.is_empty() => {}
            Some(f) => {
                uploaded += data.len();
                form.files.push(File {
                    field: name,
                    filename: f,
                    content_type,
                    data,
                });
            }
            None => {
                let text = String::from_utf8(data)
                    .map_err(|_| Refusal::BadRequest("A field of the form is not UTF-8.".into()))?;
                form.fields.push((name, text));
            }
        }
    }
    Ok(form)
}
