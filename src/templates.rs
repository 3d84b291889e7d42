//! Side-conversation templates (macros, SPEC §7): saved recipients, subject
//! and body with placeholders, filled when a side conversation starts from
//! one. Unknown placeholders are refused by name, never sent as they are.

use crate::model::{MailAddr, is_valid_email};
pub use crate::model::{NewTemplate, Template};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "parent.id",
    "parent.subject",
    "requester.name",
    "requester.email",
    "agent.name",
];

/// The values placeholders are filled with.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub parent_id: String,
    pub parent_subject: String,
    pub requester_name: String,
    pub requester_email: String,
    pub agent_name: String,
}

/// The placeholders a signature may use.
pub const SIGNATURE_PLACEHOLDERS: &[&str] = &["agent.name", "sender.name", "sender.email"];

/// Every `{{name}}` in `text` that is not a known placeholder.
pub fn unknown_placeholders(text: &str) -> Vec<String> {
    unknown_in(text, PLACEHOLDERS)
}

/// Every `{{name}}` in `text` that is not in `known`, once each.
fn unknown_in(text: &str, known: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !known.contains(&name) && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
        rest = &after[end + 2..];
    }
    out
}

/// Fills each `{{name}}` (whitespace inside the braces allowed) that
/// `lookup` knows; leaves the others as they are.
fn fill_with<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match lookup(after[..end].trim()) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Fills the known placeholders (whitespace inside the braces allowed).
pub fn fill(text: &str, v: &Values) -> String {
    fill_with(text, |name| match name {
        "parent.id" => Some(v.parent_id.as_str()),
        "parent.subject" => Some(v.parent_subject.as_str()),
        "requester.name" => Some(v.requester_name.as_str()),
        "requester.email" => Some(v.requester_email.as_str()),
        "agent.name" => Some(v.agent_name.as_str()),
        _ => None,
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Fills a signature's `{{agent.name}}`, `{{sender.name}}`,
/// `{{sender.email}}`; `html`: the values are escaped.
pub fn fill_signature(
    template: &str,
    html: bool,
    agent: &str,
    sender_name: &str,
    sender_email: &str,
) -> String {
    let values =
        [agent, sender_name, sender_email].map(|v| if html { escape(v) } else { v.to_string() });
    fill_with(template, |name| match name {
        "agent.name" => Some(values[0].as_str()),
        "sender.name" => Some(values[1].as_str()),
        "sender.email" => Some(values[2].as_str()),
        _ => None,
    })
}

/// Longest signature (each of text and HTML), bytes.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// Checks a signature's text and HTML: size and placeholders, refused by
/// name like a template's. `field`: `signature` (settings) or the sender's.
pub fn check_signature(
    field: &str,
    text: Option<&str>,
    html: Option<&str>,
) -> std::result::Result<(), Invalid> {
    for (part, value) in [("text", text), ("html", html)] {
        let Some(value) = value else { continue };
        let field = format!("{field}.{part}");
        if value.len() > MAX_SIGNATURE_BYTES {
            return Err(Invalid {
                field,
                message: "at most 64 KiB".into(),
            });
        }
        let unknown = unknown_in(value, SIGNATURE_PLACEHOLDERS);
        if !unknown.is_empty() {
            return Err(Invalid {
                field,
                message: unknown_message(&unknown, SIGNATURE_PLACEHOLDERS),
            });
        }
    }
    Ok(())
}

/// "unknown placeholder {{x}} (known: {{a}}, {{b}})".
fn unknown_message(unknown: &[String], known: &[&str]) -> String {
    let braces = |n: &str| format!("{{{{{n}}}}}");
    format!(
        "unknown placeholder{} {} (known: {})",
        if unknown.len() > 1 { "s" } else { "" },
        unknown
            .iter()
            .map(|u| braces(u))
            .collect::<Vec<_>>()
            .join(", "),
        known
            .iter()
            .map(|k| braces(k))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// [`fill`] for HTML bodies: the values are escaped, so a requester's name
/// or a ticket subject cannot add markup to the mail.
pub fn fill_html(text: &str, v: &Values) -> String {
    let esc = escape;
    let escaped = Values {
        parent_id: esc(&v.parent_id),
        parent_subject: esc(&v.parent_subject),
        requester_name: esc(&v.requester_name),
        requester_email: esc(&v.requester_email),
        agent_name: esc(&v.agent_name),
    };
    fill(text, &escaped)
}

/// A refusal naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// Checks a new template; `Err` names the first bad field.
pub fn validate(t: &NewTemplate) -> std::result::Result<(), Invalid> {
    let bad = |field: &str, message: String| Invalid {
        field: field.to_string(),
        message,
    };
    if t.name.trim().is_empty() || t.name.len() > 200 {
        return Err(bad("name", "must be 1 to 200 characters".into()));
    }
    for (field, list) in [("to", &t.to), ("cc", &t.cc)] {
        for (i, a) in list.iter().enumerate() {
            if MailAddr::parse(a.trim()).is_some_and(|m| m.is_address_literal()) {
                return Err(bad(
                    &format!("{field}[{i}]"),
                    "names an IP address instead of a mail domain; address literals are not accepted"
                        .into(),
                ));
            }
            if !is_valid_email(a.trim()) {
                return Err(bad(
                    &format!("{field}[{i}]"),
                    "not a valid email address".into(),
                ));
            }
        }
    }
    let texts = [
        ("subject", Some(&t.subject)),
        ("body_text", t.body_text.as_ref()),
        ("body_html", t.body_html.as_ref()),
    ];
    for (field, text) in texts {
        if let Some(text) = text {
            if text.len() > 256 * 1024 {
                return Err(bad(field, "at most 256 KiB".into()));
            }
            let unknown = unknown_placeholders(text);
            if !unknown.is_empty() {
                return Err(bad(field, unknown_message(&unknown, PLACEHOLDERS)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let v = Values {
            parent_id: "T-7".into(),
            parent_subject: "Broken pallet".into(),
            requester_name: "Rita".into(),
            requester_email: "rita@x.example".into(),
            agent_name: "Ann".into(),
        };
        assert_eq!(
            fill(
                "Re ticket {{parent.id}} ({{ parent.subject }}) for {{requester.name}} <{{requester.email}}> — {{agent.name}}",
                &v
            ),
            "Re ticket T-7 (Broken pallet) for Rita <rita@x.example> — Ann"
        );
        assert_eq!(
            unknown_placeholders("{{parent.id}} {{ticket.no}} {{x}} {{x}}"),
            vec!["ticket.no", "x"]
        );
        assert!(unknown_placeholders("{{ unclosed").is_empty());
        assert_eq!(fill("{{nope}} {{", &v), "{{nope}} {{");
        let hostile = Values {
            requester_name: "<script>x</script>".into(),
            ..v.clone()
        };
        assert_eq!(
            fill_html("<p>{{requester.name}}</p>", &hostile),
            "<p>&lt;script&gt;x&lt;/script&gt;</p>"
        );
    }
}
