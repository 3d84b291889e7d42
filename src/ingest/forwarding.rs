//! Routing rule 3 (SPEC §4, §6): a sender's own verification mail coming
//! back through forwarding, or a mail provider's forwarding-confirmation
//! mail arriving on a forwarding address. Pure.

use serde::{Deserialize, Serialize};

use crate::model::verification_message_id;

/// A sender address as far as detection needs it.
pub type SenderInfo = crate::model::ForwardingCandidate;

/// The provider's confirmation, shown to the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub provider: String,
    pub code: Option<String>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Verification {
        sender_id: i64,
    },
    ProviderConfirmation {
        sender_id: i64,
        confirmation: Confirmation,
    },
}

/// Words that name forwarding in the subjects providers use.
const FORWARDING_WORDS: &[&str] = &[
    "forwarding",
    "forward",
    "weiterleitung",
    "transfert",
    "reenvío",
    "reenvio",
    "inoltro",
    "doorsturen",
    "encaminhamento",
    "przekazywanie",
];

fn provider_of(from: &str) -> Option<&'static str> {
    let from = from.to_ascii_lowercase();
    if from == "forwarding-noreply@google.com"
        || from.ends_with("@google.com") && from.contains("forward")
    {
        Some("gmail")
    } else if from.ends_with("@microsoft.com")
        || from.ends_with("@outlook.com")
        || from.ends_with("@office365.com")
    {
        Some("microsoft")
    } else if from.ends_with("@fastmail.com") || from.ends_with("@messagingengine.com") {
        Some("fastmail")
    } else if from.ends_with("@zoho.com") || from.ends_with("@zohomail.com") {
        Some("zoho")
    } else if from.ends_with("@yahoo.com") || from.ends_with("@yahoo-inc.com") {
        Some("yahoo")
    } else {
        None
    }
}

/// The first run of 6 to 12 digits, preferring one after `#`.
fn find_code(text: &str) -> Option<String> {
    let digits_at = |s: &str| -> Option<String> {
        let run: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        (6..=12).contains(&run.len()).then_some(run)
    };
    if let Some(pos) = text.find('#')
        && let Some(code) = digits_at(&text[pos + 1..])
    {
        return Some(code);
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let run_len = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            let next = bytes.get(i + run_len);
            if (6..=12).contains(&run_len) && !next.is_some_and(|b| b.is_ascii_alphanumeric()) {
                return Some(text[i..i + run_len].to_string());
            }
            i += run_len;
        } else {
            i += 1;
        }
    }
    None
}

/// The first https link that looks like a confirmation link.
fn find_link(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(pos) = rest.find("https://") {
        let candidate: String = rest[pos..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .collect();
        let lower = candidate.to_ascii_lowercase();
        if ["/vf-", "confirm", "verify", "verification", "forward"]
            .iter()
            .any(|k| lower.contains(k))
        {
            return Some(candidate.trim_end_matches(['.', ',']).to_string());
        }
        rest = &rest[pos + 8..];
    }
    None
}

pub struct Input<'a> {
    pub gateway_domain: &'a str,
    /// Envelope recipients and trace/To headers' addresses.
    pub addresses: &'a [String],
    pub message_id: Option<&'a str>,
    pub from: Option<&'a str>,
    pub subject: &'a str,
    pub text: &'a str,
}

