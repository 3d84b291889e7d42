//! Classification against the shared corpus of real mail (`../shared/corpus`,
//! see its SOURCES.md; never copied into this repository): sisimai's bounces
//! from ~70 MTAs and providers, its RFC 3834 auto-replies and ARF reports,
//! mailgun/flanker's and the mail gem's DSNs, and ordinary mail that must
//! never be taken for a bounce.
//!
//! Every message is delivered with the envelope a bounce would have: the
//! null sender when its From looks like a mail system, else the From
//! address, and the VERP recipient `bounce+k1@gw.example.com`.
//!
//! sisimai's EXPECTED.md gives no per-file recipients or statuses (its
//! expectations live in upstream test code, not copied), so recipients are
//! checked here against what each file's own DSN fields or headers say.
//!
//! Run with `--nocapture` for the per-file table and the figures.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use backchannel::ingest::classify::{
    Action, AutoReplyReason, Bounce, BounceFormat, Kind, classify,
};

const GW: &str = "gw.example.com";

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "notice: {} is absent; corpus classification not checked",
            dir.display()
        );
        None
    }
}

/// Files directly in `dir` (or below it with `recursive`), sorted.
fn files(dir: &Path, ext: Option<&str>, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                if recursive {
                    stack.push(p);
                }
            } else if ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The envelope sender the test delivers with.
fn envelope_from(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let from = text
        .split(['\n', '\r'])
        .take(200)
        .find(|l| l.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("from:")))
        .map(|l| l[5..].trim().to_string())
        .unwrap_or_default();
    let lower = from.to_ascii_lowercase();
    if lower.is_empty()
        || lower.contains("mailer-daemon")
        || lower.contains("postmaster")
        || lower.contains("mail delivery")
        || lower.contains("<>")
    {
        return String::new();
    }
    match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => from[a + 1..b].to_string(),
        _ => from
            .split_whitespace()
            .find(|w| w.contains('@'))
            .unwrap_or("")
            .to_string(),
    }
}

fn run(path: &Path) -> Kind {
    let raw = fs::read(path).unwrap_or_default();
    classify(
        &raw,
        &envelope_from(&raw),
        &["bounce+k1@gw.example.com".to_string()],
        GW,
    )
}

fn describe(k: &Kind) -> String {
    match k {
        Kind::Reply => "reply".into(),
        Kind::AutoReply(r) => format!("auto_reply({})", r.as_str()),
        Kind::Bounce(b) => {
            let format = match &b.format {
                BounceFormat::Dsn => "dsn".to_string(),
                BounceFormat::NonStandard(m) => m.clone(),
            };
            let rcpts: Vec<String> = b
                .recipients
                .iter()
                .map(|r| format!("{} {} {}", r.recipient, r.status, r.action.as_str()))
                .collect();
            let diag: String = b
                .recipients
                .first()
                .and_then(|r| r.diagnostic.as_deref())
                .unwrap_or("-")
                .chars()
                .take(70)
                .collect();
            format!(
                "bounce[{format}{}] [{}] id={} verp={} diag={diag}",
                if b.permanent { "" } else { ",delayed" },
                rcpts.join("; "),
                b.original_message_id.as_deref().unwrap_or("-"),
                b.verp_key.as_deref().unwrap_or("-"),
            )
        }
    }
}

fn label(k: &Kind) -> &'static str {
    match k {
        Kind::Reply => "reply",
        Kind::AutoReply(_) => "auto_reply",
        Kind::Bounce(b) if has_recipient(b) => "bounce+rcpt",
        Kind::Bounce(_) => "bounce-no-rcpt",
    }
}

fn has_recipient(b: &Bounce) -> bool {
    b.recipients.iter().any(|r| r.recipient.contains('@'))
}

/// lhost/rhost/rfc3464 files that are not delivery failures, with why.
const NOT_FAILURES: &[(&str, &str)] = &[
    ("lhost-amazonses-11.eml", "SES complaint notification"),
    ("lhost-amazonses-12.eml", "SES delivery notification"),
    ("lhost-amazonses-13.eml", "SES delivery notification"),
    ("rfc3464-28.eml", "DSN with Action: delivered only"),
];

