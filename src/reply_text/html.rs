//! HTML rendering for the visible-reply extractor: a forward-only tokenizer, a text writer that
//! prefixes `<blockquote>` content with `> `, client quote/signature containers, and character
//! references.

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
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
pub(super) fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
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

pub(super) fn has_class(attrs: &str, class: &str) -> bool {
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
    // Thunderbird's quote header ("On … wrote:", in the sender's language) sits in its own
    // div above the quote: dropping it by class works in every language.
    if has_class(attrs, "gmail_signature")
        || has_class(attrs, "moz-signature")
        || has_class(attrs, "moz-cite-prefix")
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

pub(super) fn render(html: &str, mode: Mode) -> String {
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
