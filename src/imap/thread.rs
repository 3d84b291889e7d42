//! THREAD=REFERENCES (RFC 5256) as a pure function: message ids, references, subjects and
//! dates in, the imap-types thread forest of a `* THREAD` response out.
//!
//! The steps are RFC 5256 §3's: link by References (or the first In-Reply-To id), gather the
//! roots, prune dummies, sort, merge root threads with the same base subject (§2.1, with the
//! "a reply or forward goes under the original" rules), sort every set of siblings by sent date
//! (mailbox order breaking ties). No step looks at more than the links of one message at a time
//! except the loop checks, which walk one ancestry chain.

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_types::core::{Vec1, Vec2};
use imap_types::extensions::thread::Thread;

use super::mime;

/// What threading needs of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadItem {
    /// Sequence number or UID (the caller's choice); 0 is not a valid IMAP number and is left out.
    pub id: u32,
    /// Message-ID header value (raw; the first `<id>` in it is used).
    pub message_id: Option<String>,
    /// In-Reply-To header value (raw; its first `<id>` is used when References has none).
    pub in_reply_to: Option<String>,
    /// References header values or single ids; every `<id>` in them, in order.
    pub references: Vec<String>,
    /// Subject header value (raw; RFC 2047 encoded-words are decoded here).
    pub subject: Option<String>,
    /// Sent date (Date header, else the internal date), seconds since the epoch.
    pub date: i64,
}

impl ThreadItem {
    /// The threading data of a stored message: its header fields, with `internal_date` when the
    /// Date header is missing or unreadable.
    #[must_use]
    pub fn from_message(id: u32, raw: &[u8], internal_date: i64) -> ThreadItem {
        let h = mime::thread_headers(raw);
        let date = h
            .date
            .as_deref()
            .and_then(parse_date)
            .unwrap_or(internal_date);
        ThreadItem {
            id,
            message_id: h.message_id,
            in_reply_to: h.in_reply_to,
            references: h.references.into_iter().collect(),
            subject: h.subject,
            date,
        }
    }
}

fn parse_date(value: &str) -> Option<i64> {
    let mut line = value.as_bytes().to_vec();
    line.extend_from_slice(b"\r\n");
    match mail_parser::parsers::MessageStream::new(&line).parse_date() {
        mail_parser::HeaderValue::DateTime(dt) if dt.is_valid() => Some(dt.to_timestamp()),
        _ => None,
    }
}

/// Every `<…>` message id in `value`, brackets removed (a bracket-less value counts as one id).
fn message_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let id: String = after[..close]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !id.is_empty() {
            out.push(id);
        }
        rest = &after[close + 1..];
    }
    if out.is_empty() && !value.contains(['<', '>']) {
        let id = value.trim();
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            out.push(id.to_owned());
        }
    }
    out
}

#[derive(Debug, Default, Clone)]
struct Container {
    /// Index into the items, `None` for a dummy.
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Threader<'a> {
    items: &'a [ThreadItem],
    nodes: Vec<Container>,
    /// Base subject and reply/forward flag of each item, computed once.
    subjects: Vec<(String, bool)>,
}

/// Threads `items` by RFC 5256 REFERENCES; the result is the body of a `* THREAD` response.
#[must_use]
pub fn thread_references(items: &[ThreadItem]) -> Vec<Thread> {
    let items: Vec<&ThreadItem> = items.iter().filter(|i| i.id != 0).collect();
    let owned: Vec<ThreadItem> = items.into_iter().cloned().collect();
    let mut t = Threader {
        items: &owned,
        nodes: Vec::new(),
        subjects: owned
            .iter()
            .map(|i| base_subject(i.subject.as_deref().unwrap_or("")))
            .collect(),
    };
    t.link();
    let roots: Vec<usize> = (0..t.nodes.len())
        .filter(|&n| t.nodes[n].parent.is_none())
        .collect();
    let roots = t.prune(roots, true);
    let roots = t.sort(roots, false);
    let roots = t.merge_subjects(roots);
    let roots = t.sort(roots, true);
    roots.iter().filter_map(|&r| t.to_thread(r)).collect()
}

