//! Visible reply of a vendor's email (quoted history and signature stripped), and HTML to text.
//!
//! Everything here is pure: strings in, strings out, no I/O, no panics, and every pass is a
//! single forward scan (with look-ahead bounded by a small constant), so a 1 MB quote or a
//! regex-backtracking trap costs no more than reading it. There are deliberately no regexes:
//! the patterns are simple enough to match by hand and that keeps the linear-time guarantee
//! obvious.
//!
//! Plain text is scanned line by line. A line can *end* the reply (Outlook separators and
//! header blocks, an unquoted `On … wrote:` quote, the `-- ` signature delimiter), be *dropped*
//! (`>`-quoted lines and the attribution line that introduces them), or be kept. Dropping
//! instead of cutting at `>` lines is what keeps interleaved inline answers. Client footers
//! ("Sent from my iPhone") and a `-Name` sign-off are trimmed only where they end what is left.
//! A forwarded message is content the vendor chose to send, so from a forward marker on
//! everything is kept verbatim.
//!
//! HTML is rendered to text with `<blockquote>` content prefixed by `> `, the way mail clients
//! quote, after cutting the client-specific containers that always hold history (Outlook's
//! `#divRplyFwdMsg`, Outlook for Mac's `#OLK_SRC_BODY_SECTION`, Yahoo's `yahoo_quoted`, …) and
//! dropping signature containers. The plain-text rules then decide the rest, so both paths
//! share one notion of "quote".

use std::borrow::Cow;

/// Visible reply of a plain-text body: new text only, quotes/attribution/signature removed, trimmed.
#[must_use]
pub fn visible_text(body: &str) -> String {
    let text = normalize_newlines(body);
    let lines: Vec<&str> = text.split('\n').collect();
    let reply = finish(&reply_lines(&lines));
    if reply.is_empty() {
        fallback(&lines)
    } else {
        reply
    }
}

/// Visible reply of an HTML body, returned as plain text (strip quoted blocks such as
/// `<blockquote type="cite">`, Gmail's `div.gmail_quote` (its attribution and blockquote; a
/// forward in it is kept), Outlook's `#divRplyFwdMsg` / "From:" header blocks after `<hr>` or
/// border-top divs, Apple Mail blockquotes, Yahoo's `yahoo_quoted`, etc., then convert to text).
#[must_use]
pub fn visible_html(html: &str) -> String {
    let cut = render(html, Mode::Visible);
    let lines: Vec<&str> = cut.split('\n').collect();
    let reply = finish(&reply_lines(&lines));
    if !reply.is_empty() {
        return reply;
    }
    // The cut may have removed everything (a bare forward of a quote, say): fall back to the
    // whole document so the agent still sees something.
    let full = render(html, Mode::Plain);
    let lines: Vec<&str> = full.split('\n').collect();
    fallback(&lines)
}

/// HTML to readable plain text (block elements become line breaks, `<br>` newline, entities decoded,
/// script/style/head dropped, links keep their text). Used when a message has no text part.
#[must_use]
pub fn html_to_text(html: &str) -> String {
    render(html, Mode::Plain)
}

// ---------------------------------------------------------------------------------------------
// Plain text
// ---------------------------------------------------------------------------------------------

fn normalize_newlines(body: &str) -> Cow<'_, str> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    if body.contains('\r') {
        Cow::Owned(body.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(body)
    }
}

/// Used when stripping left nothing: the agent should still see what the vendor sent, so give
/// back the whole text, minus a signature if one is recognisable.
fn fallback(lines: &[&str]) -> String {
    let end = lines
        .iter()
        .position(|l| !is_quoted(l) && is_signature_delimiter(l))
        .unwrap_or(lines.len());
    let without_sig = finish(&lines[..end]);
    if without_sig.is_empty() {
        finish(lines)
    } else {
        without_sig
    }
}

/// The lines of the vendor's own text, in order. Blank-line runs left where a quote was dropped
/// are collapsed to one so inline answers read as paragraphs.
fn reply_lines<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&'a str> = Vec::new();
    // Set after dropping something; suppresses blank lines until the next kept text.
    let mut gap = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if is_blank(line) {
            if !gap {
                out.push("");
            }
            i += 1;
            continue;
        }
        if is_quoted(line) {
            gap = true;
            i += 1;
            continue;
        }
        if is_forward_marker(line) {
            push_kept(&mut out, &mut gap, line);
            out.extend_from_slice(&lines[i + 1..]);
            break;
        }
        if is_signature_delimiter(line) || is_original_message_marker(line) {
            break;
        }
        if is_underscore_rule(line) && rule_introduces_quote(lines, i + 1) {
            break;
        }
        if let Some(found) = attribution_at(lines, i) {
            let after = i + found.lines;
            match next_non_blank(lines, after) {
                None => break,
                Some(j) if is_quoted(lines[j]) => {
                    gap = true;
                    i = after;
                    continue;
                }
                // An unquoted quote (Outlook web, Yahoo classic): everything below is history.
                Some(_) if found.strong => break,
                Some(_) => {}
            }
        }
        if header_block_at(lines, i) {
            break;
        }
        push_kept(&mut out, &mut gap, line);
        i += 1;
    }
    out
}

fn push_kept<'a>(out: &mut Vec<&'a str>, gap: &mut bool, line: &'a str) {
    if *gap {
        if out.last().is_some_and(|l| !is_blank(l)) {
            out.push("");
        }
        *gap = false;
    }
    out.push(line);
}

/// Trailing clean-up shared by every path: line ends trimmed, then trailing blank and
/// separator lines, client footers and a `-Name` sign-off removed, then the whole trimmed.
fn finish(lines: &[&str]) -> String {
    let mut v: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let first_text = v.iter().position(|l| !is_blank(l)).unwrap_or(v.len());
    loop {
        while v
            .last()
            .is_some_and(|l| is_blank(l) || is_separator_line(l))
        {
            v.pop();
        }
        let n = v.len();
        // Never strip the only text there is: a bare "Sent from my iPhone" is still a reply.
        let has_text_above = first_text + 1 < n;
        if has_text_above && is_client_footer(v[n - 1]) {
            v.pop();
            continue;
        }
        if has_text_above && is_blank(v[n - 2]) && is_dash_name_signature(v[n - 1]) {
            v.pop();
            continue;
        }
        break;
    }
    let start = v.iter().position(|l| !is_blank(l)).unwrap_or(v.len());
    v[start..].join("\n").trim().to_string()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn next_non_blank(lines: &[&str], from: usize) -> Option<usize> {
    (from..lines.len()).find(|&j| !is_blank(lines[j]))
}

/// A line made only of rule characters, left behind above a cut Outlook header block.
fn is_separator_line(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() >= 3 && t.chars().all(|c| matches!(c, '-' | '_' | '=' | '~' | '*'))
}

fn is_underscore_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 10 && t.bytes().all(|b| b == b'_')
}

/// An underscore rule is Outlook's reply separator when a header line follows it, and a
/// mailing-list footer when "… mailing list" does; anywhere else it may be the vendor's own.
fn rule_introduces_quote(lines: &[&str], from: usize) -> bool {
    next_non_blank(lines, from).is_some_and(|j| {
        let next = lines[j];
        header_kind(next).is_some() || contains_ignore_ascii_case(next, "mailing list")
    })
}

fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let n = needle.len();
    hay.len() >= n
        && hay
            .as_bytes()
            .windows(n)
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The text between the dashes of `-----Original Message-----` and the like, lowercased; None
/// for lines that are not dash-framed.
fn dash_framed_label(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with("---") || t.len() > 120 {
        return None;
    }
    Some(
        t.trim_matches(|c: char| c == '-' || c.is_whitespace())
            .to_lowercase(),
    )
}

