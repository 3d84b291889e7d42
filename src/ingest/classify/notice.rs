//! Bounces without a delivery-status part: the text of non-standard
//! failure notices (qmail, Exim, Postfix without DSN, Exchange, Gmail,
//! Yahoo, Domino …), recognised by their openings and read per recipient.

use super::auto_reply::has_auto_reply_marker;
use super::*;

/// MTA signatures, for the record only (lowercase needle, name).
const MTA_SIGNATURES: &[(&str, &str)] = &[
    ("qmail-send", "qmail"),
    (
        "this message was created automatically by mail delivery software",
        "exim",
    ),
    ("this is the mail system at host", "postfix"),
    ("transcript of session follows", "sendmail"),
    ("permanent fatal errors", "sendmail"),
    ("msexch", "exchange"),
    ("did not reach the following recipient", "exchange"),
    ("did not reach some or all", "exchange"),
    ("delivery has failed to these recipients", "exchange"),
    ("delivery to the following recipient", "gmail"),
    ("googlemail.com", "gmail"),
    (
        "unable to deliver your message to the following address",
        "yahoo",
    ),
    ("yahoo", "yahoo"),
    ("amazonses", "amazonses"),
    ("domino", "domino"),
    ("courier", "courier"),
    ("opensmtpd", "opensmtpd"),
    ("mail.ru", "mailru"),
    ("zoho", "zoho"),
    ("interscan", "trendmicro"),
    ("mcafee", "mcafee"),
    ("postfix", "postfix"),
    ("exim", "exim"),
    ("sendmail", "sendmail"),
];

fn mta_name(ctx: &Context<'_, '_>) -> String {
    let report = text::split_report(ctx.mail.bodies.first().map_or("", String::as_str)).0;
    let head: String = report.chars().take(4000).collect::<String>().to_lowercase();
    MTA_SIGNATURES
        .iter()
        .find(|(needle, _)| {
            head.contains(needle)
                || ctx.mail.from_raw_lc.contains(needle)
                || ctx.mail.subject_lc.contains(needle)
        })
        .map_or("heuristic", |(_, name)| name)
        .to_string()
}

/// Whether the first body opens with a mail system's own failure wording —
/// not quoted, and not inside a forwarded message.
fn opens_with_bounce_signature(mail: &Mail<'_>) -> bool {
    let Some(body) = mail.bodies.first() else {
        return false;
    };
    for line in body.split('\n').take(40) {
        let t = line.trim().to_lowercase();
        if t.starts_with('>')
            || t.contains("forwarded message")
            || t.contains("original message")
            || t.contains("begin forwarded")
        {
            return false;
        }
        if text::BOUNCE_SIGNATURES.iter().any(|s| t.contains(s)) {
            return true;
        }
    }
    false
}

/// Whether a message without readable delivery-status fields is a failure
/// notice. `structural` is set for a `multipart/report` of delivery-status.
pub(super) fn looks_like_bounce(ctx: &Context<'_, '_>, structural: bool) -> bool {
    let mail = ctx.mail;
    let report_lc = &ctx.report_head_lc;
    // A `Return-Path: <>` left by an earlier hop is the null sender too.
    let null_path = mail
        .header_values("Return-Path")
        .any(|v| v.trim().trim_matches(['<', '>']).trim().is_empty());
    let from_system = ctx.env.null_sender() || null_path || mail.sent_by_mail_system();
    let subject_fail = text::FAILURE_SUBJECTS
        .iter()
        .any(|p| mail.subject_lc.contains(p));
    // Searched only when the answer depends on it: an ordinary reply (not
    // from a mail system, no failure header, not to a VERP address) never
    // needs the phrase search over its text.
    let body_fail = || text::FAILURE_BODY.iter().any(|p| report_lc.contains(p));
    let failed_header = !ctx.failed_header.is_empty();
    let verp = ctx
        .env
        .rcpts
        .iter()
        .any(|r| verp_key(r, ctx.env.gateway_domain).is_some());
    // Auto-responders use the null sender too (RFC 3834 §3.3): with their
    // marker present, body wording alone is not enough.
    let body_counts = || body_fail() && !has_auto_reply_marker(mail);
    // A person pasting a bounce into a reply writes from their own address
    // to a reply+ address: an MTA's wording counts only from a mail system
    // or to the VERP address.
    structural
        || (from_system || verp) && opens_with_bounce_signature(mail)
        || from_system && (subject_fail || failed_header || body_counts())
        || failed_header && (subject_fail || body_fail())
        || verp && subject_fail && (body_fail() || text::status_from_text(&ctx.report).is_some())
}

/// A bounce read from the text of a failure notice.
pub(super) fn bounce_from_text(ctx: &Context<'_, '_>) -> Bounce {
    let action = if ctx.delayed_hint {
        Action::Delayed
    } else {
        Action::Failed
    };
    let found = ctx.text_recipients();
    let strong = |a: &str| TextRecipient {
        addr: a.to_string(),
        status: None,
        diagnostic: None,
        strong: true,
    };
    let chosen: Vec<TextRecipient> = if !ctx.failed_header.is_empty() {
        ctx.failed_header
            .iter()
            .map(|a| {
                found
                    .iter()
                    .find(|f| f.addr.eq_ignore_ascii_case(a))
                    .cloned()
                    .unwrap_or_else(|| strong(a))
            })
            .collect()
    } else if found.iter().any(|f| f.strong) {
        found.iter().filter(|f| f.strong).cloned().collect()
    } else {
        let in_original: Vec<TextRecipient> = found
            .iter()
            .filter(|f| {
                ctx.original
                    .recipients
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(&f.addr))
            })
            .cloned()
            .collect();
        if !in_original.is_empty() {
            in_original
        } else if let Some(first) = found.first() {
            vec![first.clone()]
        } else if ctx.original.recipients.len() == 1 {
            ctx.original
                .recipients
                .iter()
                .filter(|a| !ctx.exclusions.excludes(a))
                .map(|a| strong(a))
                .collect()
        } else {
            Vec::new()
        }
    };

    let global_diag = text::global_diagnostic(&ctx.report);
    let recipients: Vec<BouncedRecipient> = chosen
        .into_iter()
        .take(text::MAX_RECIPIENTS)
        .map(|r| {
            // The recipient's own block when it says something, else the
            // report's most telling line, else whatever the block had.
            let diagnostic = match (r.diagnostic, &global_diag) {
                (Some(d), _) if text::is_informative(&d) => Some(d),
                (_, Some(g)) => Some(g.clone()),
                (d, None) => d,
            };
            let status = settle_status(
                r.status.as_deref(),
                diagnostic.as_deref(),
                None,
                action,
                ctx,
            );
            BouncedRecipient {
                recipient: r.addr,
                original_recipient: None,
                status,
                action,
                diagnostic,
            }
        })
        .collect();

    Bounce {
        recipients,
        original_message_id: ctx.original_message_id(),
        verp_key: ctx.verp_key(&[]),
        permanent: action == Action::Failed,
        format: BounceFormat::NonStandard(mta_name(ctx)),
    }
}

// ---------------------------------------------------------------------------
// Auto-replies
// ---------------------------------------------------------------------------