/// Failure notices read without a recipient, or not read as bounces, and
/// why. Printed, and allowed for by the threshold below.
const KNOWN_MISSES: &[(&str, &str)] = &[
    (
        "lhost-fml-02.eml",
        "fml mailing-list manager's \"You are not a member of this mailing list\" notice, \
         from the list's admin address: no failure wording, no null sender or daemon From",
    ),
    (
        "lhost-fml-03.eml",
        "fml \"Loop Alert: Duplicated Message-ID\" notice from the list admin: same",
    ),
    (
        "lhost-qmail-08.eml",
        "read as a qmail bounce, but its only failed recipient is also the bounce's own To \
         (the anonymised sample bounces a message sent to oneself) and the returned copy is \
         empty, so nothing shows it was a recipient: excluded as the original sender",
    ),
];

/// Share of sisimai failure notices that must come out as a bounce naming a
/// recipient.
const MIN_BOUNCE_WITH_RECIPIENT: f64 = 0.99;

#[test]
fn sisimai_bounces() {
    let Some(root) = corpus() else { return };
    let dir = root.join("sisimai-set-of-emails/maildir/bsd");
    let mut tally: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    let (mut failures, mut good, mut recipients) = (0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    for p in files(&dir, Some("eml"), false) {
        let n = name(&p);
        let k = run(&p);
        println!("{n}\t{}", describe(&k));
        let group = n.split('-').next().unwrap_or("").to_string();
        *tally
            .entry(group.clone())
            .or_default()
            .entry(label(&k))
            .or_default() += 1;
        if !matches!(group.as_str(), "lhost" | "rhost" | "rfc3464") {
            continue;
        }
        if let Some((_, why)) = NOT_FAILURES.iter().find(|(f, _)| *f == n) {
            assert!(
                !matches!(k, Kind::Bounce(_)),
                "{n} ({why}) read as a bounce"
            );
            continue;
        }
        failures += 1;
        match &k {
            Kind::Bounce(b) if has_recipient(b) => {
                good += 1;
                recipients += b.recipients.len();
            }
            _ => misses.push((n, describe(&k))),
        }
    }
    println!("sisimai bsd by group: {tally:?}");
    let share = good as f64 / failures.max(1) as f64;
    println!(
        "sisimai failure notices: {good}/{failures} bounces with a recipient ({:.1}%), {recipients} recipients",
        share * 100.0
    );
    for (n, got) in &misses {
        let why = KNOWN_MISSES
            .iter()
            .find(|(f, _)| f == n)
            .map_or("UNEXPLAINED", |(_, w)| w);
        println!("miss: {n}: {got} — {why}");
    }
    assert!(failures > 300, "corpus smaller than expected: {failures}");
    let unexplained: Vec<&String> = misses
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !KNOWN_MISSES.iter().any(|(f, _)| f == n))
        .collect();
    assert!(unexplained.is_empty(), "new misses: {unexplained:?}");
    assert!(
        share >= MIN_BOUNCE_WITH_RECIPIENT,
        "only {good}/{failures} failure notices read as bounces with a recipient"
    );
}

/// Addresses a file declares as failed recipients in its own fields:
/// `Final-Recipient:`/`Original-Recipient:` lines and `X-Failed-Recipients:`,
/// read here independently of the classifier.
fn declared_recipients(raw: &[u8]) -> Vec<String> {
    // Unfolded, so that a folded X-Failed-Recipients list reads whole.
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    let mut out = Vec::new();
    for line in text.split('\n') {
        let lower = line.to_ascii_lowercase();
        let value =
            if lower.starts_with("final-recipient:") || lower.starts_with("original-recipient:") {
                line.split_once(';').map(|(_, v)| v)
            } else if lower.starts_with("x-failed-recipients:") {
                line.split_once(':').map(|(_, v)| v)
            } else {
                None
            };
        for word in value
            .unwrap_or("")
            .split([',', ' ', '\t'])
            .map(|w| w.trim().trim_matches(['<', '>', '"']))
            .filter(|w| w.contains('@'))
        {
            out.push(word.to_ascii_lowercase());
        }
    }
    out
}

