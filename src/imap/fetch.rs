//! FETCH and STORE over the selected mailbox, and the message reads
//! behind THREAD.
//!
//! FETCH streams: the messages of a sequence set are read in batches (one
//! statement per batch), each batch's responses are encoded on the blocking
//! pool straight from the bytes SQLite hands out (no copy of the mail into
//! owned values), and written out before the next batch is read. No read
//! connection is held across an await.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use imap_codec::ResponseCodec;
use imap_types::IntoStatic;
use imap_types::core::{IString, Literal, NString, Tag, Vec1};
use imap_types::datetime::DateTime;
use imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_types::flag::{Flag, FlagFetch, StoreResponse, StoreType};
use imap_types::response::{Data, Response, StatusKind};
use imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::encode_into;
use super::mime;
use super::selected::{ANSWERED, FLAGGED, Indexes, SEEN, SetError, UNVERIFIED, nz};
use super::session::{Session, code_other, tagged};
use crate::store::Db;
use crate::store::view::{self, FlagOp, FlagSet};
use crate::store::{Result as StoreResult, StoreError};

/// Messages per read statement.
const BATCH: usize = 64;
/// A read job returns once it has encoded this much (at least one batch).
const JOB_BYTES: usize = 2 * 1024 * 1024;
/// Messages per read job when only index data (flags, UIDs) is fetched.
const JOB_MESSAGES: usize = 2048;
/// Memory the summaries of fetched messages may take (estimated).
const SUMMARY_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// What ENVELOPE and RFC822.SIZE say of one message. Stored messages never
/// change, so once computed it is kept (like Dovecot's cache file): a
/// client listing a mailbox again gets it without the mail being read from
/// the store and parsed.
#[derive(Debug)]
pub(crate) struct Summary {
    envelope: imap_types::envelope::Envelope<'static>,
    size: u32,
    /// Estimated memory, for the cache's budget.
    cost: usize,
}

impl Summary {
    fn of(raw: &[u8]) -> Summary {
        let header = memchr::memmem::find(raw, b"\n\r\n")
            .or_else(|| memchr::memmem::find(raw, b"\n\n"))
            .unwrap_or(raw.len());
        Summary {
            envelope: mime::envelope(raw),
            size: served_size(raw),
            cost: header.min(raw.len()) + 512,
        }
    }
}

/// The summaries of one listener's messages, by message row id, dropped
/// oldest first past [`SUMMARY_CACHE_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct Summaries {
    inner: Mutex<SummaryMap>,
}

#[derive(Debug, Default)]
struct SummaryMap {
    map: HashMap<i64, Arc<Summary>>,
    order: VecDeque<i64>,
    bytes: usize,
}

impl Summaries {
    fn get_many(&self, ids: &[i64]) -> Vec<Option<Arc<Summary>>> {
        match self.inner.lock() {
            Ok(m) => ids.iter().map(|id| m.map.get(id).cloned()).collect(),
            Err(_) => vec![None; ids.len()],
        }
    }

    fn insert(&self, id: i64, summary: Arc<Summary>) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        let cost = summary.cost;
        if cost > SUMMARY_CACHE_BYTES / 4 {
            return;
        }
        if m.map.insert(id, summary).is_none() {
            m.order.push_back(id);
            m.bytes += cost;
        }
        while m.bytes > SUMMARY_CACHE_BYTES {
            let Some(old) = m.order.pop_front() else {
                break;
            };
            if let Some(gone) = m.map.remove(&old) {
                m.bytes = m.bytes.saturating_sub(gone.cost);
            }
        }
    }
}

/// One requested data item, owned (it moves into the read job).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    InternalDate,
    Size,
    Envelope,
    Body,
    BodyStructure,
    BodyExt {
        section: Option<Section<'static>>,
        partial: Option<(u32, NonZeroU32)>,
        peek: bool,
    },
    Rfc822,
    Rfc822Header,
    Rfc822Text,
}

impl Item {
    fn needs_raw(&self) -> bool {
        !matches!(self, Item::Uid | Item::Flags | Item::InternalDate)
    }

    /// Served from a message's [`Summary`] once there is one.
    fn in_summary(&self) -> bool {
        matches!(self, Item::Envelope | Item::Size)
    }

    /// Whether fetching it sets \Seen (RFC 3501 §6.4.5).
    fn sets_seen(&self) -> bool {
        matches!(
            self,
            Item::BodyExt { peek: false, .. } | Item::Rfc822 | Item::Rfc822Text
        )
    }
}

