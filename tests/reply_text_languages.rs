//! Visible reply per language and client family: the table cases of `fixtures/replies/*.txt`
//! (written for this project from each client's documented output, one file per language; see
//! `fixtures/replies/README.md` for the format), run through the public API. Prints a tally per
//! language and per client family (the figures in `bench/REPLY_TEXT.md`) and fails listing every
//! mismatch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use backchannel::reply_text::{visible_html, visible_text};

/// The pattern table itself (a data-only file), to check every entry has a case.
#[path = "../src/reply_text/patterns.rs"]
#[allow(dead_code)]
mod patterns;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `visible_text(input) == want`.
    Text,
    /// `visible_html(input) == want`.
    Html,
    /// `visible_text(input)` is the input itself: nothing may be cut.
    Keep,
    /// Each line is a client footer: stripped from below a short reply.
    Footers,
    /// Each line is a helpdesk marker: the reply ends above it.
    Markers,
}

struct Case {
    /// `file:line` of the case header.
    at: String,
    lang: String,
    client: String,
    kind: Kind,
    name: String,
    input: String,
    want: String,
}

const FOOTER_REPLY: &str = "Thanks, noted.";
const MARKER_REPLY: &str = "Done, shipped today.";
const MARKER_BELOW: &str = "Your request (4512) has been updated.\n\nAnna Agent, Nov 17, 2021, 15:32\n\nCould you ship the parts?";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/replies")
}

/// `\u{200e}`-style escapes, so invisible characters stay visible in the fixture files.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("\\u{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let decoded = after.find('}').and_then(|end| {
            let c = u32::from_str_radix(&after[..end], 16)
                .ok()
                .and_then(char::from_u32)?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("\\u{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Line ends trimmed and outer blank lines dropped: layout noise, not content.
fn tidy(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

fn parse_file(path: &Path, lang: &str) -> Vec<Case> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let mut cases = Vec::new();
    // (header line number, client, kind, name, input lines, want lines, in want)
    type Open<'a> = (
        usize,
        String,
        Kind,
        String,
        Vec<&'a str>,
        Vec<&'a str>,
        bool,
    );
    let mut open: Option<Open> = None;
    let close = |open: Option<Open>, cases: &mut Vec<Case>| {
        let Some((line, client, kind, name, input, want, _)) = open else {
            return;
        };
        let at = format!("{file}:{line}");
        let input = unescape(&input.join("\n"));
        let want = unescape(&want.join("\n"));
        let mut push = |name: String, input: String, want: String, kind: Kind| {
            cases.push(Case {
                at: at.clone(),
                lang: lang.to_string(),
                client: client.clone(),
                kind,
                name,
                input,
                want,
            });
        };
        match kind {
            Kind::Text | Kind::Html => push(name, input, want, kind),
            Kind::Keep => {
                let whole = tidy(&input);
                push(name, input, whole, Kind::Keep);
            }
            Kind::Footers => {
                for l in input.lines().filter(|l| !l.trim().is_empty()) {
                    push(
                        format!("{name}: {l}"),
                        format!("{FOOTER_REPLY}\n\n{l}\n"),
                        FOOTER_REPLY.to_string(),
                        Kind::Footers,
                    );
                }
            }
            Kind::Markers => {
                for l in input.lines().filter(|l| !l.trim().is_empty()) {
                    push(
                        format!("{name}: {l}"),
                        format!("{MARKER_REPLY}\n\n{l}\n\n{MARKER_BELOW}\n"),
                        MARKER_REPLY.to_string(),
                        Kind::Markers,
                    );
                }
            }
        }
    };
    for (n, line) in text.lines().enumerate() {
        if let Some(head) = line.strip_prefix("%%% ") {
            if head.trim() == "want" {
                let o = open
                    .as_mut()
                    .unwrap_or_else(|| panic!("{file}:{}: want without a case", n + 1));
                o.6 = true;
                continue;
            }
            close(open.take(), &mut cases);
            let mut words = head.split_whitespace();
            let client = words.next().unwrap_or_default().to_string();
            let kind = match words.next().unwrap_or_default() {
                "text" => Kind::Text,
                "html" => Kind::Html,
                "keep" => Kind::Keep,
                "footers" => Kind::Footers,
                "markers" => Kind::Markers,
                other => panic!("{file}:{}: unknown kind {other:?}", n + 1),
            };
            let name = words.collect::<Vec<_>>().join(" ");
            open = Some((n + 1, client, kind, name, Vec::new(), Vec::new(), false));
            continue;
        }
        match open.as_mut() {
            Some(o) if o.6 => o.5.push(line),
            Some(o) => o.4.push(line),
            // Comment lines above the first case.
            None => {}
        }
    }
    close(open.take(), &mut cases);
    cases
}

fn all_cases() -> Vec<Case> {
    let dir = fixtures();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            let lang = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_string();
            parse_file(p, &lang)
        })
        .collect()
}

fn run(case: &Case) -> String {
    match case.kind {
        Kind::Html => visible_html(&case.input),
        _ => visible_text(&case.input),
    }
}

#[derive(Default)]
struct Tally {
    passed: usize,
    total: usize,
}