/// Where a file declares its failed recipients, the bounce names only
/// those.
#[test]
fn sisimai_recipients_match_declared_fields() {
    let Some(root) = corpus() else { return };
    let dir = root.join("sisimai-set-of-emails/maildir/bsd");
    let (mut declared, mut agree) = (0, 0);
    for p in files(&dir, Some("eml"), false) {
        let raw = fs::read(&p).unwrap_or_default();
        let want = declared_recipients(&raw);
        let Kind::Bounce(b) = run(&p) else { continue };
        if want.is_empty() {
            continue;
        }
        declared += 1;
        let ok = !b.recipients.is_empty()
            && b.recipients
                .iter()
                .all(|r| want.contains(&r.recipient.to_ascii_lowercase()));
        if ok {
            agree += 1;
        } else {
            println!(
                "disagree: {}: declared {want:?}, got {}",
                name(&p),
                describe(&Kind::Bounce(b))
            );
        }
    }
    println!("declared recipients: {agree}/{declared} bounces agree");
    assert!(declared > 250);
    assert_eq!(agree, declared);
}

#[test]
fn sisimai_auto_replies_and_feedback() {
    let Some(root) = corpus() else { return };
    let dir = root.join("sisimai-set-of-emails/maildir/bsd");
    let mut n = 0;
    for p in files(&dir, Some("eml"), false) {
        let f = name(&p);
        if f.starts_with("rfc3834-") || f.starts_with("arf-") {
            n += 1;
            let k = run(&p);
            assert!(matches!(k, Kind::AutoReply(_)), "{f}: {}", describe(&k));
        }
    }
    assert!(n >= 15, "only {n} rfc3834/arf files");
}

/// Files the corpus files under "not a bounce" or "ordinary mail" that are
/// delivery-failure reports all the same, and are read as bounces on purpose.
const REAL_BOUNCES: &[(&str, &str)] = &[
    (
        "rb-issue-368-bug.eml",
        "null sender, From postmaster, to a bounce+ VERP address: \"an email you sent was \
         rejected ... reject reason: Mailbox full, target mail address: xxxx@yyyyyy.net\" with the \
         returned message; kept in sisimai's not/ for a parser bug, but marking the outbound \
         message bounced is what the gateway must do",
    ),
    (
        "raw_email_with_mimepart_without_content_type.eml",
        "a Sendmail multipart/report delivery-status warning (Action: delayed, 4.5.0) for \
         larose.julie@courrier.uqam.ca; the mail gem keeps it for its MIME quirk",
    ),
];

#[test]
fn sisimai_not_bounces() {
    let Some(root) = corpus() else { return };
    let dir = root.join("sisimai-set-of-emails/maildir/not");
    let mut n = 0;
    for p in files(&dir, Some("eml"), false) {
        n += 1;
        let k = run(&p);
        let f = name(&p);
        println!("not/{f}\t{}", describe(&k));
        if let Some((_, why)) = REAL_BOUNCES.iter().find(|(r, _)| *r == f) {
            println!("  read as a bounce on purpose: {why}");
            let Kind::Bounce(b) = k else {
                panic!("{f}: not a bounce");
            };
            assert!(
                b.recipients
                    .iter()
                    .any(|r| r.recipient == "xxxx@yyyyyy.net")
            );
            continue;
        }
        assert!(!matches!(k, Kind::Bounce(_)), "{f}: {}", describe(&k));
    }
    assert!(n >= 2);
}

#[test]
fn sisimai_line_endings_agree() {
    let Some(root) = corpus() else { return };
    let base = root.join("sisimai-set-of-emails/maildir");
    let mut compared = 0;
    for variant in ["dos", "mac"] {
        for p in files(&base.join(variant), Some("eml"), false) {
            let lf = base.join("bsd").join(name(&p));
            if !lf.is_file() {
                continue;
            }
            compared += 1;
            assert_eq!(run(&p), run(&lf), "{variant}/{}", name(&p));
        }
    }
    println!("line-ending twins compared: {compared}");
    assert!(compared >= 50);
}