fn is_original_message_marker(line: &str) -> bool {
    const LABELS: &[&str] = &[
        "original message",
        "ursprüngliche nachricht",
        "original-nachricht",
        "message d'origine",
        "message d\u{2019}origine",
        "mensaje original",
        "mensagem original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "originalmeddelande",
        "oprindelig meddelelse",
        "opprinnelig melding",
        "oryginalna wiadomość",
        "původní zpráva",
        "alkuperäinen viesti",
        "исходное сообщение",
    ];
    dash_framed_label(line).is_some_and(|l| LABELS.contains(&l.as_str()))
}

fn is_forward_marker(line: &str) -> bool {
    const LABELS: &[&str] = &[
        "forwarded message",
        "weitergeleitete nachricht",
        "message transféré",
        "mensaje reenviado",
        "mensagem encaminhada",
        "messaggio inoltrato",
        "doorgestuurd bericht",
        "vidarebefordrat meddelande",
        "videresendt meddelelse",
        "przekazana wiadomość",
        "пересылаемое сообщение",
    ];
    if dash_framed_label(line).is_some_and(|l| LABELS.contains(&l.as_str())) {
        return true;
    }
    let t = line.trim();
    t.len() <= 60 && {
        let l = t.to_lowercase();
        l == "begin forwarded message:"
            || l == "début du message réexpédié :"
            || l == "anfang der weitergeleiteten nachricht:"
            || l == "inicio del mensaje reenviado:"
    }
}

/// The `-- ` signature delimiter (also without its space, as many clients strip trailing
/// blanks). By convention everything below it is signature, so it ends the reply outright.
fn is_signature_delimiter(line: &str) -> bool {
    line.trim() == "--"
}

/// A mobile or webmail client's footer ("Sent from my iPhone", "Get Outlook for iOS"). Only
/// removed when it ends the reply: a vendor's sentence that happens to start "Sent from my
/// office…" and goes on with more text must survive.
fn is_client_footer(line: &str) -> bool {
    let t = line.trim();
    if t.len() > 100 {
        return false;
    }
    let l = t.to_lowercase();
    if let Some(device) = l.strip_prefix("sent from my ") {
        // "Sent from my desk, which is easier than my phone." is a sentence, not a footer.
        return device.split_whitespace().count() <= 5 && !device.contains(',');
    }
    const PREFIXES: &[&str] = &[
        "sent from iphone",
        "sent from ipad",
        "sent from yahoo mail",
        "sent from mail for windows",
        "sent from outlook",
        "sent from samsung",
        "sent from gmail",
        "get outlook for ios",
        "get outlook for android",
        "envoyé de mon ",
        "envoyé depuis mon ",
        "enviado desde mi ",
        "enviado do meu ",
        "inviato dal mio ",
    ];
    if PREFIXES.iter().any(|p| l.starts_with(p)) {
        return true;
    }
    // German clients put the verb last: "Von meinem iPhone gesendet".
    l.starts_with("von meinem ") && l.ends_with("gesendet")
}

/// `-Abhishek Kona`: a bare dash glued to a capitalised name, alone on the last line. A space
/// after the dash is a list item, so it is not treated as a sign-off.
fn is_dash_name_signature(line: &str) -> bool {
    let t = line.trim();
    let rest = if let Some(r) = t.strip_prefix("--") {
        r
    } else if let Some(r) = t.strip_prefix('-') {
        r
    } else if let Some(r) = t
        .strip_prefix('\u{2014}')
        .or_else(|| t.strip_prefix('\u{2013}'))
    {
        r.trim_start()
    } else {
        return false;
    };
    rest.chars().next().is_some_and(char::is_uppercase)
        && rest.split_whitespace().count() <= 4
        && rest.len() <= 60
        && !rest.ends_with(['.', ':', '!', '?'])
}

// --- attribution lines ("On <date>, <name> wrote:") ----------------------------------------

struct Attribution {
    /// How many physical lines it spans (clients wrap long ones).
    lines: usize,
    /// Strong enough to cut even when the quote below is not `>`-prefixed.
    strong: bool,
}

/// Longest line considered part of an attribution; keeps the join work constant per line.
const MAX_ATTRIBUTION_LINE: usize = 400;

fn attribution_at(lines: &[&str], i: usize) -> Option<Attribution> {
    let first = lines[i];
    if first.len() > MAX_ATTRIBUTION_LINE {
        return None;
    }
    if ends_with_colon(first) {
        return classify_attribution(first).map(|strong| Attribution { lines: 1, strong });
    }
    // Only join wrapped lines when the first one opens like an attribution; otherwise a
    // vendor's sentence right above a real attribution would be swallowed with it.
    let first_trim = first.trim_end();
    if !opens_attribution(first) || first_trim.ends_with(['.', '!', '?']) {
        return None;
    }
    let mut joined = first_trim.to_string();
    for span in 2..=3 {
        let &next = lines.get(i + span - 1)?;
        if is_blank(next)
            || is_quoted(next)
            || next.len() > MAX_ATTRIBUTION_LINE
            || opens_attribution(next)
        {
            return None;
        }
        joined.push(' ');
        joined.push_str(next.trim());
        if ends_with_colon(next) {
            return classify_attribution(&joined).map(|strong| Attribution {
                lines: span,
                strong,
            });
        }
    }
    None
}

fn ends_with_colon(line: &str) -> bool {
    line.trim_end().ends_with([':', '\u{ff1a}'])
}

fn strip_attribution_lead(line: &str) -> &str {
    line.trim_start()
        .trim_start_matches(|c: char| c == '-' || c.is_whitespace())
}

/// Openers of the attribution sentence in the languages clients localise it into, or a date
/// first (`02.04.2012 14:20 …`, common on Android and in Russian and Asian clients).
fn opens_attribution(line: &str) -> bool {
    let t = strip_attribution_lead(line);
    const OPENERS: &[&str] = &[
        "On ", "Le ", "Am ", "El ", "Op ", "Il ", "Em ", "Den ", "Dne ", "W dniu ", "Pada ",
    ];
    OPENERS.iter().any(|o| t.starts_with(o)) || starts_with_date(t)
}

/// `02.04.2012`, `2012/4/2`, `26.06.2014,`: digits with at least two date separators, so a
/// sentence that merely starts with a number is not taken for an attribution.
fn starts_with_date(t: &str) -> bool {
    let token = t
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(',');
    token.starts_with(|c: char| c.is_ascii_digit())
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '/' | '-'))
        && token
            .chars()
            .filter(|c| matches!(c, '.' | '/' | '-'))
            .count()
            >= 2
}

const WROTE_WORDS: &[&str] = &[
    "wrote",
    "writes",
    "écrit",
    "schrieb",
    "escribió",
    "escribio",
    "escreveu",
    "scrisse",
    "ha scritto",
    "schreef",
    "skrev",
    "napisał",
    "napisała",
    "napisal",
    "napsal",
    "napsala",
    "kirjoitti",
    "написал",
    "написала",
    "пишет",
    "írta",
    "yazdı",
    "geschreven",
    "pisze",
    "napísal",
    "写道",
    "寫道",
    "작성",
];

/// `Some(strong)` when `text` (ending in a colon) reads like an attribution.
///
/// Strong: the "wrote" verb ends the sentence or the sentence opens like an attribution, and a
/// date or address is present; such a line cuts even unquoted text below it. Weak: a "wrote"
/// verb somewhere, or a date plus an address (mail.ru, Yandex: `26.06.2014, 14:41, "A" <a@b>:`);
/// those only count when `>` lines follow, so a vendor's "as I wrote:" never cuts prose.
fn classify_attribution(text: &str) -> Option<bool> {
    let t = strip_attribution_lead(text).trim_end();
    let body = t.strip_suffix([':', '\u{ff1a}'])?.trim_end();
    let lower = body.to_lowercase();
    let wrote_anywhere = WROTE_WORDS.iter().any(|w| contains_word(&lower, w));
    let wrote_at_end = WROTE_WORDS
        .iter()
        .any(|w| lower.ends_with(w) && word_boundary_before(&lower, lower.len() - w.len()));
    let has_digit = lower.bytes().any(|b| b.is_ascii_digit());
    let has_at = lower.contains('@');
    if wrote_anywhere {
        let strong = (wrote_at_end || opens_attribution(body)) && (has_digit || has_at);
        Some(strong)
    } else if has_at && has_digit {
        Some(false)
    } else {
        None
    }
}