fn table(title: &str, tallies: &BTreeMap<String, Tally>) {
    println!("\n| {title} | passed | cases |\n|---|---|---|");
    for (key, t) in tallies {
        println!("| {key} | {} | {} |", t.passed, t.total);
    }
}

#[test]
fn visible_reply_per_language_and_client() {
    let cases = all_cases();
    assert!(cases.len() > 100, "only {} cases found", cases.len());
    let mut by_lang: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_client: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_path: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let got = tidy(&run(case));
        let want = tidy(&case.want);
        let ok = got == want;
        let path = match case.kind {
            Kind::Html => "visible_html",
            _ => "visible_text",
        };
        for (map, key) in [
            (&mut by_lang, case.lang.as_str()),
            (&mut by_client, case.client.as_str()),
            (&mut by_path, path),
        ] {
            let t = map.entry(key.to_string()).or_default();
            t.total += 1;
            t.passed += usize::from(ok);
        }
        if !ok {
            failures.push(format!(
                "{} [{} {} {:?}] {}\n    got:  {got:?}\n    want: {want:?}",
                case.at, case.lang, case.client, case.kind, case.name
            ));
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "\nvisible reply table: {passed} passed, {} failed (of {})",
        failures.len(),
        cases.len()
    );
    table("language", &by_lang);
    table("client family", &by_client);
    table("path", &by_path);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The file holding a table language's cases (Slovak rides along with Czech).
fn fixture_lang(code: &str) -> &str {
    match code {
        "sk" => "cs",
        other => other,
    }
}

/// Every string of the pattern table is stored folded and shows up, as the client writes it,
/// in at least one case of its language: the table has no entry without a test.
#[test]
fn every_pattern_has_a_case() {
    let cases = all_cases();
    let mut missing = Vec::new();
    let mut unfolded = Vec::new();
    for lang in patterns::LANGUAGES {
        let own: Vec<String> = cases
            .iter()
            .filter(|c| c.lang == fixture_lang(lang.code))
            .flat_map(|c| c.input.lines().map(patterns::fold).collect::<Vec<_>>())
            .collect();
        assert!(!own.is_empty(), "{}: no fixture file", lang.code);
        // A line as the scan sees it: quote markers, bold stars, rules and spaces trimmed.
        let bare = |l: &str| {
            l.trim_start_matches(|c: char| {
                c == '>' || c == '*' || c == '-' || c == '"' || c.is_whitespace()
            })
            .to_string()
        };
        let field = |key: &str| {
            own.iter().any(|l| {
                let l = bare(l);
                l.match_indices(key).any(|(at, _)| {
                    let before_ok = at == 0 || l[..at].ends_with([' ', '*']);
                    let after = l[at + key.len()..].trim_start_matches([' ', '*']);
                    before_ok && after.starts_with(':')
                })
            })
        };
        let columns: [(&str, &[&str]); 13] = [
            ("opener", lang.openers),
            ("wrote", lang.wrote),
            ("from", lang.from),
            ("sent", lang.sent),
            ("date", lang.date),
            ("to", lang.to),
            ("subject", lang.subject),
            ("other field", lang.other_fields),
            ("header intro", lang.header_intros),
            ("original", lang.original),
            ("forwarded", lang.forwarded),
            ("forward line", lang.forward_lines),
            ("marker", lang.markers),
        ];
        for (column, strings) in columns {
            for &s in strings {
                if s.is_empty() || patterns::fold(s) != s {
                    unfolded.push(format!("{} {column} {s:?}", lang.code));
                }
                let found = match column {
                    "opener" | "header intro" => own.iter().any(|l| bare(l).starts_with(s)),
                    "from" | "sent" | "date" | "to" | "subject" | "other field" => field(s),
                    _ => own.iter().any(|l| l.contains(s)),
                };
                if !found {
                    missing.push(format!("{} {column} {s:?}", lang.code));
                }
            }
        }
        for &s in lang.marker_lines {
            if patterns::fold(s) != s {
                unfolded.push(format!("{} marker line {s:?}", lang.code));
            }
            let found = own
                .iter()
                .any(|l| l.trim().trim_end_matches(['.', '!']) == s);
            if !found {
                missing.push(format!("{} marker line {s:?}", lang.code));
            }
        }
        for footer in lang.footers {
            if patterns::fold(footer.prefix) != footer.prefix
                || patterns::fold(footer.suffix) != footer.suffix
            {
                unfolded.push(format!("{} footer {:?}", lang.code, footer.prefix));
            }
            let found = own.iter().any(|l| {
                let l = l.split("<http").next().unwrap_or("").trim();
                let l = l.trim_end_matches(['.', '!']);
                l.starts_with(footer.prefix) && l.ends_with(footer.suffix)
            });
            if !found {
                missing.push(format!(
                    "{} footer {:?}…{:?}",
                    lang.code, footer.prefix, footer.suffix
                ));
            }
        }
    }
    assert!(unfolded.is_empty(), "not stored folded: {unfolded:#?}");
    assert!(
        missing.is_empty(),
        "table entries without a case: {missing:#?}"
    );
}
