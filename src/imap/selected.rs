//! The selected mailbox of one session: its sequence map (UIDs, message
//! ids and the user's flags, in UID order) held in memory and brought up to
//! date incrementally from the store's change records, never by rescanning
//! the mailbox.

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::store::view::{self, Flags};
use crate::store::{Result, Store};

pub const SEEN: u8 = 1;
pub const FLAGGED: u8 = 2;
pub const ANSWERED: u8 = 4;
/// The read-only keyword `$unverified` (SPEC §4).
pub const UNVERIFIED: u8 = 8;

pub fn bits(f: &Flags) -> u8 {
    (if f.seen { SEEN } else { 0 })
        | (if f.flagged { FLAGGED } else { 0 })
        | (if f.answered { ANSWERED } else { 0 })
        | (if f.unverified { UNVERIFIED } else { 0 })
}

/// One message of the selected mailbox (16 bytes: a session holds one per
/// message of its selected mailbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    pub message_id: i64,
    pub flags: u8,
}

/// What changed since the last look, for untagged responses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Sequence numbers to report expunged, in the order to send them.
    pub expunged: Vec<u32>,
    /// New message count, if messages were added.
    pub exists: Option<u32>,
    /// (sequence number, uid, flags) whose flags changed elsewhere.
    pub flags: Vec<(u32, u32, u8)>,
}

impl Changes {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.expunged.is_empty() && self.exists.is_none() && self.flags.is_empty()
    }
}

pub struct Selected {
    pub mailbox: view::Mailbox,
    pub read_only: bool,
    pub msgs: Vec<Msg>,
    /// Changes up to this modseq are reflected in `msgs` (or `pending`).
    modseq: i64,
    /// UIDs that left the mailbox but were not yet reported (EXPUNGE may
    /// not be sent during FETCH, STORE and SEARCH).
    pending: Vec<u32>,
}

/// A sequence set resolved against the mailbox: indexes into `msgs`, in
/// ascending order without duplicates.
pub type Indexes = Vec<usize>;

#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// A message number beyond the mailbox (or `*` in an empty one).
    OutOfRange,
}

impl Selected {
    /// Loads a mailbox's sequence map for one user.
    pub async fn open(
        store: &Store,
        mailbox: view::Mailbox,
        user_id: i64,
        read_only: bool,
    ) -> Result<Selected> {
        let mailbox_id = mailbox.id;
        let (modseq, entries) = store
            .read(move |c| {
                // One snapshot: the modseq and the entries agree.
                let modseq = view::current_modseq(c)?;
                let entries = view::entries_with_flags(c, mailbox_id, user_id)?;
                Ok((modseq, entries))
            })
            .await?;
        // A fresh vector of the exact size: collecting in place would keep
        // the (three times larger) row buffer alive for the whole session.
        let mut msgs = Vec::with_capacity(entries.len());
        msgs.extend(entries.iter().map(|(e, f)| Msg {
            uid: e.uid,
            message_id: e.message_id,
            flags: bits(f),
        }));
        drop(entries);
        Ok(Selected {
            mailbox,
            read_only,
            msgs,
            modseq,
            pending: Vec::new(),
        })
    }

    pub fn exists(&self) -> u32 {
        self.msgs.len().min(u32::MAX as usize) as u32
    }

    pub fn first_unseen(&self) -> Option<u32> {
        self.msgs
            .iter()
            .position(|m| m.flags & SEEN == 0)
            .map(|i| i as u32 + 1)
    }