/// The items of a FETCH; `Err` names one this server does not serve.
fn items(names: MacroOrMessageDataItemNames<'static>) -> Result<Vec<Item>, &'static str> {
    let names = match names {
        MacroOrMessageDataItemNames::Macro(m) => match m {
            Macro::All => vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
                MessageDataItemName::Envelope,
            ],
            Macro::Fast => vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ],
            Macro::Full => vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
                MessageDataItemName::Envelope,
                MessageDataItemName::Body,
            ],
            _ => return Err("Unknown FETCH macro"),
        },
        MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(match name {
            MessageDataItemName::Uid => Item::Uid,
            MessageDataItemName::Flags => Item::Flags,
            MessageDataItemName::InternalDate => Item::InternalDate,
            MessageDataItemName::Rfc822Size => Item::Size,
            MessageDataItemName::Envelope => Item::Envelope,
            MessageDataItemName::Body => Item::Body,
            MessageDataItemName::BodyStructure => Item::BodyStructure,
            MessageDataItemName::BodyExt {
                section,
                partial,
                peek,
            } => Item::BodyExt {
                section: section.map(|s| s.into_static()),
                partial,
                peek,
            },
            MessageDataItemName::Rfc822 => Item::Rfc822,
            MessageDataItemName::Rfc822Header => Item::Rfc822Header,
            MessageDataItemName::Rfc822Text => Item::Rfc822Text,
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                return Err("BINARY is not supported");
            }
            #[allow(unreachable_patterns)]
            _ => return Err("Unsupported FETCH item"),
        });
    }
    Ok(out)
}

pub fn flag_list(bits: u8) -> Vec<FlagFetch<'static>> {
    let mut out = Vec::with_capacity(3);
    if bits & ANSWERED != 0 {
        out.push(FlagFetch::Flag(Flag::Answered));
    }
    if bits & FLAGGED != 0 {
        out.push(FlagFetch::Flag(Flag::Flagged));
    }
    if bits & SEEN != 0 {
        out.push(FlagFetch::Flag(Flag::Seen));
    }
    if bits & UNVERIFIED != 0 {
        out.push(FlagFetch::Flag(unverified_keyword()));
    }
    out
}

/// `$unverified`: the message's sender is not verified (SPEC §4).
pub fn unverified_keyword() -> Flag<'static> {
    Flag::Keyword(imap_types::core::Atom::unvalidated("$unverified"))
}

/// `* n FETCH (FLAGS (…) UID u)`: a flag change.
pub fn flags_response(seq: u32, uid: u32, bits: u8) -> Data<'static> {
    let items = Vec1::try_from(vec![
        MessageDataItem::Flags(flag_list(bits)),
        MessageDataItem::Uid(nz(uid)),
    ])
    .unwrap_or_else(|_| Vec1::from(MessageDataItem::Uid(nz(uid))));
    Data::Fetch {
        seq: nz(seq),
        items,
    }
}

fn internal_date(ms: i64) -> DateTime {
    let secs = ms.div_euclid(1000);
    let utc = chrono::DateTime::from_timestamp(secs, 0)
        .or_else(|| chrono::DateTime::from_timestamp(0, 0))
        .unwrap_or_default();
    DateTime::try_from(utc.fixed_offset()).unwrap_or_else(|_| {
        DateTime::try_from(chrono::DateTime::<chrono::Utc>::default().fixed_offset())
            .unwrap_or_else(|_| unreachable_date())
    })
}

/// The Unix epoch as an IMAP date (always valid).
fn unreachable_date() -> DateTime {
    DateTime::unvalidated(chrono::DateTime::<chrono::Utc>::default().fixed_offset())
}

/// Size of the message as served: bare LF counted as CRLF, as
/// [`mime::section`] returns it (RFC822.SIZE must equal the BODY[] length).
fn served_size(raw: &[u8]) -> u32 {
    let mut bare = 0usize;
    for pos in memchr::memchr_iter(b'\n', raw) {
        if pos == 0 || raw[pos - 1] != b'\r' {
            bare += 1;
        }
    }
    (raw.len() + bare).min(u32::MAX as usize) as u32
}