pub fn detect(input: &Input<'_>, senders: &[SenderInfo]) -> Option<Detected> {
    // Our own verification mail: recognised by its Message-ID, whichever
    // way it came back.
    if let Some(id) = input.message_id {
        for s in senders {
            if let Some(nonce) = &s.verification_nonce
                && id.eq_ignore_ascii_case(&verification_message_id(nonce, input.gateway_domain))
            {
                return Some(Detected::Verification { sender_id: s.id });
            }
        }
    }
    // A provider's confirmation must arrive on a forwarding address.
    let sender = senders.iter().find(|s| {
        let fwd = format!("{}@{}", s.forwarding_local, input.gateway_domain);
        input.addresses.iter().any(|a| a.eq_ignore_ascii_case(&fwd))
    })?;
    let from = input.from.unwrap_or("");
    let subject_lower = input.subject.to_lowercase();
    let names_forwarding = FORWARDING_WORDS.iter().any(|w| subject_lower.contains(w));
    let provider = provider_of(from);
    let looks_automatic = {
        let f = from.to_ascii_lowercase();
        f.contains("noreply") || f.contains("no-reply") || f.contains("do-not-reply")
    };
    let provider_name = match provider {
        Some("gmail") => "gmail",
        Some(p) if names_forwarding => p,
        None if names_forwarding && looks_automatic => "other",
        _ => return None,
    };
    let code = find_code(input.subject).or_else(|| find_code(input.text));
    let link = find_link(input.text);
    if code.is_none() && link.is_none() {
        return None;
    }
    Some(Detected::ProviderConfirmation {
        sender_id: sender.id,
        confirmation: Confirmation {
            provider: provider_name.to_string(),
            code,
            link,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn senders() -> Vec<SenderInfo> {
        vec![SenderInfo {
            id: 7,
            email: "support@acme.com".into(),
            forwarding_local: "fwd-k3j9x2".into(),
            verification_nonce: Some("n0nce".into()),
        }]
    }

    fn input<'a>(
        addresses: &'a [String],
        from: &'a str,
        subject: &'a str,
        text: &'a str,
    ) -> Input<'a> {
        Input {
            gateway_domain: "gw.example.com",
            addresses,
            message_id: None,
            from: Some(from),
            subject,
            text,
        }
    }

    #[test]
    fn gmail_confirmation_in_several_languages() {
        let fwd = vec!["fwd-k3j9x2@gw.example.com".to_string()];
        let body = "To allow support@acme.com to automatically forward mail, click:\r\n\
https://mail-settings.google.com/mail/vf-%5BANGjdJ9x%5D-abc\r\nConfirmation code: 123456789";
        for subject in [
            "(#123456789) Gmail Forwarding Confirmation - Receive Mail from support@acme.com",
            "(#123456789) Gmail-Weiterleitungsbestätigung – E-Mails von support@acme.com empfangen",
            "(#123456789) Confirmation de transfert Gmail - Recevoir des e-mails de support@acme.com",
            "(#123456789) Confirmación de reenvío de Gmail: recibir correo de support@acme.com",
            "(#123456789) Gmail 전달 확인 - support@acme.com에서 메일 받기",
        ] {
            let got = detect(
                &input(&fwd, "forwarding-noreply@google.com", subject, body),
                &senders(),
            );
            assert_eq!(
                got,
                Some(Detected::ProviderConfirmation {
                    sender_id: 7,
                    confirmation: Confirmation {
                        provider: "gmail".into(),
                        code: Some("123456789".into()),
                        link: Some(
                            "https://mail-settings.google.com/mail/vf-%5BANGjdJ9x%5D-abc".into()
                        ),
                    }
                }),
                "{subject}"
            );
        }
    }

    #[test]
    fn generic_provider_confirmation() {
        let fwd = vec!["FWD-K3J9X2@gw.example.com".to_string()];
        let got = detect(
            &input(
                &fwd,
                "no-reply@mail.example",
                "Confirm forwarding to fwd-k3j9x2@gw.example.com",
                "Code 4821 is too short; use https://mail.example/forward/confirm?t=abc",
            ),
            &senders(),
        );
        assert!(
            matches!(got, Some(Detected::ProviderConfirmation { sender_id: 7, ref confirmation }) if confirmation.link.as_deref() == Some("https://mail.example/forward/confirm?t=abc") && confirmation.code.is_none())
        );
    }

    #[test]
    fn not_on_a_forwarding_address_or_not_a_confirmation() {
        let other = vec!["reply@gw.example.com".to_string()];
        assert_eq!(
            detect(
                &input(
                    &other,
                    "forwarding-noreply@google.com",
                    "(#123456789) Gmail Forwarding Confirmation",
                    "https://mail-settings.google.com/mail/vf-x"
                ),
                &senders()
            ),
            None
        );
        let fwd = vec!["fwd-k3j9x2@gw.example.com".to_string()];
        assert_eq!(
            detect(
                &input(
                    &fwd,
                    "vendor@carrier.example",
                    "Re: forwarding the pallet 123456",
                    "see https://carrier.example/track"
                ),
                &senders()
            ),
            None
        );
    }

    #[test]
    fn our_verification_mail_by_message_id() {
        let none: Vec<String> = Vec::new();
        let mut i = input(&none, "support@acme.com", "Verify", "");
        let id = verification_message_id("n0nce", "gw.example.com");
        i.message_id = Some(&id);
        assert_eq!(
            detect(&i, &senders()),
            Some(Detected::Verification { sender_id: 7 })
        );
        let wrong = verification_message_id("other", "gw.example.com");
        i.message_id = Some(&wrong);
        assert_eq!(detect(&i, &senders()), None);
    }

    #[test]
    fn codes() {
        assert_eq!(find_code("(#987654321) x").as_deref(), Some("987654321"));
        assert_eq!(find_code("your code: 482913.").as_deref(), Some("482913"));
        assert_eq!(find_code("order A1234567 and 12345"), None);
    }
}
