//! Threading evaluation over real mailing-list threads (notmuch's test
//! corpora): each thread becomes a side conversation started with its
//! earliest message; every later message is parsed and routed by the real
//! `parse` + `route` code, as the gateway would on arrival, and must land
//! on its own thread. Prints the score; fails below 95 %.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backchannel::ingest::parse::parse;
use backchannel::ingest::route::{Class, Decision, Known, RouteInput, Source, route};
use backchannel::model::Token;

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if p.is_dir() {
        Some(p)
    } else {
        println!("notice: ../shared/corpus is absent; skipping the threading evaluation");
        None
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "eml") {
            out.push(p);
        }
    }
}

struct Mail {
    id: Option<String>,
    in_reply_to: Option<String>,
    references: Vec<String>,
    date: i64,
    name: String,
}

/// Union-find over Message-IDs (including ids of messages not in the set:
/// "ghosts"), which is how mail threads are defined.
struct Threads {
    parent: HashMap<String, String>,
}

impl Threads {
    fn find(&mut self, x: &str) -> String {
        let p = self.parent.get(x).cloned().unwrap_or_else(|| x.to_string());
        if p == x {
            self.parent.insert(x.to_string(), p.clone());
            return p;
        }
        let root = self.find(&p);
        self.parent.insert(x.to_string(), root.clone());
        root
    }
    fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

struct Memory {
    ids: HashMap<String, i64>,
    cited: HashMap<String, Vec<i64>>,
}

impl Memory {
    fn store(&mut self, m: &Mail, sc: i64) {
        if let Some(id) = &m.id {
            self.ids.insert(id.clone(), sc);
        }
        for r in m.in_reply_to.iter().chain(m.references.iter()) {
            let e = self.cited.entry(r.clone()).or_default();
            if !e.contains(&sc) {
                e.push(sc);
            }
        }
    }
}

impl Known for Memory {
    fn token(&self, _: &Token) -> Option<i64> {
        None
    }
    fn message_id(&self, id: &str) -> Vec<i64> {
        self.ids.get(id).copied().into_iter().collect()
    }
    fn cited_by(&self, id: &str) -> Vec<i64> {
        self.cited.get(id).cloned().unwrap_or_default()
    }
    fn is_sender(&self, _: &str) -> bool {
        false
    }
}

fn causal_order(mut mails: Vec<Mail>) -> Vec<Mail> {
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, BinaryHeap};
    mails.sort_by(|a, b| a.date.cmp(&b.date).then(a.name.cmp(&b.name)));
    let index: HashMap<String, usize> = mails
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.id.clone().map(|id| (id, i)))
        .collect();
    let mut waiting_on: Vec<usize> = vec![0; mails.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); mails.len()];
    for (i, m) in mails.iter().enumerate() {
        let cited: BTreeSet<usize> = m
            .in_reply_to
            .iter()
            .chain(m.references.iter())
            .filter_map(|r| index.get(r).copied())
            .filter(|&j| j != i)
            .collect();
        waiting_on[i] = cited.len();
        for j in cited {
            dependents[j].push(i);
        }
    }
    // Indices are already in date order, so the smallest ready index is the
    // earliest ready message.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..mails.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();
    let mut done = vec![false; mails.len()];
    let mut order = Vec::with_capacity(mails.len());
    while order.len() < mails.len() {
        let next = match ready.pop() {
            Some(Reverse(i)) => i,
            // A citation cycle (broken data): take the earliest left.
            None => match (0..mails.len()).find(|&i| !done[i]) {
                Some(i) => i,
                None => break,
            },
        };
        if done[next] {
            continue;
        }
        done[next] = true;
        order.push(next);
        for &d in &dependents[next] {
            waiting_on[d] = waiting_on[d].saturating_sub(1);
            if waiting_on[d] == 0 && !done[d] {
                ready.push(Reverse(d));
            }
        }
    }
    let mut slots: Vec<Option<Mail>> = mails.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Returns (messages routed, routed to the right thread).
fn evaluate(dir: &Path) -> (usize, usize, Vec<String>) {
    let mut paths = Vec::new();
    files(dir, &mut paths);
    let mails: Vec<Mail> = paths
        .iter()
        .filter_map(|p| {
            let raw = std::fs::read(p).ok()?;
            let m = parse(&raw);
            Some(Mail {
                id: m.message_id,
                in_reply_to: m.in_reply_to,
                references: m.references,
                date: m.date.unwrap_or(0),
                name: p.strip_prefix(dir).unwrap_or(p).display().to_string(),
            })
        })
        .filter(|m| m.id.is_some())
        .collect();
    let mut threads = Threads {
        parent: HashMap::new(),
    };
    for m in &mails {
        let Some(id) = &m.id else { continue };
        threads.find(id);
        for r in m.in_reply_to.iter().chain(m.references.iter()) {
            threads.union(id, r);
        }
    }
    // Arrival order: causal (a message arrives after every message of the
    // set it cites: a reply cannot precede what it answers), by date where
    // causality leaves a choice. Sender clocks are often wrong.
    let mails = causal_order(mails);
    let mut memory = Memory {
        ids: HashMap::new(),
        cited: HashMap::new(),
    };
    let mut thread_sc: HashMap<String, i64> = HashMap::new();
    let (mut routed, mut right) = (0, 0);
    let mut misses = Vec::new();
    for m in &mails {
        let Some(id) = m.id.clone() else { continue };
        let root = threads.find(&id);
        let next = thread_sc.len() as i64 + 1;
        match thread_sc.get(&root) {
            None => {
                // The thread's first message: the side conversation starts here.
                thread_sc.insert(root, next);
                memory.store(m, next);
            }
            Some(&sc) => {
                routed += 1;
                let input = RouteInput {
                    gateway_domain: "gw.example.com",
                    addresses: vec![(Source::Envelope, "reply@gw.example.com".to_string())],
                    message_id: m.id.as_deref(),
                    in_reply_to: m.in_reply_to.as_deref(),
                    references: &m.references,
                    class: Class::Reply,
                    forwarding: None,
                };
                match route(&input, &memory) {
                    Decision::Thread {
                        side_conversation, ..
                    } if side_conversation == sc => right += 1,
                    other => misses.push(format!("{}: {other:?}", m.name)),
                }
                memory.store(m, sc);
            }
        }
    }
    (routed, right, misses)
}

#[test]
fn notmuch_threads_land_together() {
    let Some(root) = corpus() else { return };
    let base = root.join("notmuch-test-corpora");
    let mut total = (0, 0);
    for sub in ["default", "lkml", "threading"] {
        let (routed, right, misses) = evaluate(&base.join(sub));
        let score = if routed == 0 {
            100.0
        } else {
            100.0 * right as f64 / routed as f64
        };
        println!("threading {sub}: {right}/{routed} replies on their thread ({score:.1} %)");
        for m in misses.iter().take(20) {
            println!("  miss {m}");
        }
        total.0 += routed;
        total.1 += right;
        assert!(routed > 0 || sub == "threading", "{sub}: nothing evaluated");
        assert!(score >= 95.0, "{sub}: {score:.1} % is below 95 %");
    }
    println!("threading overall: {}/{}", total.1, total.0);
}