/// A literal of message bytes. A literal cannot carry NUL (RFC 3501
/// `CHAR8`); like Dovecot, NULs are sent as 0x80.
fn literal(bytes: &[u8]) -> NString<'_> {
    if memchr::memchr(0, bytes).is_none()
        && let Ok(l) = Literal::try_from(bytes)
    {
        return NString(Some(IString::Literal(l)));
    }
    let cleaned: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == 0 { 0x80 } else { b })
        .collect();
    match Literal::try_from(cleaned) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => NString(None),
    }
}

/// One message to answer for.
#[derive(Debug, Clone, Copy)]
struct Job {
    seq: u32,
    uid: u32,
    message_id: i64,
    flags: u8,
    /// Report FLAGS even if not asked (\Seen was just set).
    flags_changed: bool,
}

fn encode_one(
    codec: &ResponseCodec,
    job: &Job,
    items: &[Item],
    received_at: i64,
    raw: &[u8],
    summary: Option<&Summary>,
    out: &mut Vec<u8>,
) {
    // Section bytes live until the response is encoded.
    let mut sections: Vec<Option<Vec<u8>>> = Vec::new();
    for item in items {
        sections.push(match item {
            Item::BodyExt { section, .. } => mime::section(raw, section.as_ref()),
            Item::Rfc822 => mime::section(raw, None),
            Item::Rfc822Header => mime::section(raw, Some(&Section::Header(None))),
            Item::Rfc822Text => mime::section(raw, Some(&Section::Text(None))),
            _ => None,
        });
    }
    let mut data: Vec<MessageDataItem<'_>> = Vec::with_capacity(items.len() + 1);
    let mut has_flags = false;
    for (item, bytes) in items.iter().zip(&sections) {
        let value = match item {
            Item::Uid => MessageDataItem::Uid(nz(job.uid)),
            Item::Flags => {
                has_flags = true;
                MessageDataItem::Flags(flag_list(job.flags))
            }
            Item::InternalDate => MessageDataItem::InternalDate(internal_date(received_at)),
            Item::Size => {
                MessageDataItem::Rfc822Size(summary.map_or_else(|| served_size(raw), |s| s.size))
            }
            Item::Envelope => MessageDataItem::Envelope(
                summary.map_or_else(|| mime::envelope(raw), |s| s.envelope.clone()),
            ),
            Item::Body => MessageDataItem::Body(mime::body_structure(raw, false)),
            Item::BodyStructure => MessageDataItem::BodyStructure(mime::body_structure(raw, true)),
            Item::BodyExt {
                section, partial, ..
            } => {
                let (origin, data) = match (bytes, partial) {
                    (None, _) => (None, NString(None)),
                    (Some(b), None) => (None, literal(b)),
                    (Some(b), Some((start, len))) => {
                        (Some(*start), literal(mime::partial(b, *start, Some(*len))))
                    }
                };
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data,
                }
            }
            Item::Rfc822 => {
                MessageDataItem::Rfc822(bytes.as_deref().map(literal).unwrap_or(NString(None)))
            }
            Item::Rfc822Header => MessageDataItem::Rfc822Header(
                bytes.as_deref().map(literal).unwrap_or(NString(None)),
            ),
            Item::Rfc822Text => {
                MessageDataItem::Rfc822Text(bytes.as_deref().map(literal).unwrap_or(NString(None)))
            }
        };
        data.push(value);
    }
    if job.flags_changed && !has_flags {
        data.push(MessageDataItem::Flags(flag_list(job.flags)));
    }
    let Ok(items) = Vec1::try_from(data) else {
        return;
    };
    let response = Response::Data(Data::Fetch {
        seq: nz(job.seq),
        items,
    });
    encode_into(codec, &response, out);
}