    /// Whether expunges are waiting to be reported.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn max_uid(&self) -> u32 {
        self.msgs.last().map(|m| m.uid).unwrap_or(0)
    }

    pub fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Resolves a message-number set. Numbers beyond the mailbox are an
    /// error (RFC 3501 §9 `seq-number`; a client's view always matches
    /// ours since expunges are reported only between commands).
    pub fn resolve_seq(&self, set: &SequenceSet) -> std::result::Result<Indexes, SetError> {
        let n = self.msgs.len() as u64;
        let value = |s: &SeqOrUid| -> std::result::Result<u64, SetError> {
            let v = match s {
                SeqOrUid::Asterisk => n,
                SeqOrUid::Value(v) => v.get() as u64,
            };
            if v == 0 || v > n {
                Err(SetError::OutOfRange)
            } else {
                Ok(v)
            }
        };
        let mut ranges = Vec::with_capacity(set.0.as_ref().len());
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => {
                    let v = value(s)?;
                    (v, v)
                }
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a)?, value(b)?);
                    (a.min(b), a.max(b))
                }
            };
            ranges.push((a - 1, b - 1));
        }
        Ok(merge(ranges))
    }

    /// Resolves a message-number set for SEARCH, where numbers beyond the
    /// mailbox simply match nothing.
    pub fn resolve_seq_lenient(&self, set: &SequenceSet) -> Indexes {
        let n = self.msgs.len() as u64;
        if n == 0 {
            return Vec::new();
        }
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Asterisk => n,
            SeqOrUid::Value(v) => v.get() as u64,
        };
        let mut ranges = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            };
            if a > n {
                continue;
            }
            ranges.push((a - 1, b.min(n) - 1));
        }
        merge(ranges)
    }

    /// Resolves a UID set: `*` is the highest UID in the mailbox; UIDs
    /// that do not exist are ignored (RFC 3501 §6.4.8).
    pub fn resolve_uid(&self, set: &SequenceSet) -> Indexes {
        if self.msgs.is_empty() {
            return Vec::new();
        }
        let max = self.max_uid();
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Asterisk => max,
            SeqOrUid::Value(v) => v.get(),
        };
        let mut ranges = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            };
            let start = self.msgs.partition_point(|m| m.uid < a);
            let end = self.msgs.partition_point(|m| m.uid <= b);
            if start < end {
                ranges.push((start as u64, end as u64 - 1));
            }
        }
        merge(ranges)
    }

    /// Reads what changed in the store since the last look and applies it.
    /// With `allow_expunge` false, messages that left the mailbox stay in
    /// the map (still fetchable) until a later call may report them.
    pub async fn refresh(
        &mut self,
        store: &Store,
        user_id: i64,
        allow_expunge: bool,
    ) -> Result<Changes> {
        let (mailbox_id, since) = (self.mailbox.id, self.modseq);
        let (modseq, added, removed, changed, added_flags) = store
            .read(move |c| {
                let modseq = view::current_modseq(c)?;
                if modseq == since {
                    return Ok((modseq, Vec::new(), Vec::new(), Vec::new(), HashMap::new()));
                }
                let added = view::added_since(c, mailbox_id, since)?;
                let removed = view::removed_since(c, mailbox_id, since)?;
                let changed = view::flags_changed_since(c, user_id, since)?;
                let ids: Vec<i64> = added.iter().map(|e| e.message_id).collect();
                let added_flags = view::flags(c, user_id, &ids)?;
                Ok((modseq, added, removed, changed, added_flags))
            })
            .await?;
        self.modseq = modseq;
        Ok(self.apply(added, removed, changed, added_flags, allow_expunge))
    }

    fn apply(
        &mut self,
        added: Vec<view::Entry>,
        removed: Vec<view::Entry>,
        changed: Vec<(i64, Flags)>,
        added_flags: HashMap<i64, Flags>,
        allow_expunge: bool,
    ) -> Changes {
        let mut out = Changes::default();
        for e in &removed {
            if self.index_of_uid(e.uid).is_some() && !self.pending.contains(&e.uid) {
                self.pending.push(e.uid);
            }
        }
        if allow_expunge && !self.pending.is_empty() {
            // Highest first: each EXPUNGE then leaves the numbers below it
            // unchanged.
            self.pending.sort_unstable_by(|a, b| b.cmp(a));
            for uid in std::mem::take(&mut self.pending) {
                if let Some(i) = self.index_of_uid(uid) {
                    self.msgs.remove(i);
                    out.expunged.push(i as u32 + 1);
                }
            }
        }
        let before = self.msgs.len();
        let mut max = self.max_uid();
        for e in added {
            if e.uid > max {
                let flags = added_flags.get(&e.message_id).map(bits).unwrap_or(0);
                self.msgs.push(Msg {
                    uid: e.uid,
                    message_id: e.message_id,
                    flags,
                });
                max = e.uid;
            }
        }
        if self.msgs.len() != before {
            out.exists = Some(self.exists());
        }
        if !changed.is_empty() {
            let lookup: Option<HashMap<i64, usize>> = (changed.len() > 8).then(|| {
                self.msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.message_id, i))
                    .collect()
            });
            for (message_id, flags) in changed {
                let idx = match &lookup {
                    Some(map) => map.get(&message_id).copied(),
                    None => self.msgs.iter().position(|m| m.message_id == message_id),
                };
                let Some(i) = idx else { continue };
                let b = bits(&flags);
                if self.msgs[i].flags != b {
                    self.msgs[i].flags = b;
                    out.flags.push((i as u32 + 1, self.msgs[i].uid, b));
                }
            }
        }
        out
    }
}