fn contains_word(hay: &str, word: &str) -> bool {
    hay.match_indices(word).any(|(at, _)| {
        let end = at + word.len();
        word_boundary_before(hay, at)
            && hay[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
    })
}

fn word_boundary_before(hay: &str, at: usize) -> bool {
    hay[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

// --- quoted header blocks (Outlook "From:/Sent:/To:/Subject:") --------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    From,
    Subject,
    Date,
    To,
    Other,
}

/// The field a `Key: value` line names, including bold `*From:*` and the localised names
/// Outlook, Thunderbird and webmails write.
fn header_kind(line: &str) -> Option<HeaderKind> {
    let t = line.trim_start().trim_start_matches('*').trim_start();
    let colon = t
        .char_indices()
        .take(32)
        .find(|&(_, c)| c == ':' || c == '\u{ff1a}')
        .map(|(at, _)| at)?;
    let key = t[..colon].trim_end().trim_end_matches('*').trim_end();
    if key.is_empty() {
        return None;
    }
    let key = key.to_lowercase();
    let kind = match key.as_str() {
        "from" | "von" | "de" | "da" | "van" | "från" | "fra" | "od" | "от" | "mittente" => {
            HeaderKind::From
        }
        "subject" | "betreff" | "objet" | "asunto" | "oggetto" | "onderwerp" | "ämne" | "emne"
        | "temat" | "тема" | "assunto" | "aihe" | "předmět" => HeaderKind::Subject,
        "sent"
        | "date"
        | "gesendet"
        | "datum"
        | "envoyé"
        | "enviado"
        | "enviada"
        | "fecha"
        | "inviato"
        | "data"
        | "verzonden"
        | "skickat"
        | "sendt"
        | "wysłano"
        | "odesláno"
        | "отправлено"
        | "дата"
        | "lähetetty" => HeaderKind::Date,
        "to" | "cc" | "bcc" | "an" | "à" | "a" | "para" | "aan" | "till" | "til" | "do"
        | "komu" | "кому" | "копия" | "kopie" | "cco" => HeaderKind::To,
        "reply-to" | "antwort an" | "répondre à" | "responder a" => HeaderKind::Other,
        _ => return None,
    };
    Some(kind)
}

/// A block of header lines that starts at `i` and names the sender, the subject and a date or
/// recipient: the header a client writes above unquoted history. Requiring all three keeps an
/// itinerary ("From: Berlin / To: Paris") from cutting the reply.
fn header_block_at(lines: &[&str], i: usize) -> bool {
    if header_kind(lines[i]).is_none() {
        return false;
    }
    let (mut from, mut subject, mut date_or_to) = (false, false, false);
    let mut blanks = 0;
    let mut continuation = 0;
    for line in lines.iter().skip(i).take(14) {
        if is_blank(line) {
            blanks += 1;
            if blanks > 1 {
                break;
            }
            continue;
        }
        if is_quoted(line) {
            break;
        }
        blanks = 0;
        match header_kind(line) {
            Some(kind) => {
                continuation = 0;
                match kind {
                    HeaderKind::From => from = true,
                    HeaderKind::Subject => subject = true,
                    HeaderKind::Date | HeaderKind::To => date_or_to = true,
                    HeaderKind::Other => {}
                }
            }
            // Long To:/Cc: lists wrap onto following lines.
            None => {
                continuation += 1;
                if continuation > 2 {
                    break;
                }
            }
        }
        if from && subject && date_or_to {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Whole document to text.
    Plain,
    /// Cut client quote containers, drop signature containers.
    Visible,
}

enum Token<'a> {
    Start { name: String, attrs: &'a str },
    End { name: String },
    Text(&'a str),
}

/// Elements whose content is never shown as message text (raw-text ones are consumed by the
/// tokenizer).
const RAW_TEXT: &[&str] = &[
    "script", "style", "title", "textarea", "xmp", "noembed", "noframes", "iframe",
];

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// A forward-only HTML tokenizer. It is lenient the way browsers are (stray `<` is text, an
/// unterminated comment or tag swallows the rest) and never looks back, so any input costs
/// one pass.
struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
    /// Raw-text content waiting to be skipped after its start tag was returned.
    raw_end_for: Option<String>,
}

impl<'a> Tokenizer<'a> {
    fn new(src: &'a str) -> Self {
        Tokenizer {
            src,
            pos: 0,
            raw_end_for: None,
        }
    }

    fn skip_raw_text(&mut self, name: &str) {
        let bytes = self.src.as_bytes();
        let mut at = self.pos;
        while let Some(off) = self.src[at..].find("</") {
            let start = at + off + 2;
            let end = start + name.len();
            if end <= bytes.len()
                && bytes[start..end].eq_ignore_ascii_case(name.as_bytes())
                && bytes
                    .get(end)
                    .is_none_or(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
            {
                self.pos = match self.src[end..].find('>') {
                    Some(gt) => end + gt + 1,
                    None => self.src.len(),
                };
                return;
            }
            at = start;
        }
        self.pos = self.src.len();
    }

    fn skip_past(&mut self, from: usize, needle: &str) {
        self.pos = match self.src[from..].find(needle) {
            Some(off) => from + off + needle.len(),
            None => self.src.len(),
        };
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(name) = self.raw_end_for.take() {
            self.skip_raw_text(&name);
        }
        let src = self.src;
        let bytes = src.as_bytes();
        loop {
            if self.pos >= src.len() {
                return None;
            }
            let rest = &src[self.pos..];
            let Some(lt) = rest.find('<') else {
                self.pos = src.len();
                return Some(Token::Text(rest));
            };
            if lt > 0 {
                self.pos += lt;
                return Some(Token::Text(&rest[..lt]));
            }
            let at = self.pos;
            match bytes.get(at + 1).copied() {
                Some(b'!') => {
                    if src[at..].starts_with("<!--") {
                        let body = at + 4;
                        if src[body..].starts_with('>') {
                            self.pos = body + 1;
                        } else if src[body..].starts_with("->") {
                            self.pos = body + 2;
                        } else {
                            self.skip_past(body, "-->");
                        }
                    } else if src[at..].starts_with("<![CDATA[") {
                        let body = at + 9;
                        let (text_end, next) = match src[body..].find("]]>") {
                            Some(off) => (body + off, body + off + 3),
                            None => (src.len(), src.len()),
                        };
                        self.pos = next;
                        return Some(Token::Text(&src[body..text_end]));
                    } else {
                        // Doctype and `<![if …]>` downlevel markers: bogus comments.
                        self.skip_past(at + 2, ">");
                    }
                }
                Some(b'?') => self.skip_past(at + 2, ">"),
                Some(b'/') if bytes.get(at + 2).is_some_and(u8::is_ascii_alphabetic) => {
                    let name_start = at + 2;
                    let name_end = tag_name_end(bytes, name_start);
                    let name = src[name_start..name_end].to_ascii_lowercase();
                    self.skip_past(name_end, ">");
                    return Some(Token::End { name });
                }
                Some(b'/') => self.skip_past(at + 2, ">"),
                Some(b) if b.is_ascii_alphabetic() => {
                    let name_start = at + 1;
                    let name_end = tag_name_end(bytes, name_start);
                    let Some(gt) = find_tag_end(bytes, name_end) else {
                        // EOF inside a tag: browsers drop the tag, and so do we.
                        self.pos = src.len();
                        return None;
                    };
                    let name = src[name_start..name_end].to_ascii_lowercase();
                    let attrs = &src[name_end..gt];
                    self.pos = gt + 1;
                    if RAW_TEXT.contains(&name.as_str()) && !attrs.trim_end().ends_with('/') {
                        self.raw_end_for = Some(name.clone());
                    }
                    return Some(Token::Start { name, attrs });
                }
                _ => {
                    self.pos = at + 1;
                    return Some(Token::Text("<"));
                }
            }
        }
    }
}

fn tag_name_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'/' && bytes[i] != b'>'
    {
        i += 1;
    }
    i
}

/// Index of the `>` closing a start tag, skipping quoted attribute values.
fn find_tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let mut quote: Option<u8> = None;
    // A quote only opens at the start of an attribute value (after `=`), as in browsers;
    // an apostrophe elsewhere in a broken tag must not swallow the document.
    let mut after_eq = false;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'>' => return Some(i),
                b'"' | b'\'' if after_eq => quote = Some(b),
                _ => {}
            },
        }
        if quote.is_none() {
            if b == b'=' {
                after_eq = true;
            } else if !b.is_ascii_whitespace() {
                after_eq = false;
            }
        }
        i += 1;
    }
    None
}

