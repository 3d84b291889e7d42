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
    /// Message-ID header value (raw; its first valid `<id>` is used).
    pub message_id: Option<String>,
    /// In-Reply-To header value (raw; its first valid `<id>` is used when References has none).
    pub in_reply_to: Option<String>,
    /// References header values (raw) or single ids; every valid `<id>` in them, in order.
    pub references: Vec<String>,
    /// Subject as text, RFC 2047 encoded-words already decoded (see [`mime::decode_header`]).
    pub subject: Option<String>,
    /// Sent date (Date header, else the internal date), seconds since the epoch.
    pub date: i64,
}

impl ThreadItem {
    /// The threading data of a stored message: its header fields, with `internal_date` when the
    /// Date header is missing or unreadable (as Dovecot reads dates).
    #[must_use]
    pub fn from_message(id: u32, raw: &[u8], internal_date: i64) -> ThreadItem {
        let h = mime::thread_headers(raw);
        let text = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
        ThreadItem {
            id,
            message_id: text(h.message_id),
            in_reply_to: text(h.in_reply_to),
            references: text(h.references).into_iter().collect(),
            subject: h.subject.map(mime::decode_header),
            date: h.date.and_then(mime::parse_date).unwrap_or(internal_date),
        }
    }
}

/// Every valid message id in `value`, in order.
fn message_ids(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    while let Some(id) = mime::next_message_id(bytes, &mut pos) {
        out.push(String::from_utf8_lossy(&id).into_owned());
    }
    out
}

fn first_message_id(value: &str) -> Option<String> {
    let mut pos = 0;
    mime::next_message_id(value.as_bytes(), &mut pos)
        .map(|id| String::from_utf8_lossy(&id).into_owned())
}

#[derive(Debug, Default, Clone)]
struct Container {
    /// Index into the items, `None` for a dummy.
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Threader<'a> {
    items: Vec<&'a ThreadItem>,
    nodes: Vec<Container>,
    /// Base subject and reply/forward flag of each item, computed once.
    subjects: Vec<(String, bool)>,
}

/// Deeper reply trees are cut: a subtree nested deeper than this becomes a thread of its own
/// (deep values would cost stack to drop, and no client shows 500 levels anyway).
const MAX_NESTING: usize = 500;