#[test]
fn sisimai_mailbox_edge_files_do_not_panic() {
    let Some(root) = corpus() else { return };
    for p in files(&root.join("sisimai-set-of-emails/mailbox"), None, false) {
        println!("mailbox/{}\t{}", name(&p), describe(&run(&p)));
    }
    for p in files(&root.join("sisimai-set-of-emails/maildir/tmp"), None, false) {
        println!("tmp/{}\t{}", name(&p), describe(&run(&p)));
    }
}

/// Every bounce of the corpus cut short at seven points still classifies
/// (no panic), the way a connection dropped mid-DATA would leave it.
#[test]
fn truncated_bounces_do_not_panic() {
    let Some(root) = corpus() else { return };
    let mut runs = 0;
    for dir in [
        "sisimai-set-of-emails/maildir/bsd",
        "mailgun-flanker/bounce",
        "mikel-mail/multipart_report_emails",
    ] {
        for p in files(&root.join(dir), Some("eml"), false) {
            let raw = fs::read(&p).unwrap_or_default();
            for k in 1..8 {
                let cut = raw.len() * k / 8;
                let _ = classify(&raw[..cut], "", &[], GW);
                runs += 1;
            }
        }
    }
    assert!(runs > 3000);
}

fn bounce(p: &Path) -> Bounce {
    match run(p) {
        Kind::Bounce(b) => b,
        other => panic!("{}: not a bounce: {}", p.display(), describe(&other)),
    }
}

#[test]
fn flanker_bounces() {
    let Some(root) = corpus() else { return };
    let dir = root.join("mailgun-flanker/bounce");
    let mut n = 0;
    for p in files(&dir, Some("eml"), false) {
        n += 1;
        let b = bounce(&p);
        println!(
            "flanker/{}\t{}",
            name(&p),
            describe(&Kind::Bounce(b.clone()))
        );
        assert!(has_recipient(&b), "{}: no recipient", name(&p));
    }
    assert!(n >= 5);
}

#[test]
fn mikel_multipart_reports() {
    let Some(root) = corpus() else { return };
    let dir = root.join("mikel-mail/multipart_report_emails");
    let mut n = 0;
    for p in files(&dir, Some("eml"), false) {
        n += 1;
        let b = bounce(&p);
        println!("mikel/{}\t{}", name(&p), describe(&Kind::Bounce(b.clone())));
        assert!(has_recipient(&b), "{}: no recipient", name(&p));
        assert_eq!(b.format, BounceFormat::Dsn, "{}", name(&p));
    }
    assert!(n >= 3);
}

/// Human and list mail from the other sources: never a bounce.
#[test]
fn ordinary_mail_is_never_a_bounce() {
    let Some(root) = corpus() else { return };
    let sources = [
        "mikel-mail",
        "mailgun-flanker",
        "mailgun-talon",
        "notmuch-test-corpora",
        "stalwartlabs-mail-parser",
    ];
    for source in sources {
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for p in files(&root.join(source), Some("eml"), true) {
            let rel = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            if rel.contains("multipart_report_emails") || rel.contains("flanker/bounce/") {
                continue;
            }
            let k = run(&p);
            *tally.entry(label(&k)).or_default() += 1;
            if !matches!(k, Kind::Reply) {
                println!("{rel}\t{}", describe(&k));
            }
            if REAL_BOUNCES.iter().any(|(r, _)| *r == name(&p)) {
                let Kind::Bounce(b) = &k else {
                    panic!("{rel}: not a bounce");
                };
                assert!(!b.permanent, "{rel}: a delay warning");
                continue;
            }
            assert!(!matches!(k, Kind::Bounce(_)), "{rel}: {}", describe(&k));
        }
        println!("{source}: {tally:?}");
    }
    let _ = (Action::Failed, AutoReplyReason::OutOfOffice);
}