/// The value of attribute `name` in a raw attribute string (undecoded: only ids, classes and
/// types are inspected, which never need entities).
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let b = attrs.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        let key = &attrs[key_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = "";
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let v_start = i + 1;
                let v_end = b[v_start..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |p| v_start + p);
                value = &attrs[v_start..v_end];
                i = (v_end + 1).min(b.len());
            } else {
                let v_start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = &attrs[v_start..i];
            }
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        if i == key_start {
            // Stray `=` or similar: step over it so the loop always advances.
            i += 1;
        }
    }
    None
}

fn has_class(attrs: &str, class: &str) -> bool {
    attr(attrs, "class").is_some_and(|v| {
        v.split_ascii_whitespace()
            .any(|c| c.eq_ignore_ascii_case(class))
    })
}

enum Container {
    /// Everything from here to the end of the document is quoted history.
    CutRest,
    /// This element (a signature) is dropped; rendering continues after it.
    Drop,
}

/// Client-specific markers recognised by id or class (not by text, so they work in any
/// language). Gmail's `div.gmail_quote` is deliberately not here: Gmail also puts forwards in
/// it, and its quoted part is a `<blockquote>` anyway.
fn quote_container(attrs: &str) -> Option<Container> {
    if let Some(id) = attr(attrs, "id") {
        let id = id.to_ascii_lowercase();
        if id.ends_with("divrplyfwdmsg")
            || id.ends_with("appendonsend")
            || id.contains("olk_src_body_section")
            || id.starts_with("yahoo_quoted")
            || id == "mail-editor-reference-message-container"
        {
            return Some(Container::CutRest);
        }
        if id == "signature"
            || id == "applemailsignature"
            || id == "ms-outlook-mobile-signature"
            || id.starts_with("zm-_id_-sgn")
            || id.starts_with("ymail_android_signature")
        {
            return Some(Container::Drop);
        }
    }
    if has_class(attrs, "yahoo_quoted") || has_class(attrs, "OutlookMessageHeader") {
        return Some(Container::CutRest);
    }
    if has_class(attrs, "gmail_signature")
        || has_class(attrs, "moz-signature")
        || has_class(attrs, "protonmail_signature_block")
    {
        return Some(Container::Drop);
    }
    None
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "body"
            | "caption"
            | "center"
            | "dd"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "header"
            | "hgroup"
            | "legend"
            | "main"
            | "menu"
            | "nav"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "tfoot"
            | "thead"
    )
}

fn is_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

/// More `>` than this adds nothing for a reader and would let nested-blockquote bombs make the
/// output quadratic.
const MAX_QUOTE_PREFIX: usize = 16;

/// What Outlook writes for `<hr>` in its own text rendering; the plain-text rules recognise it.
const RULE: &str = "________________________________";

struct Writer {
    out: String,
    /// Consecutive `\n` at the end of `out`.
    trailing_nl: usize,
    /// Line breaks owed before the next text (1 = new line, 2 = blank line).
    pending_break: usize,
    pending_space: bool,
    quote_depth: usize,
    /// One entry per open `<blockquote>`: whether it quotes (it may only indent).
    blockquotes: Vec<bool>,
    pre_depth: usize,
    /// `None` for `<ul>`, `Some(next number)` for `<ol>`.
    lists: Vec<Option<u32>>,
    cells_in_row: usize,
    /// Whether the open `<p>` is Outlook's zero-margin `MsoNormal` (one line, not a paragraph).
    p_is_line: bool,
}

impl Writer {
    fn new() -> Self {
        Writer {
            out: String::new(),
            trailing_nl: 0,
            pending_break: 0,
            pending_space: false,
            quote_depth: 0,
            blockquotes: Vec::new(),
            pre_depth: 0,
            lists: Vec::new(),
            cells_in_row: 0,
            p_is_line: false,
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.trailing_nl > 0
    }

    fn block(&mut self, lines: usize) {
        self.pending_break = self.pending_break.max(lines);
        self.pending_space = false;
    }

    fn flush_breaks(&mut self) {
        if self.pending_break > 0 && !self.out.is_empty() {
            while self.trailing_nl < self.pending_break {
                self.out.push('\n');
                self.trailing_nl += 1;
            }
        }
        self.pending_break = 0;
    }

    fn newline(&mut self) {
        self.flush_breaks();
        self.out.push('\n');
        self.trailing_nl += 1;
        self.pending_space = false;
    }

    fn visible_char(&mut self, c: char) {
        self.flush_breaks();
        if self.at_line_start() {
            if self.quote_depth > 0 {
                for _ in 0..self.quote_depth.min(MAX_QUOTE_PREFIX) {
                    self.out.push('>');
                }
                self.out.push(' ');
            }
        } else if self.pending_space {
            self.out.push(' ');
        }
        self.pending_space = false;
        // A non-breaking space is layout, not content; agents want a plain space.
        self.out.push(if c == '\u{a0}' { ' ' } else { c });
        self.trailing_nl = 0;
    }

    fn text_char(&mut self, c: char) {
        if self.pre_depth > 0 {
            match c {
                '\n' => self.newline(),
                '\r' => {}
                _ => self.visible_char(c),
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c') {
            if !self.at_line_start() {
                self.pending_space = true;
            }
        } else {
            self.visible_char(c);
        }
    }

    fn text(&mut self, raw: &str) {
        decode_entities(raw, |c| self.text_char(c));
    }

    fn word(&mut self, s: &str) {
        for c in s.chars() {
            self.visible_char(c);
        }
    }

    fn start(&mut self, name: &str, attrs: &str) {
        match name {
            "br" => self.newline(),
            "hr" => {
                self.block(1);
                self.word(RULE);
                self.block(1);
            }
            "p" => {
                self.p_is_line = attr(attrs, "class")
                    .is_some_and(|c| c.to_ascii_lowercase().contains("msonormal"));
                self.block(if self.p_is_line { 1 } else { 2 });
            }
            "blockquote" => {
                self.block(1);
                let quotes = !is_indent_blockquote(attrs);
                self.blockquotes.push(quotes);
                if quotes {
                    self.quote_depth += 1;
                }
            }
            "pre" => {
                self.block(1);
                self.pre_depth += 1;
            }
            "ul" => {
                self.block(1);
                self.lists.push(None);
            }
            "ol" => {
                self.block(1);
                let start = attr(attrs, "start")
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .unwrap_or(1);
                self.lists.push(Some(start));
            }
            "li" => {
                self.block(1);
                match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let marker = format!("{n}.");
                        *n = n.saturating_add(1);
                        self.word(&marker);
                    }
                    _ => self.word("-"),
                }
                self.pending_space = true;
            }
            "tr" => {
                self.block(1);
                self.cells_in_row = 0;
            }
            "td" | "th" => {
                if self.cells_in_row > 0 && !self.at_line_start() {
                    self.pending_space = true;
                }
                self.cells_in_row += 1;
            }
            _ if is_heading(name) => self.block(2),
            _ if is_block(name) => self.block(1),
            _ => {}
        }
    }