impl Threader<'_> {
    fn new_node(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Container {
            msg,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        let mut steps = 0usize;
        while let Some(c) = cur {
            if c == a {
                return true;
            }
            steps += 1;
            if steps > self.nodes.len() {
                return true;
            }
            cur = self.nodes[c].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn set_parent(&mut self, child: usize, parent: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// RFC 5256 step 1.
    fn link(&mut self) {
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, item) in self.items.iter().enumerate() {
            let own_id = item
                .message_id
                .as_deref()
                .and_then(|v| message_ids(v).into_iter().next());
            // A missing or duplicate Message-ID gets a container of its own.
            let node = match own_id {
                Some(id) => match ids.get(&id) {
                    Some(&n) if self.nodes[n].msg.is_none() => {
                        self.nodes[n].msg = Some(i);
                        n
                    }
                    Some(_) => self.new_node(Some(i)),
                    None => {
                        let n = self.new_node(Some(i));
                        ids.insert(id, n);
                        n
                    }
                },
                None => self.new_node(Some(i)),
            };
            let mut refs: Vec<String> = item
                .references
                .iter()
                .flat_map(|r| message_ids(r))
                .collect();
            if refs.is_empty()
                && let Some(first) = item
                    .in_reply_to
                    .as_deref()
                    .and_then(|v| message_ids(v).into_iter().next())
            {
                refs.push(first);
            }
            let mut prev: Option<usize> = None;
            for r in &refs {
                let n = match ids.get(r) {
                    Some(&n) => n,
                    None => {
                        let n = self.new_node(None);
                        ids.insert(r.clone(), n);
                        n
                    }
                };
                if let Some(p) = prev
                    && p != n
                    && self.nodes[n].parent.is_none()
                    && !self.is_ancestor(n, p)
                {
                    self.set_parent(n, p);
                }
                prev = Some(n);
            }
            // The last reference is the parent, replacing whatever an earlier message implied.
            self.unlink(node);
            if let Some(p) = prev
                && !self.is_ancestor(node, p)
            {
                self.set_parent(node, p);
            }
        }
    }

    /// RFC 5256 step 3: drop childless dummies, splice dummies' children into their place
    /// (at the root only when there is a single child).
    fn prune(&mut self, list: Vec<usize>, root: bool) -> Vec<usize> {
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let children = std::mem::take(&mut self.nodes[c].children);
            let children = self.prune(children, false);
            for &k in &children {
                self.nodes[k].parent = Some(c);
            }
            self.nodes[c].children = children;
            if self.nodes[c].msg.is_some() {
                out.push(c);
                continue;
            }
            let n = self.nodes[c].children.len();
            if n == 0 {
                continue;
            }
            if !root || n == 1 {
                let children = std::mem::take(&mut self.nodes[c].children);
                for &k in &children {
                    self.nodes[k].parent = self.nodes[c].parent;
                }
                out.extend(children);
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The item a container is sorted and named by: its own, or a dummy's first child's.
    fn lead(&self, n: usize) -> Option<usize> {
        let mut cur = n;
        for _ in 0..=self.nodes.len() {
            if let Some(m) = self.nodes[cur].msg {
                return Some(m);
            }
            cur = *self.nodes[cur].children.first()?;
        }
        None
    }

    fn sort_key(&self, n: usize) -> (i64, u32) {
        self.lead(n).map_or((i64::MAX, u32::MAX), |m| {
            (self.items[m].date, self.items[m].id)
        })
    }

    /// Sorts `list` by sent date (then mailbox order); dummies' children first, since a dummy
    /// sorts by its first child. `deep` sorts every level below too.
    fn sort(&mut self, mut list: Vec<usize>, deep: bool) -> Vec<usize> {
        for &c in &list {
            if deep || self.nodes[c].msg.is_none() {
                let children = std::mem::take(&mut self.nodes[c].children);
                self.nodes[c].children = self.sort(children, deep);
            }
        }
        list.sort_by_key(|&c| self.sort_key(c));
        list
    }

    /// RFC 5256 step 5: merge root threads with the same base subject.
    fn merge_subjects(&mut self, roots: Vec<usize>) -> Vec<usize> {
        let mut table: HashMap<String, usize> = HashMap::new();
        let subject_of = |t: &Self, n: usize| -> Option<(String, bool)> {
            let m = t.lead(n)?;
            let (s, reply) = &t.subjects[m];
            if s.is_empty() {
                None
            } else {
                Some((s.clone(), *reply))
            }
        };
        for &r in &roots {
            let Some((subject, reply)) = subject_of(self, r) else {
                continue;
            };
            match table.get(&subject) {
                None => {
                    table.insert(subject, r);
                }
                Some(&old) => {
                    let old_dummy = self.nodes[old].msg.is_none();
                    let old_reply = subject_of(self, old).is_some_and(|(_, rep)| rep);
                    let this_dummy = self.nodes[r].msg.is_none();
                    if !old_dummy && (this_dummy || (old_reply && !reply)) {
                        table.insert(subject, r);
                    }
                }
            }
        }
        // Each root keeps its slot; a new dummy takes over the slot of the message it adopts.
        let mut slots: Vec<Option<usize>> = roots.iter().map(|&r| Some(r)).collect();
        let mut slot_of: HashMap<usize, usize> =
            roots.iter().enumerate().map(|(i, &r)| (r, i)).collect();
        for &r in &roots {
            let Some((subject, reply)) = subject_of(self, r) else {
                continue;
            };
            let Some(&t) = table.get(&subject) else {
                continue;
            };
            if t == r {
                continue;
            }
            let t_dummy = self.nodes[t].msg.is_none();
            let r_dummy = self.nodes[r].msg.is_none();
            let t_reply = self.nodes[t].msg.is_some_and(|m| self.subjects[m].1);
            if t_dummy && r_dummy {
                let children = std::mem::take(&mut self.nodes[r].children);
                for k in children {
                    self.nodes[k].parent = Some(t);
                    self.nodes[t].children.push(k);
                }
            } else if t_dummy || (reply && !t_reply) {
                self.nodes[r].parent = Some(t);
                self.nodes[t].children.push(r);
            } else {
                let d = self.new_node(None);
                self.nodes[t].parent = Some(d);
                self.nodes[r].parent = Some(d);
                self.nodes[d].children = vec![t, r];
                table.insert(subject, d);
                if let Some(i) = slot_of.remove(&t) {
                    slots[i] = Some(d);
                    slot_of.insert(d, i);
                }
            }
            if let Some(i) = slot_of.remove(&r) {
                slots[i] = None;
            }
        }
        let out: Vec<usize> = slots.into_iter().flatten().collect();
        for &n in &out {
            self.nodes[n].parent = None;
        }
        out
    }

    fn to_thread(&self, n: usize) -> Option<Thread> {
        let node = &self.nodes[n];
        let Some(m) = node.msg else {
            let children: Vec<Thread> = node
                .children
                .iter()
                .filter_map(|&c| self.to_thread(c))
                .collect();
            return match children.len() {
                0 => None,
                1 => children.into_iter().next(),
                _ => Some(Thread::Nested {
                    answers: Vec2::unvalidated(children),
                }),
            };
        };
        let mut prefix: Vec<NonZeroU32> = Vec::new();
        prefix.extend(NonZeroU32::new(self.items[m].id));
        let mut cur = n;
        // A chain of only children is one prefix: (1 2 3 (4)(5)).
        while self.nodes[cur].children.len() == 1 {
            let c = self.nodes[cur].children[0];
            match self.nodes[c].msg {
                Some(cm) => {
                    prefix.extend(NonZeroU32::new(self.items[cm].id));
                    cur = c;
                }
                None => break,
            }
        }
        let children: Vec<Thread> = self.nodes[cur]
            .children
            .iter()
            .filter_map(|&c| self.to_thread(c))
            .collect();
        let prefix = Vec1::try_from(prefix).ok()?;
        let answers = match children.len() {
            0 => None,
            1 => {
                // A lone child that is itself a dummy or a branch: fold it into this prefix.
                return Some(merge_single(prefix, children.into_iter().next()?));
            }
            _ => Some(Vec2::unvalidated(children)),
        };
        Some(Thread::Members { prefix, answers })
    }
}

fn merge_single(prefix: Vec1<NonZeroU32>, child: Thread) -> Thread {
    match child {
        Thread::Members {
            prefix: more,
            answers,
        } => {
            let mut all = prefix.into_inner();
            all.extend(more.into_inner());
            Thread::Members {
                prefix: Vec1::unvalidated(all),
                answers,
            }
        }
        Thread::Nested { answers } => Thread::Members {
            prefix,
            answers: Some(answers),
        },
    }
}

/// RFC 5256 §2.1 base subject, case-folded, and whether extracting it removed a reply or
/// forward marker.
#[must_use]
pub fn base_subject(raw: &str) -> (String, bool) {
    let decoded = decode_words(raw);
    // (1) tabs and line breaks are spaces, runs of spaces one.
    let mut s = String::with_capacity(decoded.len());
    let mut space = false;
    for c in decoded.chars() {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            space = true;
        } else {
            if space && !s.is_empty() {
                s.push(' ');
            }
            space = false;
            s.push(c);
        }
    }
    if space && !s.is_empty() {
        s.push(' ');
    }
    let mut reply = false;
    let mut s: &str = &s;
    loop {
        // (2) trailing "(fwd)" and blanks.
        loop {
            let t = s.trim_end_matches(' ');
            if t.len() >= 5 && t[t.len() - 5..].eq_ignore_ascii_case("(fwd)") {
                s = &t[..t.len() - 5];
                reply = true;
            } else {
                s = t;
                break;
            }
        }
        // (3)–(5) leading blanks, "[blob]… Re:" leaders and lone blobs.
        loop {
            let before = s.len();
            loop {
                let t = s.trim_start_matches(' ');
                if let Some(rest) = strip_leader(t) {
                    s = rest;
                    reply = true;
                } else {
                    s = t;
                    break;
                }
            }
            if let Some(rest) = strip_blob(s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd: …]".
        if s.len() >= 6 && s[..5].eq_ignore_ascii_case("[fwd:") && s.ends_with(']') {
            s = &s[5..s.len() - 1];
            reply = true;
            continue;
        }
        break;
    }
    (s.to_lowercase(), reply)
}

/// `[…]` and the blanks after it.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let close = rest.find(['[', ']'])?;
    if rest.as_bytes()[close] != b']' {
        return None;
    }
    Some(rest[close + 1..].trim_start_matches([' ', '\t']))
}

/// `*blob ("re" / "fw" / "fwd") *WSP [blob] ":"`.
fn strip_leader(s: &str) -> Option<&str> {
    let mut t = s;
    while let Some(rest) = strip_blob(t) {
        t = rest;
    }
    let lower = t.get(..3).map(str::to_ascii_lowercase).unwrap_or_default();
    let mut rest = if lower.starts_with("fwd") {
        &t[3..]
    } else if lower.starts_with("re") || lower.starts_with("fw") {
        &t[2..]
    } else {
        return None;
    };
    rest = rest.trim_start_matches([' ', '\t']);
    if let Some(after) = strip_blob(rest) {
        rest = after;
    }
    rest.strip_prefix(':')
}

/// RFC 2047 encoded-words decoded (mail-parser's unstructured-field decoder).
fn decode_words(raw: &str) -> String {
    if !raw.contains("=?") {
        return raw.to_owned();
    }
    let mut line = raw.as_bytes().to_vec();
    line.extend_from_slice(b"\r\n");
    match mail_parser::parsers::MessageStream::new(&line).parse_unstructured() {
        mail_parser::HeaderValue::Text(t) => t.into_owned(),
        mail_parser::HeaderValue::TextList(l) => l.join(" "),
        _ => raw.to_owned(),
    }
}