/// Encodes the responses for a run of jobs; returns the bytes and how many
/// jobs they cover (at least one batch, more while under [`JOB_BYTES`]).
fn encode_jobs(
    conn: &Db<'_>,
    jobs: &[Job],
    items: &[Item],
    summaries: &Summaries,
) -> StoreResult<(Vec<u8>, usize)> {
    let codec = ResponseCodec::default();
    let mut out = Vec::with_capacity(64 * 1024);
    let needs_raw = items.iter().any(Item::needs_raw);
    // ENVELOPE and RFC822.SIZE alone (with index data) come from the
    // summaries: the mail is read only for messages without one yet.
    let summary_only = needs_raw && items.iter().all(|i| !i.needs_raw() || i.in_summary());
    let needs_date = items.contains(&Item::InternalDate);
    let mut done = 0;
    for batch in jobs.chunks(BATCH) {
        let ids: Vec<i64> = batch.iter().map(|j| j.message_id).collect();
        let position: std::collections::HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        if summary_only {
            let mut known = summaries.get_many(&ids);
            let missing: Vec<i64> = ids
                .iter()
                .zip(&known)
                .filter(|(_, s)| s.is_none())
                .map(|(id, _)| *id)
                .collect();
            let mut dates: HashMap<i64, i64> = HashMap::new();
            if !missing.is_empty() {
                view::with_raw_messages(conn, &missing, |id, received_at, raw| {
                    if let Some(&i) = position.get(&id) {
                        let summary = Arc::new(Summary::of(raw));
                        summaries.insert(id, summary.clone());
                        known[i] = Some(summary);
                        dates.insert(id, received_at);
                    }
                    true
                })?;
            }
            if needs_date && dates.len() < ids.len() {
                for m in view::messages(conn, &ids, false)? {
                    dates.insert(m.id, m.received_at);
                }
            }
            for (job, summary) in batch.iter().zip(&known) {
                // A message that vanished between listing and reading is
                // left out, as on the other paths.
                let Some(summary) = summary else { continue };
                let received_at = dates.get(&job.message_id).copied().unwrap_or(0);
                encode_one(
                    &codec,
                    job,
                    items,
                    received_at,
                    &[],
                    Some(summary),
                    &mut out,
                );
            }
        } else if needs_raw {
            view::with_raw_messages(conn, &ids, |id, received_at, raw| {
                if let Some(&i) = position.get(&id) {
                    encode_one(&codec, &batch[i], items, received_at, raw, None, &mut out);
                }
                true
            })?;
        } else if needs_date {
            for m in view::messages(conn, &ids, false)? {
                if let Some(&i) = position.get(&m.id) {
                    encode_one(&codec, &batch[i], items, m.received_at, &[], None, &mut out);
                }
            }
        } else {
            for job in batch {
                encode_one(&codec, job, items, 0, &[], None, &mut out);
            }
        }
        done += batch.len();
        if out.len() >= JOB_BYTES {
            break;
        }
    }
    Ok((out, done))
}

fn resolve<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<'_, S>,
    tag: &Tag<'static>,
    set: &SequenceSet,
    uid: bool,
) -> Option<Indexes> {
    let sel = session.selected.as_ref()?;
    if uid {
        return Some(sel.resolve_uid(set));
    }
    match sel.resolve_seq(set) {
        Ok(i) => Some(i),
        Err(SetError::OutOfRange) => {
            session.conn.status(tagged(
                tag,
                StatusKind::Bad,
                None,
                "Invalid message sequence number (beyond the mailbox)",
            ));
            None
        }
    }
}