    fn end(&mut self, name: &str) {
        match name {
            "p" => {
                self.block(if self.p_is_line { 1 } else { 2 });
                self.p_is_line = false;
            }
            "blockquote" => {
                self.block(1);
                if self.blockquotes.pop() == Some(true) {
                    self.quote_depth = self.quote_depth.saturating_sub(1);
                }
            }
            "pre" => {
                self.block(1);
                self.pre_depth = self.pre_depth.saturating_sub(1);
            }
            "ul" | "ol" => {
                self.block(1);
                self.lists.pop();
            }
            "li" | "tr" => self.block(1),
            _ if is_heading(name) => self.block(2),
            _ if is_block(name) => self.block(1),
            _ => {}
        }
    }

    /// Lines trimmed at the end and blank runs collapsed to one blank line. A blank line
    /// inside a quote gets the quote's `>` so the quote reads as one block, as clients write it.
    fn finish(self) -> String {
        let mut lines: Vec<&str> = Vec::new();
        for line in self.out.split('\n') {
            let line = line.trim_end();
            let blank = line.trim().is_empty();
            if blank && lines.last().is_none_or(|l| l.is_empty()) {
                continue;
            }
            lines.push(if blank { "" } else { line });
        }
        let mut out = String::with_capacity(self.out.len());
        for (k, line) in lines.iter().enumerate() {
            if line.is_empty() && k > 0 {
                let depth = quote_prefix_len(lines[k - 1])
                    .min(lines.get(k + 1).map_or(0, |next| quote_prefix_len(next)));
                out.push_str(&lines[k - 1][..depth]);
            }
            out.push_str(line);
            out.push('\n');
        }
        out.trim().to_string()
    }
}

/// Gmail's "Indent more" writes `<blockquote style="margin:0 0 0 40px;border:none;padding:0px">`
/// around the sender's own text; a quote always carries a class, a `type` or a border.
fn is_indent_blockquote(attrs: &str) -> bool {
    attr(attrs, "class").is_none()
        && attr(attrs, "type").is_none()
        && attr(attrs, "style").is_some_and(|s| {
            s.to_ascii_lowercase()
                .replace(' ', "")
                .contains("border:none")
        })
}

fn quote_prefix_len(line: &str) -> usize {
    line.bytes().take_while(|&b| b == b'>').count()
}

/// Elements whose whole subtree is not message text.
fn is_hidden_subtree(name: &str) -> bool {
    matches!(name, "head" | "template" | "svg" | "math" | "object")
}

fn render(html: &str, mode: Mode) -> String {
    let mut w = Writer::new();
    // The element being skipped and how deeply it is nested in itself.
    let mut skip: Option<(String, usize)> = None;
    for token in Tokenizer::new(html) {
        match token {
            Token::Start { name, attrs } => {
                if let Some((skip_name, depth)) = skip.as_mut() {
                    if *skip_name == name && !VOID.contains(&name.as_str()) {
                        *depth += 1;
                    } else if skip_name == "head" && name == "body" {
                        // An unclosed <head> ends where the body starts.
                        skip = None;
                    }
                    continue;
                }
                if RAW_TEXT.contains(&name.as_str()) {
                    continue;
                }
                if mode == Mode::Visible {
                    match quote_container(attrs) {
                        Some(Container::CutRest) => break,
                        Some(Container::Drop) if !VOID.contains(&name.as_str()) => {
                            skip = Some((name, 1));
                            continue;
                        }
                        _ => {}
                    }
                }
                if is_hidden_subtree(&name) {
                    skip = Some((name, 1));
                    continue;
                }
                w.start(&name, attrs);
            }
            Token::End { name } => {
                if let Some((skip_name, depth)) = skip.as_mut() {
                    if *skip_name == name {
                        *depth -= 1;
                        if *depth == 0 {
                            skip = None;
                        }
                    }
                    continue;
                }
                w.end(&name);
            }
            Token::Text(raw) => {
                if skip.is_none() {
                    w.text(raw);
                }
            }
        }
    }
    w.finish()
}

// --- character references --------------------------------------------------------------------

/// Decodes HTML character references in `raw`, feeding each resulting char to `emit`.
/// Unknown or malformed references are kept literally, as browsers do.
fn decode_entities(raw: &str, mut emit: impl FnMut(char)) {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        for c in rest[..amp].chars() {
            emit(c);
        }
        let after = &rest[amp + 1..];
        match decode_one(after) {
            Some((c, used)) => {
                emit(c);
                rest = &after[used..];
            }
            None => {
                emit('&');
                rest = after;
            }
        }
    }
    for c in rest.chars() {
        emit(c);
    }
}

/// Decodes the reference starting just after `&`; returns the char and the bytes consumed.
fn decode_one(s: &str) -> Option<(char, usize)> {
    let b = s.as_bytes();
    if b.first() == Some(&b'#') {
        let (hex, digits_start) = match b.get(1) {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
        let mut end = digits_start;
        while end < b.len()
            && (if hex {
                b[end].is_ascii_hexdigit()
            } else {
                b[end].is_ascii_digit()
            })
        {
            end += 1;
        }
        if end == digits_start {
            return None;
        }
        // Anything past 8 digits is out of range anyway; saturate instead of overflowing.
        let digits = &s[digits_start..end];
        let value = if digits.len() > 8 {
            u32::MAX
        } else {
            u32::from_str_radix(digits, if hex { 16 } else { 10 }).unwrap_or(u32::MAX)
        };
        let used = if b.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        };
        return Some((numeric_char(value), used));
    }
    let mut end = 0;
    while end < b.len() && end < 32 && b[end].is_ascii_alphanumeric() {
        end += 1;
    }
    if end == 0 {
        return None;
    }
    let name = &s[..end];
    if b.get(end) == Some(&b';') {
        return named_entity(name).map(|c| (c, end + 1));
    }
    // Legacy references without `;` that old mailers still emit; only when the name ends
    // at a non-alphanumeric, so "&copyright" stays text.
    match name {
        "amp" | "lt" | "gt" | "quot" | "nbsp" | "copy" | "reg" => {
            named_entity(name).map(|c| (c, end))
        }
        _ => None,
    }
}

fn numeric_char(value: u32) -> char {
    // HTML maps the C1 range to Windows-1252, which is what old Outlook meant by &#146; etc.
    const CP1252: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    match value {
        0 => '\u{fffd}',
        0x80..=0x9f => CP1252[(value - 0x80) as usize],
        _ => char::from_u32(value).unwrap_or('\u{fffd}'),
    }
}

/// Latin-1 entity names in code-point order from U+00A0.
const LATIN1: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

