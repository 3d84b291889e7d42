//! SEARCH: the criteria of a command turned into a condition over the
//! selected mailbox, evaluated on the in-memory sequence map (flags, UIDs,
//! numbers) and, only when a criterion needs them, on the stored message
//! columns (from, subject, dates, size, body text) read in batches. The
//! mail itself is read only for HEADER/BCC criteria (its header part).

use imap_types::core::AString;
use imap_types::search::SearchKey;

use super::selected::{ANSWERED, FLAGGED, SEEN, Selected, UNVERIFIED};
use crate::store::view::{self, SearchFields};
use crate::store::{Result, Store};

/// Messages read from the store per statement.
const BATCH: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    All,
    Nothing,
    /// A flag bit set (`true`) or unset.
    Flag(u8, bool),
    /// Membership in a resolved set, by index into the sequence map.
    Set(Vec<bool>),
    From(String),
    To(String),
    Cc(String),
    Subject(String),
    Body(String),
    Text(String),
    /// Lowercased field name and value (read from the raw header).
    Header(String, String),
    /// Days since the epoch of the internal date (UTC).
    Since(i64),
    Before(i64),
    On(i64),
    SentSince(i64),
    SentBefore(i64),
    SentOn(i64),
    Larger(u64),
    Smaller(u64),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

fn text(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).to_lowercase()
}

fn day(d: &imap_types::datetime::NaiveDate) -> i64 {
    let d: &chrono::NaiveDate = d.as_ref();
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    d.signed_duration_since(epoch).num_days()
}