pub(super) async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<'_, S>,
    tag: &Tag<'static>,
    set: &SequenceSet,
    names: MacroOrMessageDataItemNames<'static>,
    uid: bool,
) -> std::io::Result<()> {
    if !session.require_selected(tag) {
        return Ok(());
    }
    let mut items = match items(names) {
        Ok(i) => i,
        Err(msg) => {
            session.conn.status(tagged(tag, StatusKind::Bad, None, msg));
            return Ok(());
        }
    };
    if uid && !items.contains(&Item::Uid) {
        items.insert(0, Item::Uid);
    }
    let Some(indexes) = resolve(session, tag, set, uid) else {
        return Ok(());
    };
    let Some(user_id) = session.user.as_ref().map(|u| u.id) else {
        return Ok(());
    };
    // A body fetch without PEEK sets \Seen first, so FLAGS below show it.
    let mut newly_seen: std::collections::HashSet<usize> = std::collections::HashSet::new();
    if items.iter().any(Item::sets_seen)
        && let Some(sel) = session.selected.as_ref()
        && !sel.read_only
    {
        let unseen: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&i| sel.msgs[i].flags & SEEN == 0)
            .collect();
        if !unseen.is_empty() {
            let ids: Vec<i64> = unseen.iter().map(|&i| sel.msgs[i].message_id).collect();
            let set = FlagSet {
                seen: true,
                ..Default::default()
            };
            let written = session
                .shared_store()
                .write(move |c| view::store_flags_many(c, user_id, &ids, FlagOp::Add, set))
                .await;
            match written {
                Ok(_) => {
                    if let Some(sel) = session.selected.as_mut() {
                        for &i in &unseen {
                            sel.msgs[i].flags |= SEEN;
                        }
                    }
                    newly_seen.extend(unseen);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "IMAP FETCH could not set \\Seen");
                }
            }
        }
    }
    let Some(sel) = session.selected.as_ref() else {
        return Ok(());
    };
    let jobs: Vec<Job> = indexes
        .iter()
        .map(|&i| {
            let m = sel.msgs[i];
            Job {
                seq: i as u32 + 1,
                uid: m.uid,
                message_id: m.message_id,
                flags: m.flags,
                flags_changed: newly_seen.contains(&i),
            }
        })
        .collect();
    let items = Arc::new(items);
    let needs_db = items
        .iter()
        .any(|i| i.needs_raw() || *i == Item::InternalDate);
    if !needs_db {
        // Index data only: encoded here, no store read.
        let codec = ResponseCodec::default();
        for chunk in jobs.chunks(JOB_MESSAGES) {
            let mut out = Vec::with_capacity(chunk.len() * 48);
            for job in chunk {
                encode_one(&codec, job, &items, 0, &[], None, &mut out);
            }
            session.conn.write_encoded(&out);
            session.conn.flush_if_full().await?;
        }
    } else {
        // A producer on the blocking pool reads and encodes job after job
        // (a read connection per job, none held while it waits) while this
        // task writes the previous one out: disk, CPU and socket overlap.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<StoreResult<Vec<u8>>>(2);
        let store = session.shared_store().clone();
        let summaries = session.shared.summaries.clone();
        let producer = tokio::task::spawn_blocking(move || {
            let mut pos = 0;
            while pos < jobs.len() {
                let end = (pos + JOB_MESSAGES).min(jobs.len());
                let result =
                    store.read_blocking(|c| encode_jobs(c, &jobs[pos..end], &items, &summaries));
                let failed = result.is_err();
                let bytes = result.map(|(bytes, done)| {
                    pos += done.max(1);
                    bytes
                });
                if tx.blocking_send(bytes).is_err() || failed {
                    return;
                }
            }
        });
        let mut failure = None;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(bytes) => {
                    session.conn.write_encoded(&bytes);
                    session.conn.flush_if_full().await?;
                }
                Err(e) => failure = Some(e),
            }
        }
        let _ = producer.await;
        if let Some(e) = failure {
            store_failed(session, tag, e);
            return Ok(());
        }
    }
    session.updates(uid).await;
    session
        .conn
        .status(tagged(tag, StatusKind::Ok, None, "FETCH completed"));
    Ok(())
}