fn named_entity(name: &str) -> Option<char> {
    if let Some(pos) = LATIN1.iter().position(|&n| n == name) {
        return char::from_u32(0xa0 + pos as u32);
    }
    let c = match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "OElig" => '\u{152}',
        "oelig" => '\u{153}',
        "Scaron" => '\u{160}',
        "scaron" => '\u{161}',
        "Yuml" => '\u{178}',
        "fnof" => '\u{192}',
        "circ" => '\u{2c6}',
        "tilde" => '\u{2dc}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        "thinsp" => '\u{2009}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        "lrm" => '\u{200e}',
        "rlm" => '\u{200f}',
        "ndash" => '\u{2013}',
        "mdash" => '\u{2014}',
        "lsquo" => '\u{2018}',
        "rsquo" => '\u{2019}',
        "sbquo" => '\u{201a}',
        "ldquo" => '\u{201c}',
        "rdquo" => '\u{201d}',
        "bdquo" => '\u{201e}',
        "dagger" => '\u{2020}',
        "Dagger" => '\u{2021}',
        "bull" => '\u{2022}',
        "hellip" => '\u{2026}',
        "permil" => '\u{2030}',
        "prime" => '\u{2032}',
        "Prime" => '\u{2033}',
        "lsaquo" => '\u{2039}',
        "rsaquo" => '\u{203a}',
        "euro" => '\u{20ac}',
        "trade" => '\u{2122}',
        "larr" => '\u{2190}',
        "uarr" => '\u{2191}',
        "rarr" => '\u{2192}',
        "darr" => '\u{2193}',
        "harr" => '\u{2194}',
        "minus" => '\u{2212}',
        "hearts" => '\u{2665}',
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("empty", "", ""),
            ("only whitespace", " \n\t\n", ""),
            ("no quote", "Hello there.\n\nBye", "Hello there.\n\nBye"),
            (
                "gmail top post",
                "Hello\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <x@gmail.com> wrote:\n\n> Hi\n",
                "Hello",
            ),
            (
                "attribution split over two lines",
                "Yes\n\nOn Tue, Sep 25, 2012 at 8:59 AM, Chris W\n<n@github.com> wrote:\n\n> old\n",
                "Yes",
            ),
            (
                "attribution split over three lines",
                "Ok\n\nOn Dec 16, 2011, at 12:47 PM, Corey\n<r@x.com>\nwrote:\n\n> q\n",
                "Ok",
            ),
            ("CRLF normalised", "a\r\nb\r\n\r\n> q\r\n", "a\nb"),
            ("CR-only normalised", "a\rb\r", "a\nb"),
            (
                "french",
                "Merci\n\nLe lun. 2 avr. 2012 à 14:20, Jean <j@x.fr> a écrit :\n> Salut\n",
                "Merci",
            ),
            (
                "german with name after verb",
                "Danke\n\nAm 02.04.2012 um 14:20 schrieb Max Muster <m@x.de>:\n\n> Hallo\n",
                "Danke",
            ),
            (
                "spanish",
                "Gracias\n\nEl lun., 2 abr. 2012 a las 14:20, Juan (<j@x.es>) escribió:\n\n> Hola\n",
                "Gracias",
            ),
            (
                "attribution over unquoted history cuts",
                "Fine\n\nOn Mon, 2 Apr 2012, Bob <b@x.com> wrote:\nold text without markers\n",
                "Fine",
            ),
            (
                "outlook original message",
                "Sure\n\n-----Original Message-----\nFrom: a\nSent: b\n\nold",
                "Sure",
            ),
            (
                "zimbra original message",
                "Sure\n\n----- Original Message -----\nFrom: a\nold",
                "Sure",
            ),
            (
                "outlook underscore separator",
                "Done\n\n________________________________\nFrom: Bob <b@x.com>\nSent: Monday\nold",
                "Done",
            ),
            (
                "outlook header block",
                "Hi\n\nFrom: Bob [mailto:b@x.com]\nSent: Monday, April 2\nTo: Me\nSubject: Test\n\nold",
                "Hi",
            ),
            (
                "bold header block after dash rule",
                "Hi\n\n ------------\n\n*From:* Bob\n*Sent:* Monday\n*To:* me\n*Subject:* x\n\nold",
                "Hi",
            ),
            (
                "german outlook header block",
                "Hallo\n\nVon: Bob\nGesendet: Montag\nAn: Ich\nBetreff: Test\n\nalt",
                "Hallo",
            ),
            (
                "itinerary is not a header block",
                "Booked:\nFrom: Berlin\nTo: Paris\nDate: 3 May",
                "Booked:\nFrom: Berlin\nTo: Paris\nDate: 3 May",
            ),
            (
                "inline replies keep vendor lines",
                "On Tue, Apr 29, 2014 at 4:22 PM, Dev <d@x.com> wrote:\n\n> q1\n>\n\nanswer 1\n\n> q2\n\nanswer 2\n\n> tail\n",
                "answer 1\n\nanswer 2",
            ),
            (
                "bottom post",
                "On 04/02/2012 06:26 PM, Megan wrote:\n> Hi \nHello",
                "Hello",
            ),
            ("signature delimiter", "Thanks\n-- \nJohn\nAcme", "Thanks"),
            (
                "signature delimiter without space",
                "Thanks\n--\nJohn",
                "Thanks",
            ),
            (
                "double dash inside a line is text",
                "fix -- not a sig\nbye",
                "fix -- not a sig\nbye",
            ),
            (
                "dash list items are not a delimiter",
                "Prizes:\n-- FOUR gift cards\n-- EIGHT mugs",
                "Prizes:\n-- FOUR gift cards\n-- EIGHT mugs",
            ),
            ("iphone", "Here\n\nSent from my iPhone", "Here"),
            (
                "sent from my iphone above a quote",
                "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <b@x.com> wrote:\n\n> Hi",
                "Hello",
            ),
            (
                "get outlook",
                "Ok\n\nGet Outlook for iOS<https://aka.ms/o0ukef>",
                "Ok",
            ),
            (
                "mail for windows",
                "Ok\n\nSent from Mail for Windows 10",
                "Ok",
            ),
            ("yahoo", "Ok\n\nSent from Yahoo Mail on Android", "Ok"),
            ("german mobile", "Ok\n\nVon meinem iPhone gesendet", "Ok"),
            (
                "dash name sign-off",
                "Question?\n\n-Abhishek Kona\n\n",
                "Question?",
            ),
            (
                "dash list item kept",
                "Todo:\n\n- Buy milk",
                "Todo:\n\n- Buy milk",
            ),
            (
                "mailing list footer",
                "Text\n\n_______________________________________________\nfoo mailing list\nfoo@x.org",
                "Text",
            ),
            (
                "greedy on is not an attribution",
                "On your remote host you can run:\n\n  telnet 127.0.0.1 52698\n\nOk",
                "On your remote host you can run:\n\n  telnet 127.0.0.1 52698\n\nOk",
            ),
            (
                "as i wrote is not a cut without a quote",
                "As I wrote:\nthe answer is 42",
                "As I wrote:\nthe answer is 42",
            ),
            (
                "vendor line above attribution survives",
                "See you at the meeting\nOn Mon, 2 Apr 2012, Bob <b@x.com> wrote:\n> q",
                "See you at the meeting",
            ),
            (
                "forward is kept",
                "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x.com>\nDate: Mon\nSubject: S\nTo: B\n\nBody",
                "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x.com>\nDate: Mon\nSubject: S\nTo: B\n\nBody",
            ),
            (
                "apple forward is kept with its quote",
                "See below\n\nBegin forwarded message:\n\n> From: A\n> Subject: S",
                "See below\n\nBegin forwarded message:\n\n> From: A\n> Subject: S",
            ),
            (
                "whole message quoted falls back to the original",
                "> only a quote\n> here\n-- \nsig",
                "> only a quote\n> here",
            ),
            ("only a signature falls back to it", "-- \nJohn", "--\nJohn"),
            (
                "russian android attribution",
                "Hello\n02.04.2012 14:20 пользователь \"b@x.org\" <\nb@x.org> написал:\n\n> Hi\n>\n",
                "Hello",
            ),
            (
                "yahoo classic dashes before attribution",
                "Hi\n\n--- On Wed, 4/4/12, x@example.com <x@example.com> wrote:\n\nFrom: x\nSubject: s\n",
                "Hi",
            ),
            ("bom stripped", "\u{feff}Hi\n> q", "Hi"),
            (
                "footer-like prose is kept",
                "Sent from my office in Berlin\nThe parts ship Monday.",
                "Sent from my office in Berlin\nThe parts ship Monday.",
            ),
            (
                "a bare footer is still a reply",
                "Sent from my iPhone",
                "Sent from my iPhone",
            ),
            (
                "footer above an outlook mobile separator",
                "Yes\n\nGet Outlook for Android<https://aka.ms/ghei36>\n________________________________\nFrom: Bob <b@x.com>\nSent: Monday\nTo: me\nSubject: x\n\nold",
                "Yes",
            ),
            (
                "french outlook header block",
                "Oui\n\nDe : Jean <j@x.fr>\nEnvoyé : lundi 2 avril 2012 14:20\nÀ : Moi\nObjet : Test\n\nancien",
                "Oui",
            ),
            (
                "spanish outlook header block",
                "Sí\n\nDe: Juan <j@x.es>\nEnviado: lunes\nPara: Yo\nAsunto: Test\n\nviejo",
                "Sí",
            ),
            (
                "french gmail attribution wrapped before the verb",
                "Merci\n\nLe lun. 2 avr. 2012 à 14:20, Jean Dupont <jean@x.fr> a\nécrit :\n\n> Salut\n",
                "Merci",
            ),
            (
                "german gmail attribution",
                "Danke\n\nAm Mo., 2. Apr. 2012 um 14:20 Uhr schrieb Max <m@x.de>:\n\n> Hallo\n",
                "Danke",
            ),
            (
                "a sentence starting with sent from my is not a footer",
                "Here it is\n\nSent from my desk, which beats my phone.",
                "Here it is\n\nSent from my desk, which beats my phone.",
            ),
            (
                "delimiter after a mid-line double dash",
                "a correct -- signature follows.\n\n-- \nrick",
                "a correct -- signature follows.",
            ),
            (
                "outlook separator right under the reply",
                "Reply directly above\n________________________________________\nFrom: CRM [crm@x.com]\nSent: Friday, 23 March 2012 5:08 p.m.\nTo: John\nSubject: [contact:106] John\n\nA comment.",
                "Reply directly above",
            ),
            (
                "indented bullets survive, bold signature after quote goes",
                "first\n\n   - bullet one\n   - bullet two\n\n\nOn Fri, Feb 24, 2012 at 10:19 AM, <ex@x.com> wrote:\n\n> quoted\n\n\n-- \n\n*Joe | Director*",
                "first\n\n   - bullet one\n   - bullet two",
            ),
            (
                "header block without separator, signature in the history",
                "And another reply!\n\nFrom: Dan [mailto:d@x.com]\nSent: Monday, November 26, 2012 10:48 AM\nTo: W\nSubject: Re: New Issue\n\nA reply\n\n--\nIdeas",
                "And another reply!",
            ),
            (
                "top post with dash sign-off and quoted mailing-list footer",
                "Oh thanks.\n\nHaving it would be great.\n\n-Abhishek Kona\n\nOn 01/03/11 7:07 PM, Russell Brown wrote:\n> q\n> _______________________________________________\n> list mailing list\n\n_______________________________________________\nriak-users mailing list\n",
                "Oh thanks.\n\nHaving it would be great.",
            ),
            (
                "thunderbird german",
                "Ja\n\nAm 02.04.2012 14:20, schrieb Max Muster:\n> alt\n",
                "Ja",
            ),
            (
                "dutch gmail",
                "Ja\n\nOp ma 2 apr. 2012 om 14:20 schreef Jan <j@x.nl>:\n\n> oud\n",
                "Ja",
            ),
            (
                "dutch apple mail",
                "Ja\n\nOp 2 apr. 2012 om 14:20 heeft Jan <j@x.nl> het volgende geschreven:\n\n> oud\n",
                "Ja",
            ),
            (
                "italian",
                "Sì\n\nIl giorno lun 2 apr 2012 alle ore 14:20 Mario <m@x.it> ha scritto:\n\n> vecchio\n",
                "Sì",
            ),
            (
                "portuguese",
                "Sim\n\nEm seg., 2 de abr. de 2012 às 14:20, João <j@x.pt> escreveu:\n\n> velho\n",
                "Sim",
            ),
            (
                "chinese",
                "好的\n\n在 2012年4月2日，Taro <t@x.cn> 写道：\n\n> 旧\n",
                "好的",
            ),
            (
                "a sentence starting with a number is not joined as an attribution",
                "3 people came\nthey wrote:\nnot a quote",
                "3 people came\nthey wrote:\nnot a quote",
            ),
            (
                "nbsp lines are blank",
                "Hi\n\u{a0}\nJoe\n\n--- On Wed, 4/4/12, a@b.c wrote:\n\nold",
                "Hi\n\nJoe",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(visible_text(input), *want, "case {name:?}");
        }
    }

    #[test]
    fn html_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain", "<p>Hi</p>", "Hi"),
            (
                "gmail",
                "<div dir=\"ltr\">Hello</div><br><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Apr 2, 2012 at 6:26 PM, A &lt;<a href=\"mailto:a@x.com\">a@x.com</a>&gt; wrote:<br></div><blockquote class=\"gmail_quote\">Hi</blockquote></div>",
                "Hello",
            ),
            (
                "gmail forward kept",
                "<div>FYI</div><div class=\"gmail_quote\">---------- Forwarded message ---------<br>From: <b>A</b><br>Subject: S<br>To: B<br><br><div>Body</div></div>",
                "FYI\n---------- Forwarded message ---------\nFrom: A\nSubject: S\nTo: B\n\nBody",
            ),
            (
                "apple mail",
                "<div>Reply</div><div><br><blockquote type=\"cite\"><div>On Apr 3, 2012, at 4:19 PM, bob &lt;b@x.com&gt; wrote:</div><div>Hi</div></blockquote></div>",
                "Reply",
            ),
            (
                "outlook web",
                "<div>Thanks</div><div id=\"appendonsend\"></div><hr><div id=\"divRplyFwdMsg\"><b>From:</b> A<br><b>Sent:</b> B</div><div>old</div>",
                "Thanks",
            ),
            (
                "outlook desktop border-top div",
                "<div class=WordSection1><p class=MsoNormal>Ok<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p><div style='border:none;border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>From:</b> Bob &lt;b@x.com&gt; <br><b>Sent:</b> Monday<br><b>To:</b> me<br><b>Subject:</b> RE: x</p></div><p class=MsoNormal>old</p></div>",
                "Ok",
            ),
            (
                "yahoo",
                "<div>Sure</div><div id=\"yahoo_quoted_123\" class=\"yahoo_quoted\"><div>On Monday, Bob wrote:</div><div>old</div></div>",
                "Sure",
            ),
            (
                "outlook mac",
                "<div>Reply</div><span id=\"OLK_SRC_BODY_SECTION\"><div>From: Bob</div></span>",
                "Reply",
            ),
            (
                "gmail signature dropped",
                "<div>Hi</div><div><div dir=\"ltr\" class=\"gmail_signature\">Bob<br>Acme</div></div>",
                "Hi",
            ),
            (
                "inline html reply",
                "<div>On Mon, 2 Apr 2012, Bob &lt;b@x.com&gt; wrote:</div><blockquote type=\"cite\">q1</blockquote><div>a1</div><blockquote type=\"cite\">q2</blockquote>",
                "a1",
            ),
            (
                "outlook ios",
                "<div dir=\"ltr\">Yes</div><div id=\"ms-outlook-mobile-signature\">Get Outlook for iOS</div><hr style=\"display:inline-block\"><div id=\"divRplyFwdMsg\" dir=\"ltr\"><b>From:</b> Bob</div><div>old</div>",
                "Yes",
            ),
            (
                "iphone mail html",
                "<div dir=\"ltr\">Hello</div><div dir=\"ltr\"><br><div dir=\"ltr\">Sent from my iPhone</div><div dir=\"ltr\"><br><blockquote type=\"cite\">On Apr 3, 2012, at 4:19 PM, bob &lt;b@x.com&gt; wrote:<br><br></blockquote></div><blockquote type=\"cite\"><div dir=\"ltr\">Hi</div></blockquote></div>",
                "Hello",
            ),
            (
                "gmail indent is the vendor's text",
                "<div>Steps:</div><blockquote style=\"margin:0 0 0 40px;border:none;padding:0px\"><div>run it</div></blockquote><div>Thanks</div>",
                "Steps:\nrun it\nThanks",
            ),
            (
                "windows live mail",
                "<DIV dir=ltr><DIV>Hi.</DIV><DIV>&nbsp;</DIV><DIV>Alex</DIV><DIV style=\"DISPLAY: inline\"><DIV style=\"FONT: 10pt tahoma\"><DIV>&nbsp;</DIV><DIV style=\"BACKGROUND: #f5f5f5\"><DIV><B>From:</B> <A title=a@x.com href=\"mailto:a@x.com\">Al</A> </DIV><DIV><B>Sent:</B> Thursday, June 26, 2014 3:31 PM</DIV><DIV><B>To:</B> Alex</DIV><DIV><B>Subject:</B> Test</DIV></DIV></DIV><DIV>&nbsp;</DIV></DIV><DIV>Hello!</DIV></DIV>",
                "Hi.\n\nAlex",
            ),
            (
                "thunderbird with signature",
                "<p>Fine</p><div class=\"moz-signature\">-- <br>Bob</div><div class=\"moz-cite-prefix\">On 26.06.2014 14:41, Al wrote:<br></div><blockquote type=\"cite\">Hello</blockquote>",
                "Fine",
            ),
            (
                "only a quote falls back",
                "<blockquote>just quoted</blockquote>",
                "> just quoted",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(visible_html(input), *want, "case {name:?}");
        }
    }

    #[test]
    fn html_to_text_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("empty", "", ""),
            ("text only", "plain &amp; simple", "plain & simple"),
            ("br", "a<br>b<br/>c", "a\nb\nc"),
            ("paragraphs", "<p>a</p><p>b</p>", "a\n\nb"),
            (
                "mso paragraphs are lines",
                "<p class=MsoNormal>a</p><p class=MsoNormal>b</p>",
                "a\nb",
            ),
            ("divs", "<div>a</div><div>b</div>", "a\nb"),
            (
                "gmail blank line",
                "<div>a</div><div><br></div><div>b</div>",
                "a\n\nb",
            ),
            ("whitespace collapses", "a \n\t b", "a b"),
            ("inline tags join", "He<b>ll</b>o", "Hello"),
            (
                "link keeps text",
                "<a href=\"http://x\">click here</a>",
                "click here",
            ),
            (
                "script style head dropped",
                "<html><head><title>T</title><style>p{}</style></head><body><script>x()</script>Hi</body></html>",
                "Hi",
            ),
            ("unclosed head ends at body", "<head><meta x><body>Hi", "Hi"),
            ("comments dropped", "a<!-- hidden -->b<!---->c", "abc"),
            (
                "conditional comment dropped",
                "<!--[if gte mso 9]><xml><o:x/></xml><![endif]-->Hi",
                "Hi",
            ),
            (
                "numeric entities",
                "&#65;&#x42;&#x1F600;&#0;&#146;",
                "AB\u{1F600}\u{fffd}\u{2019}",
            ),
            (
                "named entities",
                "&eacute;&uuml;&mdash;&hellip;&euro;",
                "éü—…€",
            ),
            ("unknown entity literal", "&bogus; & &", "&bogus; & &"),
            (
                "legacy entity",
                "a &amp b &copy 2 &copyx",
                "a & b © 2 &copyx",
            ),
            ("nbsp becomes space", "a&nbsp;b", "a b"),
            ("list", "<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
            ("ordered list", "<ol><li>one<li>two</ol>", "1. one\n2. two"),
            (
                "table cells",
                "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
                "a b\nc",
            ),
            ("pre keeps spaces", "<pre>a  b\n  c</pre>", "a  b\n  c"),
            (
                "blockquote quoted",
                "x<blockquote>q<br>r</blockquote>y",
                "x\n> q\n> r\ny",
            ),
            (
                "blank line inside a quote keeps the marker",
                "<blockquote><div>a</div><div><br></div><div>b</div></blockquote>",
                "> a\n>\n> b",
            ),
            (
                "nested blockquote",
                "<blockquote>a<blockquote>b</blockquote></blockquote>",
                "> a\n>> b",
            ),
            ("hr", "a<hr>b", "a\n________________________________\nb"),
            ("stray lt", "1 < 2 <3", "1 < 2 <3"),
            ("uppercase tags", "<DIV>A</DIV><BR><P>B</P>", "A\n\nB"),
            ("cdata", "<![CDATA[x<y]]>", "x<y"),
            ("attribute with gt", "<a title=\"a>b\">t</a>", "t"),
        ];
        for (name, input, want) in cases {
            assert_eq!(html_to_text(input), *want, "case {name:?}");
        }
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let deep_quotes = "<blockquote>".repeat(10_000) + "x<br>y";
        let deep_lists = "<ol><li>".repeat(5_000);
        let inputs: Vec<String> = vec![
            "<".into(),
            "<a".into(),
            "<a href='".into(),
            "</".into(),
            "<!--".into(),
            "<!".into(),
            "<![CDATA[".into(),
            "<script>".into(),
            "<script></scrip".into(),
            "&".into(),
            "&#".into(),
            "&#x".into(),
            "&#xFFFFFFFFFFFF;".into(),
            "&#99999999999999999999;".into(),
            "&#xD800;".into(),
            "<<<<>>>>".into(),
            "</div></div></blockquote></ol>".into(),
            "<div class=\"gmail_signature\">never closed".into(),
            "<a b=c d='e' f=\"g\" / = ==>x".into(),
            "\u{0}\u{1}\u{fffd}\u{10ffff}".into(),
            "e\u{301}\u{200d}\u{1F468}\u{200D}\u{1F469}".into(),
            "On".into(),
            "On\n".into(),
            "On x\n".into(),
            ":".into(),
            "\u{ff1a}".into(),
            "From:".into(),
            "*".into(),
            "-".into(),
            "—".into(),
            "> ".into(),
            "\r".into(),
            "\r\n\r\n".into(),
            deep_quotes,
            deep_lists,
            "<".repeat(10_000),
            "&".repeat(10_000),
            "a'".repeat(10_000),
            ">\n".repeat(10_000),
            "On Mon wrote\n".repeat(1_000),
        ];
        for input in &inputs {
            let _ = visible_text(input);
            let _ = visible_html(input);
            let _ = html_to_text(input);
        }
        // Nesting bombs must not blow up the output size.
        let bomb = "<blockquote>".repeat(10_000) + &"x<br>".repeat(1_000);
        assert!(html_to_text(&bomb).len() < 100_000);
    }

    #[test]
    fn unterminated_tag_drops_the_rest() {
        assert_eq!(html_to_text("ok<div class='x"), "ok");
        assert_eq!(html_to_text("ok<!-- never closed"), "ok");
        assert_eq!(html_to_text("ok<style>p{}"), "ok");
    }

    #[test]
    fn attributes_parse() {
        let a = " id=x class = 'a  B' data-x=\"q\" checked";
        assert_eq!(attr(a, "id"), Some("x"));
        assert_eq!(attr(a, "CLASS"), Some("a  B"));
        assert_eq!(attr(a, "data-x"), Some("q"));
        assert_eq!(attr(a, "checked"), Some(""));
        assert_eq!(attr(a, "missing"), None);
        assert!(has_class(a, "b"));
    }
}