/// Threads `items` by RFC 5256 REFERENCES; the result is the body of a `* THREAD` response.
#[must_use]
pub fn thread_references(items: &[ThreadItem]) -> Vec<Thread> {
    let items: Vec<&ThreadItem> = items.iter().filter(|i| i.id != 0).collect();
    let mut t = Threader {
        subjects: items
            .iter()
            .map(|i| base_subject(i.subject.as_deref().unwrap_or("")))
            .collect(),
        items,
        nodes: Vec::new(),
    };
    t.link();
    let roots: Vec<usize> = (0..t.nodes.len())
        .filter(|&n| t.nodes[n].parent.is_none())
        .collect();
    let roots = t.prune(roots);
    let roots = t.sort(roots, false);
    let roots = t.merge_subjects(roots);
    let roots = t.cap_nesting(roots);
    let roots = t.sort(roots, true);
    t.to_threads(&roots)
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
        if self.nodes[a].children.is_empty() {
            // Nothing descends from a leaf (the usual case: a message linked as it arrives).
            return a == b;
        }
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
        for i in 0..self.items.len() {
            let item: &ThreadItem = self.items[i];
            let own_id = item.message_id.as_deref().and_then(first_message_id);
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
                && let Some(first) = item.in_reply_to.as_deref().and_then(first_message_id)
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

    /// Containers below `roots`, every child before its parent (iterative: reply chains can be
    /// as long as the mailbox).
    fn post_order(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                out.push(n);
            } else {
                stack.push((n, true));
                stack.extend(self.nodes[n].children.iter().rev().map(|&c| (c, false)));
            }
        }
        out
    }

    /// RFC 5256 step 3: drop childless dummies, splice dummies' children into their place
    /// (at the root only when there is a single child).
    fn prune(&mut self, roots: Vec<usize>) -> Vec<usize> {
        for n in self.post_order(&roots) {
            let children = std::mem::take(&mut self.nodes[n].children);
            let kept = self.prune_list(children, false, Some(n));
            self.nodes[n].children = kept;
        }
        self.prune_list(roots, true, None)
    }

    /// One level of step 3 (the children in `list` are pruned already).
    fn prune_list(&mut self, list: Vec<usize>, root: bool, parent: Option<usize>) -> Vec<usize> {
        let mut out = Vec::with_capacity(list.len());
        for c in list {
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
                    self.nodes[k].parent = parent;
                }
                out.extend(children);
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Detaches subtrees nested deeper than [`MAX_NESTING`] into threads of their own.
    fn cap_nesting(&mut self, mut roots: Vec<usize>) -> Vec<usize> {
        let mut stack: Vec<(usize, usize)> = roots.iter().map(|&r| (r, 0)).collect();
        while let Some((n, level)) = stack.pop() {
            let branch = self.nodes[n].msg.is_none() || self.nodes[n].children.len() > 1;
            let next = level + usize::from(branch);
            if next > MAX_NESTING {
                for c in std::mem::take(&mut self.nodes[n].children) {
                    self.nodes[c].parent = None;
                    roots.push(c);
                    stack.push((c, 0));
                }
                continue;
            }
            stack.extend(self.nodes[n].children.iter().map(|&c| (c, next)));
        }
        roots
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

    /// Sent date, then mailbox order. The date is compared as Dovecot stores it, in 32 bits
    /// (a date before 1970 sorts after 2038, one after 2106 wraps), so both servers agree.
    fn sort_key(&self, n: usize) -> (u32, u32) {
        self.lead(n).map_or((u32::MAX, u32::MAX), |m| {
            // Truncation is the point: the low 32 bits, as Dovecot's index keeps them.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let date = self.items[m].date as u32;
            (date, self.items[m].id)
        })
    }

    /// Sorts `list` by sent date (then mailbox order); dummies' children first, since a dummy
    /// sorts by its first child. `deep` sorts every level below too.
    fn sort(&mut self, mut list: Vec<usize>, deep: bool) -> Vec<usize> {
        let below: Vec<usize> = if deep {
            self.post_order(&list)
        } else {
            list.iter()
                .copied()
                .filter(|&n| self.nodes[n].msg.is_none())
                .collect()
        };
        for n in below {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            children.sort_by_key(|&c| self.sort_key(c));
            self.nodes[n].children = children;
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

    /// The imap-types forest, built bottom-up without recursion. A message with one reply
    /// continues its prefix (`(1 2 3 (4)(5))`); a dummy is `Nested`.
    fn to_threads(&self, roots: &[usize]) -> Vec<Thread> {
        // Per container: the prefix ids from the bottom of its chain up, and its answers.
        let mut chain: Vec<Vec<NonZeroU32>> = vec![Vec::new(); self.nodes.len()];
        let mut answers: Vec<Vec<Thread>> = vec![Vec::new(); self.nodes.len()];
        let mut built: Vec<Option<Thread>> = vec![None; self.nodes.len()];
        for n in self.post_order(roots) {
            let node = &self.nodes[n];
            let kids: Vec<Thread> = node
                .children
                .iter()
                .filter_map(|&c| built[c].take())
                .collect();
            let Some(m) = node.msg else {
                built[n] = match kids.len() {
                    0 => None,
                    1 => kids.into_iter().next(),
                    _ => Some(Thread::Nested {
                        answers: Vec2::unvalidated(kids),
                    }),
                };
                continue;
            };
            let single = match node.children.as_slice() {
                [c] if self.nodes[*c].msg.is_some() => Some(*c),
                _ => None,
            };
            if let Some(c) = single {
                chain[n] = std::mem::take(&mut chain[c]);
                answers[n] = std::mem::take(&mut answers[c]);
            } else if kids.len() == 1 {
                // A lone dummy reply: its replies answer this message.
                if let Some(Thread::Nested { answers: a }) = kids.into_iter().next() {
                    answers[n] = a.into_inner();
                }
            } else {
                answers[n] = kids;
            }
            chain[n].extend(NonZeroU32::new(self.items[m].id));
            // Materialise unless the parent continues this chain.
            let continued = node
                .parent
                .is_some_and(|p| self.nodes[p].msg.is_some() && self.nodes[p].children.len() == 1);
            if !continued {
                let mut prefix = std::mem::take(&mut chain[n]);
                prefix.reverse();
                let a = std::mem::take(&mut answers[n]);
                built[n] = Vec1::try_from(prefix).ok().map(|prefix| Thread::Members {
                    prefix,
                    answers: if a.len() >= 2 {
                        Some(Vec2::unvalidated(a))
                    } else {
                        None
                    },
                });
            }
        }
        roots.iter().filter_map(|&r| built[r].take()).collect()
    }
}

/// RFC 5256 §2.1 base subject of a (decoded) subject, upper-cased for comparing, and whether
/// extracting it removed a reply or forward marker; the steps as Dovecot implements them.
#[must_use]
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Case-folded (Dovecot compares title-cased text), blanks packed to one space.
    let mut s = String::with_capacity(subject.len());
    let mut last_space = false;
    for c in subject.chars() {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            if !last_space {
                s.push(' ');
            }
            last_space = true;
        } else {
            s.extend(c.to_uppercase());
            last_space = false;
        }
    }
    let mut reply = false;
    let mut start = 0usize;
    let mut end = s.len();
    loop {
        // (2) trailing blanks and "(FWD)".
        let b = s.as_bytes();
        while end > start {
            if b[end - 1] == b' ' {
                end -= 1;
            } else if end - start >= 5 && &b[end - 5..end] == b"(FWD)" {
                reply = true;
                end -= 5;
            } else {
                break;
            }
        }
        // (3)-(5) leaders and blobs.
        loop {
            let mut found = remove_leader(b, &mut start, end, &mut reply);
            if b.get(start) == Some(&b'[')
                && let Some(after) = skip_blob(b, start, end)
                && after < end
            {
                start = after;
                found = true;
            }
            if !found {
                break;
            }
        }
        // (6) "[FWD: … ]".
        if end - start >= 5 && &b[start..start + 5] == b"[FWD:" && b[end - 1] == b']' {
            reply = true;
            start += 5;
            end -= 1;
            continue;
        }
        break;
    }
    // Every cut is next to an ASCII byte, so on a character boundary.
    let base = s.get(start..end.max(start)).unwrap_or("").to_owned();
    (base, reply)
}

/// After a `[…]` at `i` (and one space after it), if it closes before `end`.
fn skip_blob(b: &[u8], i: usize, end: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    while j < end && b[j] != b'[' && b[j] != b']' {
        j += 1;
    }
    if j >= end || b[j] != b']' {
        return None;
    }
    j += 1;
    if j < end && b[j] == b' ' {
        j += 1;
    }
    Some(j)
}

/// Removes a leading space, or `*blob ("RE" / "FWD" / "FW") [" "] [blob] ":"`.
fn remove_leader(b: &[u8], start: &mut usize, end: usize, reply: &mut bool) -> bool {
    let mut found = false;
    if *start < end && b[*start] == b' ' {
        *start += 1;
        found = true;
    }
    let mut i = *start;
    while i < end && b[i] == b'[' {
        match skip_blob(b, i, end) {
            Some(j) => i = j,
            None => return found,
        }
    }
    let rest = &b[i..end];
    if rest.starts_with(b"RE") {
        i += 2;
    } else if rest.starts_with(b"FWD") {
        i += 3;
    } else if rest.starts_with(b"FW") {
        i += 2;
    } else {
        return found;
    }
    if i < end && b[i] == b' ' {
        i += 1;
    }
    if i < end && b[i] == b'[' {
        match skip_blob(b, i, end) {
            Some(j) => i = j,
            None => return found,
        }
    }
    if i >= end || b[i] != b':' {
        return found;
    }
    *start = i + 1;
    *reply = true;
    true
}

#[cfg(test)]
mod tests {
    //! Expected answers are Dovecot 2.3.19's `THREAD REFERENCES` for the same messages.

    use super::*;

    fn wire(threads: &[Thread]) -> String {
        threads.iter().map(ToString::to_string).collect()
    }

    fn msg(
        subject: Option<&str>,
        id: Option<&str>,
        irt: Option<&str>,
        refs: Option<&str>,
        date: Option<&str>,
    ) -> Vec<u8> {
        let mut h = String::new();
        for (name, v) in [
            ("Subject", subject),
            ("Message-ID", id),
            ("In-Reply-To", irt),
            ("References", refs),
            ("Date", date),
        ] {
            if let Some(v) = v {
                h.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        format!("{h}From: a@b.c\r\n\r\nbody\r\n").into_bytes()
    }

    #[test]
    fn tricky_threads_as_dovecot_threads_them() {
        let d = |h: u32| format!("Mon, 1 Jan 2024 {h:02}:00:00 +0000");
        let cases: Vec<Vec<u8>> = vec![
            msg(Some("Hello"), Some("<a@x>"), None, None, Some(&d(1))),
            msg(
                Some("Re: Hello"),
                Some("<b@x>"),
                Some("<a@x>"),
                None,
                Some(&d(2)),
            ),
            msg(
                Some("Re: Hello"),
                Some("<c@x>"),
                None,
                Some("<a@x> <b@x>"),
                Some(&d(3)),
            ),
            // A reply whose parents are missing: a dummy chain, pruned away.
            msg(
                Some("Re: [list] Re: Hello"),
                Some("<d@x>"),
                None,
                Some("<zz@x> <missing@x>"),
                Some(&d(4)),
            ),
            msg(Some("Fwd: Hello"), Some("<e@x>"), None, None, Some(&d(5))),
            msg(Some("Hello (fwd)"), Some("<f@x>"), None, None, Some(&d(6))),
            msg(Some("[fwd: Hello]"), Some("<g@x>"), None, None, Some(&d(0))),
            // Two replies to the same missing parent: a dummy root.
            msg(
                Some("Other"),
                Some("<h@x>"),
                None,
                Some("<missing2@x>"),
                Some(&d(7)),
            ),
            msg(
                Some("Other"),
                Some("<i@x>"),
                None,
                Some("<missing2@x>"),
                Some(&d(6)),
            ),
            // A reference loop.
            msg(
                Some("Loop"),
                Some("<j@x>"),
                None,
                Some("<k@x>"),
                Some(&d(8)),
            ),
            msg(
                Some("Loop"),
                Some("<k@x>"),
                None,
                Some("<j@x>"),
                Some(&d(9)),
            ),
            // A duplicate Message-ID, no subject, no headers at all.
            msg(Some("dup"), Some("<a@x>"), None, None, Some(&d(10))),
            msg(Some(""), None, None, None, Some(&d(11))),
            msg(None, None, None, None, None),
            // Subjects equal once decoded and case-folded.
            msg(
                Some("=?utf-8?q?Caf=C3=A9?="),
                Some("<l@x>"),
                None,
                None,
                Some(&d(12)),
            ),
            msg(Some("RE: CAFÉ"), Some("<m@x>"), None, None, Some(&d(13))),
            msg(
                Some("Re:  [x]  Re:   Spaces\t here "),
                Some("<n@x>"),
                None,
                None,
                Some(&d(14)),
            ),
            msg(Some("Spaces here"), Some("<o@x>"), None, None, Some(&d(15))),
            msg(Some("[blob]"), Some("<p@x>"), None, None, Some(&d(16))),
            msg(Some("[blob]"), Some("<q@x>"), None, None, Some(&d(17))),
            // In-Reply-To with an invalid id first; a parent whose Date is unreadable.
            msg(
                Some("Child"),
                Some("<r@x>"),
                Some("<nope> <s@x>"),
                None,
                Some(&d(18)),
            ),
            msg(Some("Parent"), Some("<s@x>"), None, None, Some("garbage")),
            msg(Some("same date a"), Some("<t@x>"), None, None, Some(&d(19))),
            msg(Some("same date b"), Some("<u@x>"), None, None, Some(&d(19))),
            msg(Some("Re: Other"), Some("<v@x>"), None, None, Some(&d(20))),
            msg(Some("Other"), Some("<w@x>"), None, None, Some(&d(21))),
            msg(
                Some("Fw: fw: Fwd: re: x"),
                Some("<y@x>"),
                None,
                Some("<w@x>"),
                Some(&d(22)),
            ),
            // References longer, shorter and conflicting with a later Message-ID.
            msg(
                Some("x"),
                Some("<z1@x>"),
                None,
                Some("<p1@x> <p2@x> <p3@x>"),
                Some(&d(23)),
            ),
            msg(
                Some("x"),
                Some("<z2@x>"),
                None,
                Some("<p1@x> <p2@x>"),
                Some(&d(2)),
            ),
            msg(Some("x"), Some("<p2@x>"), None, Some("<p0@x>"), Some(&d(1))),
        ];
        let items: Vec<ThreadItem> = cases
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let n = u32::try_from(i).unwrap_or(0);
                ThreadItem::from_message(n + 1, raw, 1_600_000_000 + i64::from(n) * 3600)
            })
            .collect();
        assert_eq!(
            wire(&thread_references(&items)),
            "(14)(22 21)(1 (7)(2 3)(4)(5)(6))(30 (29)(28))((9)(8)(25)(26 27))(11 10)(12)(13)(15 16)(18 17)((19)(20))(23)(24)"
        );
    }

    #[test]
    fn base_subjects() {
        let cases = [
            ("Hello", "HELLO", false),
            ("Re: Hello", "HELLO", true),
            ("RE:Re: re : hello", "HELLO", true),
            ("Fwd: [list] Re: Hello (fwd)", "HELLO", true),
            ("[list] Hello", "HELLO", false),
            ("[list]", "[LIST]", false),
            ("[fwd: Re: Hello]", "HELLO", true),
            ("Re[2]: Hello", "HELLO", true),
            ("  tabs\tand   spaces  ", "TABS AND SPACES", false),
            ("café", "CAFÉ", false),
            ("", "", false),
        ];
        for (subject, base, reply) in cases {
            assert_eq!(
                base_subject(subject),
                (base.to_owned(), reply),
                "{subject:?}"
            );
        }
    }

    #[test]
    fn a_long_reply_chain_is_one_prefix() {
        let n = 20_000u32;
        let items: Vec<ThreadItem> = (1..=n)
            .map(|i| ThreadItem {
                id: i,
                message_id: Some(format!("<{i}@x>")),
                in_reply_to: (i > 1).then(|| format!("<{}@x>", i - 1)),
                date: i64::from(i),
                ..ThreadItem::default()
            })
            .collect();
        let threads = thread_references(&items);
        assert_eq!(threads.len(), 1);
        let Thread::Members { prefix, answers } = &threads[0] else {
            panic!("a chain is members");
        };
        assert_eq!(prefix.as_ref().len(), n as usize);
        assert!(answers.is_none());
    }

    #[test]
    fn a_deep_branching_tree_is_capped_not_overflowed() {
        // Every message has a leaf reply and a reply that branches again.
        let levels = 3_000u32;
        let mut items = Vec::new();
        for l in 0..levels {
            let parent = (l > 0).then(|| format!("<b{}@x>", l - 1));
            items.push(ThreadItem {
                id: 2 * l + 1,
                message_id: Some(format!("<b{l}@x>")),
                in_reply_to: parent.clone(),
                date: i64::from(2 * l),
                ..ThreadItem::default()
            });
            items.push(ThreadItem {
                id: 2 * l + 2,
                message_id: Some(format!("<leaf{l}@x>")),
                in_reply_to: Some(format!("<b{l}@x>")),
                date: i64::from(2 * l + 1),
                ..ThreadItem::default()
            });
        }
        let text = wire(&thread_references(&items));
        let mut ids: Vec<u32> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=2 * levels).collect::<Vec<_>>());
    }

    #[test]
    fn zero_ids_are_left_out() {
        let items = vec![
            ThreadItem {
                id: 0,
                date: 1,
                ..ThreadItem::default()
            },
            ThreadItem {
                id: 5,
                date: 2,
                ..ThreadItem::default()
            },
        ];
        assert_eq!(wire(&thread_references(&items)), "(5)");
        assert!(thread_references(&[]).is_empty());
    }
}
