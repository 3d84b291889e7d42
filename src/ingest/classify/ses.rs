//! Amazon SES event notifications delivered by email (directly or wrapped in
//! an SNS envelope): a JSON body whose `notificationType` is `Bounce`,
//! `Complaint` or `Delivery`. Read by key scanning rather than a JSON parser
//! because real ones arrive line-wrapped by relays (`…"!\n Content-…`) and
//! with the inner document escaped as a string.

/// One bounced recipient of an SES notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SesRecipient {
    pub addr: String,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SesNotice {
    Bounce {
        recipients: Vec<SesRecipient>,
        /// `bounceType` is not `Transient`.
        permanent_type: bool,
        /// `mail.commonHeaders.messageId`: the Message-ID header we sent.
        message_id: Option<String>,
    },
    Complaint,
    Delivery,
}

/// The string value of the first `"key": "value"` at or after `from`.
fn string_field(s: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let at = s.find(&quoted)? + quoted.len();
    let rest = s[at..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => return None,
            },
            _ => out.push(c),
        }
        if out.len() > 4096 {
            return None;
        }
    }
    None
}

/// Reads an SES notification from a message body, if the body is one.
pub(super) fn parse(body: &str) -> Option<SesNotice> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    // Unescape one level so an SNS envelope's inner document reads like the
    // bare one, and drop relay line-wrapping artifacts.
    let s = body
        .replace("\\\"", "\"")
        .replace("\\/", "/")
        .replace("!\n ", "")
        .replace("\n ", "");
    let kind = string_field(&s, "notificationType").or_else(|| string_field(&s, "eventType"))?;
    match kind.as_str() {
        "Complaint" => Some(SesNotice::Complaint),
        "Delivery" => Some(SesNotice::Delivery),
        "Bounce" => {
            let permanent_type = string_field(&s, "bounceType").is_none_or(|t| t != "Transient");
            let mut recipients = Vec::new();
            if let Some(start) = s.find("\"bouncedRecipients\"") {
                let list = &s[start..];
                let end = list.find(']').unwrap_or(list.len());
                for obj in list[..end].split('}') {
                    let Some(addr) = string_field(obj, "emailAddress") else {
                        continue;
                    };
                    if recipients.len() >= super::text::MAX_RECIPIENTS {
                        break;
                    }
                    recipients.push(SesRecipient {
                        addr,
                        action: string_field(obj, "action").map(|a| a.to_ascii_lowercase()),
                        status: string_field(obj, "status").and_then(|st| {
                            super::text::enhanced_codes(&st).next().map(str::to_string)
                        }),
                        diagnostic: string_field(obj, "diagnosticCode"),
                    });
                }
            }
            let message_id = s
                .find("\"commonHeaders\"")
                .and_then(|at| string_field(&s[at..], "messageId"));
            Some(SesNotice::Bounce {
                recipients,
                permanent_type,
                message_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_enveloped_bounces() {
        let bare = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"a@example.com","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"messageId":"ses-id","commonHeaders":{"messageId":"<orig@example.org>"}}}"#;
        let Some(SesNotice::Bounce {
            recipients,
            permanent_type,
            message_id,
        }) = parse(bare)
        else {
            panic!("not a bounce");
        };
        assert!(permanent_type);
        assert_eq!(message_id.as_deref(), Some("<orig@example.org>"));
        assert_eq!(recipients.len(), 1);
        assert_eq!(recipients[0].addr, "a@example.com");
        assert_eq!(recipients[0].status.as_deref(), Some("5.1.1"));

        let sns = r#"{ "Type" : "Notification", "Message" : "{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Transient\",\"bouncedRecipients\":[{\"emailAddress\":\"b@example.com\"}]}}" }"#;
        let Some(SesNotice::Bounce {
            recipients,
            permanent_type,
            ..
        }) = parse(sns)
        else {
            panic!("not a bounce");
        };
        assert!(!permanent_type);
        assert_eq!(recipients[0].addr, "b@example.com");
    }

    #[test]
    fn other_kinds_and_garbage() {
        assert_eq!(
            parse(r#"{"notificationType":"Complaint"}"#),
            Some(SesNotice::Complaint)
        );
        assert_eq!(
            parse(r#"{"eventType":"Delivery"}"#),
            Some(SesNotice::Delivery)
        );
        assert_eq!(parse(r#"{"notificationType":"Other"}"#), None);
        assert_eq!(parse("hello {\"notificationType\":\"Bounce\"}"), None);
        assert_eq!(parse("{\"notificationType\":\"Bou"), None);
        assert_eq!(parse("{\"notificationType\":"), None);
    }
}