fn day_of_ms(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn set_mask(sel: &Selected, indexes: Vec<usize>) -> Cond {
    let mut mask = vec![false; sel.msgs.len()];
    for i in indexes {
        if let Some(m) = mask.get_mut(i) {
            *m = true;
        }
    }
    Cond::Set(mask)
}

/// Builds the condition for `key` over `sel` (sets resolved now).
pub fn compile(key: &SearchKey<'_>, sel: &Selected) -> Cond {
    use SearchKey as K;
    match key {
        K::And(keys) => Cond::And(keys.as_ref().iter().map(|k| compile(k, sel)).collect()),
        K::SequenceSet(set) => set_mask(sel, sel.resolve_seq_lenient(set)),
        K::Uid(set) => set_mask(sel, sel.resolve_uid(set)),
        K::All => Cond::All,
        K::Answered => Cond::Flag(ANSWERED, true),
        K::Unanswered => Cond::Flag(ANSWERED, false),
        K::Flagged => Cond::Flag(FLAGGED, true),
        K::Unflagged => Cond::Flag(FLAGGED, false),
        K::Seen => Cond::Flag(SEEN, true),
        K::Unseen => Cond::Flag(SEEN, false),
        // Never set here: \Deleted, \Draft, \Recent, keywords.
        K::Keyword(k) if k.as_ref().eq_ignore_ascii_case("$unverified") => {
            Cond::Flag(UNVERIFIED, true)
        }
        K::Unkeyword(k) if k.as_ref().eq_ignore_ascii_case("$unverified") => {
            Cond::Flag(UNVERIFIED, false)
        }
        K::Deleted | K::Draft | K::Recent | K::New | K::Keyword(_) => Cond::Nothing,
        K::Undeleted | K::Undraft | K::Old | K::Unkeyword(_) => Cond::All,
        K::From(s) => Cond::From(text(s)),
        K::To(s) => Cond::To(text(s)),
        K::Cc(s) => Cond::Cc(text(s)),
        K::Bcc(s) => Cond::Header("bcc".into(), text(s)),
        K::Subject(s) => Cond::Subject(text(s)),
        K::Body(s) => Cond::Body(text(s)),
        K::Text(s) => Cond::Text(text(s)),
        K::Header(name, value) => Cond::Header(text(name), text(value)),
        K::Since(d) => Cond::Since(day(d)),
        K::Before(d) => Cond::Before(day(d)),
        K::On(d) => Cond::On(day(d)),
        K::SentSince(d) => Cond::SentSince(day(d)),
        K::SentBefore(d) => Cond::SentBefore(day(d)),
        K::SentOn(d) => Cond::SentOn(day(d)),
        K::Larger(n) => Cond::Larger(*n as u64),
        K::Smaller(n) => Cond::Smaller(*n as u64),
        K::Not(k) => Cond::Not(Box::new(compile(k, sel))),
        K::Or(a, b) => Cond::Or(Box::new(compile(a, sel)), Box::new(compile(b, sel))),
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Needs {
    fields: bool,
    body: bool,
    header: bool,
}

fn needs(c: &Cond, n: &mut Needs) {
    match c {
        Cond::All | Cond::Nothing | Cond::Flag(..) | Cond::Set(_) => {}
        Cond::Body(_) | Cond::Text(_) => {
            n.fields = true;
            n.body = true;
        }
        Cond::Header(..) => n.header = true,
        Cond::Not(c) => needs(c, n),
        Cond::And(cs) => cs.iter().for_each(|c| needs(c, n)),
        Cond::Or(a, b) => {
            needs(a, n);
            needs(b, n);
        }
        _ => n.fields = true,
    }
}

/// The addresses of a JSON `[{name, email}]` column as "name <email>, …".
fn addresses(json: &str) -> String {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(json) else {
        return String::new();
    };
    list.iter()
        .map(|a| {
            let name = a.get("name").and_then(|v| v.as_str()).unwrap_or("");
            let email = a.get("email").and_then(|v| v.as_str()).unwrap_or("");
            format!("{name} <{email}>")
        })
        .collect::<Vec<_>>()
        .join(", ")
        .to_lowercase()
}

/// The unfolded value of every header field named `name` (lowercase).
fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|p| p + 1))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(c) = current.take() {
            out.push(c);
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            current = Some(value.trim().to_string());
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

struct Row<'a> {
    index: usize,
    flags: u8,
    fields: Option<&'a SearchFields>,
    raw_header: Option<&'a [u8]>,
}

fn eval(c: &Cond, r: &Row<'_>) -> bool {
    let f = r.fields;
    let field = |get: &dyn Fn(&SearchFields) -> bool| f.is_some_and(get);
    match c {
        Cond::All => true,
        Cond::Nothing => false,
        Cond::Flag(bit, want) => (r.flags & bit != 0) == *want,
        Cond::Set(mask) => mask.get(r.index).copied().unwrap_or(false),
        Cond::From(s) => field(&|f| {
            format!("{} <{}>", f.from_name, f.from_email)
                .to_lowercase()
                .contains(s.as_str())
        }),
        Cond::To(s) => field(&|f| addresses(&f.to_addrs).contains(s.as_str())),
        Cond::Cc(s) => field(&|f| addresses(&f.cc_addrs).contains(s.as_str())),
        Cond::Subject(s) => field(&|f| f.subject.to_lowercase().contains(s.as_str())),
        Cond::Body(s) => field(&|f| {
            f.text_body
                .as_deref()
                .unwrap_or("")
                .to_lowercase()
                .contains(s.as_str())
        }),
        Cond::Text(s) => field(&|f| {
            let all = format!(
                "{} <{}>\n{}\n{}\n{}\n{}",
                f.from_name,
                f.from_email,
                f.subject,
                addresses(&f.to_addrs),
                addresses(&f.cc_addrs),
                f.text_body.as_deref().unwrap_or("")
            );
            all.to_lowercase().contains(s.as_str())
        }),
        Cond::Header(name, value) => r.raw_header.is_some_and(|raw| {
            header_values(raw, name)
                .iter()
                .any(|v| v.to_lowercase().contains(value.as_str()))
        }),
        Cond::Since(d) => field(&|f| day_of_ms(f.received_at) >= *d),
        Cond::Before(d) => field(&|f| day_of_ms(f.received_at) < *d),
        Cond::On(d) => field(&|f| day_of_ms(f.received_at) == *d),
        Cond::SentSince(d) => field(&|f| day_of_ms(f.date.unwrap_or(f.received_at)) >= *d),
        Cond::SentBefore(d) => field(&|f| day_of_ms(f.date.unwrap_or(f.received_at)) < *d),
        Cond::SentOn(d) => field(&|f| day_of_ms(f.date.unwrap_or(f.received_at)) == *d),
        Cond::Larger(n) => field(&|f| f.size > *n),
        Cond::Smaller(n) => field(&|f| f.size < *n),
        Cond::Not(c) => !eval(c, r),
        Cond::And(cs) => cs.iter().all(|c| eval(c, r)),
        Cond::Or(a, b) => eval(a, r) || eval(b, r),
    }
}

/// Indexes (into the sequence map) of the messages matching `cond`, in
/// order.
pub async fn run(store: &Store, sel: &Selected, cond: Cond) -> Result<Vec<usize>> {
    let mut n = Needs::default();
    needs(&cond, &mut n);
    if !n.fields && !n.header {
        return Ok(sel
            .msgs
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                eval(
                    &cond,
                    &Row {
                        index: *i,
                        flags: m.flags,
                        fields: None,
                        raw_header: None,
                    },
                )
            })
            .map(|(i, _)| i)
            .collect());
    }
    let cond = std::sync::Arc::new(cond);
    let mut out = Vec::new();
    for (chunk_no, chunk) in sel.msgs.chunks(BATCH).enumerate() {
        let base = chunk_no * BATCH;
        let ids: Vec<i64> = chunk.iter().map(|m| m.message_id).collect();
        let flags: Vec<u8> = chunk.iter().map(|m| m.flags).collect();
        let cond = cond.clone();
        let matched = store
            .read(move |c| {
                let fields = if n.fields {
                    view::search_fields(c, &ids, n.body)?
                } else {
                    Vec::new()
                };
                let mut headers: std::collections::HashMap<i64, Vec<u8>> =
                    std::collections::HashMap::new();
                if n.header {
                    view::with_raw_messages(c, &ids, |id, _, raw| {
                        let end = memchr::memmem::find(raw, b"\r\n\r\n")
                            .map(|p| p + 4)
                            .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|p| p + 2))
                            .unwrap_or(raw.len());
                        headers.insert(id, raw[..end].to_vec());
                        true
                    })?;
                }
                let by_id: std::collections::HashMap<i64, &SearchFields> =
                    fields.iter().map(|f| (f.id, f)).collect();
                let mut matched = Vec::new();
                for (k, id) in ids.iter().enumerate() {
                    let row = Row {
                        index: base + k,
                        flags: flags[k],
                        fields: by_id.get(id).copied(),
                        raw_header: headers.get(id).map(|v| v.as_slice()),
                    };
                    if eval(&cond, &row) {
                        matched.push(base + k);
                    }
                }
                Ok(matched)
            })
            .await?;
        out.extend(matched);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_unfold() {
        let raw = b"From: a@b\r\nBcc: x@y,\r\n  z@w\r\nSubject: hi\r\n\r\nBcc: not@header\r\n";
        assert_eq!(header_values(raw, "bcc"), vec!["x@y, z@w".to_string()]);
        assert_eq!(header_values(raw, "subject"), vec!["hi".to_string()]);
        assert!(header_values(raw, "to").is_empty());
    }

    #[test]
    fn address_columns() {
        assert_eq!(
            addresses(r#"[{"name":"Ann","email":"Ann@X.com"},{"name":null,"email":"b@y"}]"#),
            "ann <ann@x.com>,  <b@y>"
        );
        assert_eq!(addresses("not json"), "");
    }

    #[test]
    fn conditions() {
        let f = SearchFields {
            id: 1,
            received_at: 86_400_000 * 10 + 5,
            date: None,
            size: 100,
            from_name: "Carrier Desk".into(),
            from_email: "desk@carrier.example".into(),
            subject: "Pallet 7 DELAYED".into(),
            to_addrs: "[]".into(),
            cc_addrs: "[]".into(),
            text_body: None,
        };
        let row = Row {
            index: 0,
            flags: SEEN,
            fields: Some(&f),
            raw_header: None,
        };
        assert!(eval(&Cond::From("carrier.example".into()), &row));
        assert!(eval(&Cond::From("desk".into()), &row));
        assert!(eval(&Cond::Subject("delayed".into()), &row));
        assert!(!eval(&Cond::Subject("nope".into()), &row));
        assert!(eval(&Cond::Since(10), &row));
        assert!(!eval(&Cond::Since(11), &row));
        assert!(eval(&Cond::Before(11), &row));
        assert!(eval(&Cond::On(10), &row));
        assert!(eval(&Cond::SentOn(10), &row));
        assert!(eval(&Cond::Flag(SEEN, true), &row));
        assert!(eval(&Cond::Not(Box::new(Cond::Flag(FLAGGED, true))), &row));
        assert!(eval(
            &Cond::Or(Box::new(Cond::Nothing), Box::new(Cond::Larger(99))),
            &row
        ));
        assert!(!eval(&Cond::And(vec![Cond::All, Cond::Smaller(100)]), &row));
    }
}