fn store_failed<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<'_, S>,
    tag: &Tag<'static>,
    e: StoreError,
) {
    tracing::warn!(error = %e, "IMAP command failed on the store");
    session.conn.status(tagged(
        tag,
        StatusKind::No,
        Some(code_other("UNAVAILABLE")),
        "Temporary failure, try again",
    ));
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn store<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<'_, S>,
    tag: &Tag<'static>,
    set: &SequenceSet,
    kind: StoreType,
    response: StoreResponse,
    flags: &[Flag<'static>],
    uid: bool,
) -> std::io::Result<()> {
    if !session.require_selected(tag) {
        return Ok(());
    }
    if session.selected.as_ref().is_some_and(|s| s.read_only) {
        session.conn.status(tagged(
            tag,
            StatusKind::No,
            Some(code_other("READ-ONLY")),
            "Mailbox was opened with EXAMINE",
        ));
        return Ok(());
    }
    if flags.contains(&Flag::Deleted) {
        session.conn.status(tagged(
            tag,
            StatusKind::No,
            Some(code_other("CANNOT")),
            "\\Deleted cannot be set: the agent view is read-mostly and never expunges",
        ));
        return Ok(());
    }
    // Flags outside PERMANENTFLAGS (\Draft, keywords) are ignored.
    let named = FlagSet {
        seen: flags.contains(&Flag::Seen),
        flagged: flags.contains(&Flag::Flagged),
        answered: flags.contains(&Flag::Answered),
    };
    let op = match kind {
        StoreType::Replace => FlagOp::Replace,
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
    };
    let Some(indexes) = resolve(session, tag, set, uid) else {
        return Ok(());
    };
    let Some(user_id) = session.user.as_ref().map(|u| u.id) else {
        return Ok(());
    };
    let Some(sel) = session.selected.as_ref() else {
        return Ok(());
    };
    let ids: Vec<i64> = indexes.iter().map(|&i| sel.msgs[i].message_id).collect();
    let changes_anything = named != FlagSet::default() || op == FlagOp::Replace;
    let result = if changes_anything && !ids.is_empty() {
        session
            .shared_store()
            .write(move |c| view::store_flags_many(c, user_id, &ids, op, named))
            .await
            .map(Some)
    } else {
        Ok(None)
    };
    let after = match result {
        Ok(a) => a,
        Err(e) => {
            store_failed(session, tag, e);
            return Ok(());
        }
    };
    if let (Some(after), Some(sel)) = (after, session.selected.as_mut()) {
        for (&i, f) in indexes.iter().zip(after) {
            sel.msgs[i].flags = super::selected::bits(&f);
        }
    }
    if response == StoreResponse::Answer
        && let Some(sel) = session.selected.as_ref()
    {
        let updates: Vec<Data<'static>> = indexes
            .iter()
            .map(|&i| {
                let m = sel.msgs[i];
                let mut items = vec![MessageDataItem::Flags(flag_list(m.flags))];
                if uid {
                    items.push(MessageDataItem::Uid(nz(m.uid)));
                }
                Data::Fetch {
                    seq: nz(i as u32 + 1),
                    items: Vec1::try_from(items)
                        .unwrap_or_else(|_| Vec1::from(MessageDataItem::Uid(nz(m.uid)))),
                }
            })
            .collect();
        for d in updates {
            session.conn.data(d);
        }
    }
    session.updates(uid).await;
    session
        .conn
        .status(tagged(tag, StatusKind::Ok, None, "STORE completed"));
    Ok(())
}

/// THREAD=REFERENCES over the given messages (indexes into the sequence
/// map), numbered by UID or sequence number. The threading headers are
/// read from the stored mail in batches, as Dovecot reads them.
pub(super) async fn threads<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<'_, S>,
    indexes: &[usize],
    uid: bool,
) -> StoreResult<Vec<imap_types::extensions::thread::Thread>> {
    let Some(sel) = session.selected.as_ref() else {
        return Ok(Vec::new());
    };
    let wanted: Vec<(u32, i64)> = indexes
        .iter()
        .map(|&i| {
            let number = if uid { sel.msgs[i].uid } else { i as u32 + 1 };
            (number, sel.msgs[i].message_id)
        })
        .collect();
    let mut items = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(JOB_MESSAGES) {
        let chunk = chunk.to_vec();
        let part = session
            .shared_store()
            .read(move |c| {
                let ids: Vec<i64> = chunk.iter().map(|(_, id)| *id).collect();
                let number: std::collections::HashMap<i64, u32> =
                    chunk.iter().map(|(n, id)| (*id, *n)).collect();
                let mut out = Vec::with_capacity(chunk.len());
                view::with_raw_messages(c, &ids, |id, received_at, raw| {
                    if let Some(&n) = number.get(&id) {
                        out.push(super::thread::ThreadItem::from_message(
                            n,
                            raw,
                            received_at.div_euclid(1000),
                        ));
                    }
                    true
                })?;
                Ok(out)
            })
            .await?;
        items.extend(part);
    }
    // Mailbox order (ascending numbers) breaks ties between equal dates.
    items.sort_by_key(|i| i.id);
    Ok(super::thread::thread_references(&items))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    pub(super) fn shared_store(&self) -> &crate::store::Store {
        &self.shared.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_bare_lf_as_crlf() {
        assert_eq!(served_size(b"a\r\nb\r\n"), 6);
        assert_eq!(served_size(b"a\nb\n"), 6);
        assert_eq!(served_size(b"\n"), 2);
        assert_eq!(served_size(b""), 0);
    }

    #[test]
    fn literals_never_carry_nul() {
        let NString(Some(IString::Literal(l))) = literal(b"a\0b") else {
            panic!("literal expected");
        };
        assert_eq!(l.data(), b"a\x80b");
        let NString(Some(IString::Literal(l))) = literal(b"plain") else {
            panic!("literal expected");
        };
        assert_eq!(l.data(), b"plain");
    }

    #[test]
    fn dates_are_whole_seconds_utc() {
        let d = internal_date(1_700_000_000_123);
        assert_eq!(d.as_ref().timestamp(), 1_700_000_000);
        let d = internal_date(i64::MAX);
        assert_eq!(d.as_ref().timestamp(), 0);
    }
}