/// Sorted, merged ranges of indexes, expanded.
fn merge(mut ranges: Vec<(u64, u64)>) -> Indexes {
    ranges.sort_unstable();
    let mut out: Vec<usize> = Vec::new();
    let mut next = 0u64; // first index not yet emitted
    for (a, b) in ranges {
        let start = a.max(next);
        if start > b {
            continue;
        }
        out.extend((start..=b).map(|i| i as usize));
        next = b + 1;
    }
    out
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(uids: &[u32]) -> Selected {
        Selected {
            mailbox: view::Mailbox {
                id: 1,
                name: "INBOX".into(),
                kind: "inbox".into(),
                owner: None,
                parent_id: None,
                uidvalidity: 1,
                uidnext: uids.last().map(|u| u + 1).unwrap_or(1),
                highest_modseq: 0,
            },
            read_only: false,
            msgs: uids
                .iter()
                .map(|&uid| Msg {
                    uid,
                    message_id: uid as i64 * 10,
                    flags: 0,
                })
                .collect(),
            modseq: 0,
            pending: Vec::new(),
        }
    }

    fn set(s: &str) -> SequenceSet {
        s.parse().expect("set")
    }

    #[test]
    fn message_numbers() {
        let s = sel(&[3, 5, 9, 20]);
        assert_eq!(s.resolve_seq(&set("1:*")), Ok(vec![0, 1, 2, 3]));
        assert_eq!(s.resolve_seq(&set("*")), Ok(vec![3]));
        assert_eq!(s.resolve_seq(&set("*:2")), Ok(vec![1, 2, 3]));
        assert_eq!(s.resolve_seq(&set("3:1")), Ok(vec![0, 1, 2]));
        assert_eq!(s.resolve_seq(&set("2,1,2,4,1:2")), Ok(vec![0, 1, 3]));
        assert_eq!(s.resolve_seq(&set("5")), Err(SetError::OutOfRange));
        assert_eq!(s.resolve_seq(&set("2:5")), Err(SetError::OutOfRange));
        let empty = sel(&[]);
        assert_eq!(empty.resolve_seq(&set("*")), Err(SetError::OutOfRange));
        assert_eq!(empty.resolve_seq(&set("1:*")), Err(SetError::OutOfRange));
        assert_eq!(s.resolve_seq_lenient(&set("2:9")), vec![1, 2, 3]);
        assert_eq!(s.resolve_seq_lenient(&set("7:9")), Vec::<usize>::new());
        assert_eq!(empty.resolve_seq_lenient(&set("1:*")), Vec::<usize>::new());
    }

    #[test]
    fn uids() {
        let s = sel(&[3, 5, 9, 20]);
        assert_eq!(s.resolve_uid(&set("1:*")), vec![0, 1, 2, 3]);
        assert_eq!(s.resolve_uid(&set("4:9")), vec![1, 2]);
        assert_eq!(s.resolve_uid(&set("9:4")), vec![1, 2]);
        assert_eq!(s.resolve_uid(&set("6")), Vec::<usize>::new());
        // `n:*` with n beyond the last UID still names the last message.
        assert_eq!(s.resolve_uid(&set("21:*")), vec![3]);
        assert_eq!(s.resolve_uid(&set("*")), vec![3]);
        assert_eq!(s.resolve_uid(&set("20,3,5:5")), vec![0, 1, 3]);
        assert_eq!(s.resolve_uid(&set("4294967295")), Vec::<usize>::new());
        assert_eq!(sel(&[]).resolve_uid(&set("1:*")), Vec::<usize>::new());
    }

    fn entry(uid: u32) -> view::Entry {
        view::Entry {
            uid,
            message_id: uid as i64 * 10,
            modseq: 1,
        }
    }

    #[test]
    fn changes_apply_incrementally() {
        let mut s = sel(&[3, 5, 9]);
        let flags = Flags {
            seen: true,
            ..Default::default()
        };
        // 5 leaves, 12 arrives, 9 gets \Seen elsewhere; no expunge allowed.
        let c = s.apply(
            vec![entry(12)],
            vec![entry(5)],
            vec![(90, flags), (12345, flags)],
            HashMap::new(),
            false,
        );
        assert_eq!(c.expunged, Vec::<u32>::new());
        assert_eq!(c.exists, Some(4));
        assert_eq!(c.flags, vec![(3, 9, SEEN)]);
        // The same flags again are no change.
        let c = s.apply(vec![], vec![], vec![(90, flags)], HashMap::new(), true);
        assert_eq!(c.expunged, vec![2]);
        assert_eq!(c.exists, None);
        assert!(c.flags.is_empty());
        assert_eq!(
            s.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![3, 9, 12]
        );
        // An entry seen twice (a re-read) is not added twice.
        let c = s.apply(vec![entry(12)], vec![], vec![], HashMap::new(), true);
        assert!(c.is_empty());
        // Several expunges: highest first.
        let c = s.apply(
            vec![],
            vec![entry(3), entry(12)],
            vec![],
            HashMap::new(),
            true,
        );
        assert_eq!(c.expunged, vec![3, 1]);
        assert_eq!(s.msgs.len(), 1);
    }
}
