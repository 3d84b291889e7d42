//! Address lists for ENVELOPE as Dovecot's message-address parser reads them (with
//! FILL_MISSING): groups, routes, comments as names, and `MISSING_MAILBOX`, `MISSING_DOMAIN`,
//! `SYNTAX_ERROR` where the input is broken.
//!
//! Not mail-parser's address parser: it decodes encoded-words and drops what it cannot read,
//! while ENVELOPE carries the raw text and Dovecot's placeholders.

use imap_types::envelope::Address;

use super::rfc822::Rfc822;
use super::wire::{for_humans, nolf, nstring};

#[derive(Debug, Default, Clone)]
pub(super) struct MailAddr {
    pub(super) name: Option<Vec<u8>>,
    pub(super) route: Option<Vec<u8>>,
    pub(super) mailbox: Option<Vec<u8>>,
    pub(super) domain: Option<Vec<u8>>,
    pub(super) invalid: bool,
}

struct AddrParser<'a> {
    p: Rfc822<'a>,
    out: Vec<MailAddr>,
    addr: MailAddr,
    /// The last local part read, kept even when it was broken (Dovecot's `ctx->str`).
    s: Vec<u8>,
}

impl AddrParser<'_> {
    pub(super) fn add(&mut self) {
        self.out.push(std::mem::take(&mut self.addr));
    }

    fn parse_local_part(&mut self) -> i32 {
        self.s.clear();
        let ret = if self.p.peek() == Some(b'"') {
            self.p.parse_quoted_string(&mut self.s)
        } else {
            self.p.parse_dot_atom(&mut self.s)
        };
        if ret < 0 {
            return -1;
        }
        self.addr.mailbox = Some(self.s.clone());
        ret
    }

    pub(super) fn parse_domain(&mut self) -> i32 {
        let mut s = Vec::new();
        let ret = self.p.parse_domain(&mut s);
        if ret < 0 {
            return -1;
        }
        self.addr.domain = Some(s);
        ret
    }

    fn parse_domain_list(&mut self) -> i32 {
        let mut s = Vec::new();
        loop {
            if self.p.at_end() {
                return 0;
            }
            if self.p.peek() != Some(b'@') {
                break;
            }
            if !s.is_empty() {
                s.push(b',');
            }
            s.push(b'@');
            let ret = self.p.parse_domain(&mut s);
            if ret <= 0 {
                return ret;
            }
            while self.p.skip_lwsp() > 0 && self.p.peek() == Some(b',') {
                self.p.pos += 1;
            }
        }
        self.addr.route = Some(s);
        1
    }

    fn parse_angle_addr(&mut self) -> i32 {
        self.p.pos += 1; // '<'
        if self.p.skip_lwsp() <= 0 {
            return -1;
        }
        if self.p.peek() == Some(b'@') {
            if self.parse_domain_list() > 0 && self.p.peek() == Some(b':') {
                self.p.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if self.p.at_end() {
                    return -1;
                }
            }
            if self.p.skip_lwsp() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            if self.parse_local_part() <= 0 {
                return -1;
            }
            if self.p.peek() == Some(b'@') && self.parse_domain() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            return -1;
        }
        self.p.pos += 1;
        self.p.skip_lwsp()
    }

    fn parse_name_addr(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.parse_phrase(&mut s) <= 0 || self.p.peek() != Some(b'<') {
            return -1;
        }
        self.addr.name = if s.is_empty() { None } else { Some(s) };
        if self.parse_angle_addr() < 0 {
            self.addr.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.addr.invalid = true;
        }
        self.p.more()
    }

    fn parse_addr_spec(&mut self) -> i32 {
        let mut ret2 = -2;
        if let Some(c) = &mut self.p.last_comment {
            c.clear();
        }
        let quoted = self.p.peek() == Some(b'"');
        let mut ret = self.parse_local_part();
        if ret <= 0 {
            self.addr.invalid = true;
        }
        if ret != 0 && self.p.peek() == Some(b'@') {
            ret2 = self.parse_domain();
            if ret2 <= 0 {
                ret = ret2;
            }
        }
        let comment = self
            .p
            .last_comment
            .as_ref()
            .filter(|c| !c.is_empty())
            .cloned();
        if let Some(comment) = comment {
            self.addr.name = Some(comment);
        } else if ret2 == -2 {
            // A lone word is a mailbox; anything after it makes it all a display name.
            let mut s = std::mem::take(&mut self.s);
            s.push(b' ');
            let before = s.len();
            let _ = self.p.parse_phrase(&mut s);
            if s.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(s);
            } else if !quoted {
                self.addr.domain = Some(Vec::new());
            }
            self.addr.invalid = true;
            ret = -1;
        }
        ret
    }

    fn add_fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
            self.addr.invalid = true;
        }
        if self.addr.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.addr.domain = Some(b"MISSING_DOMAIN".to_vec());
            self.addr.invalid = true;
        }
        self.add();
    }

    fn parse_mailbox(&mut self) -> i32 {
        let start = self.p.pos;
        let mut ret = self.parse_name_addr();
        if ret < 0 {
            self.p.pos = start;
            self.addr = MailAddr::default();
            ret = self.parse_addr_spec();
            if self.addr.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.domain.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        if ret < 0 {
            self.addr.invalid = true;
        }
        self.add_fixed();
        ret
    }

    fn parse_group(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.parse_phrase(&mut s) <= 0 || self.p.peek() != Some(b':') {
            return -1;
        }
        self.p.pos += 1;
        let mut ret = self.p.skip_lwsp();
        if ret <= 0 {
            self.addr.invalid = true;
        }
        self.addr.mailbox = Some(s);
        self.add();
        if ret > 0 && self.p.peek() != Some(b';') {
            loop {
                let _ = self.parse_mailbox();
                if self.p.peek() != Some(b',') {
                    break;
                }
                self.p.pos += 1;
                if self.p.skip_lwsp() <= 0 {
                    ret = -1;
                    break;
                }
            }
        }
        if ret >= 0 {
            if self.p.peek() != Some(b';') {
                ret = -1;
            } else {
                self.p.pos += 1;
                ret = self.p.skip_lwsp();
            }
        }
        if ret < 0 {
            self.addr.invalid = true;
        }
        self.add();
        if ret == 0 { 0 } else { 1 }
    }

    fn parse_address(&mut self) -> i32 {
        let start = self.p.pos;
        let saved = self.out.len();
        let ret = self.parse_group();
        if ret < 0 {
            self.p.pos = start;
            self.out.truncate(saved);
            self.addr = MailAddr::default();
            return self.parse_mailbox();
        }
        ret
    }

    fn parse_list(&mut self) {
        // Dovecot bounds nothing here; a header is bounded by the message size anyway.
        loop {
            if self.parse_address() == 0 {
                break;
            }
            if self.p.peek() != Some(b',') {
                break;
            }
            self.p.pos += 1;
            let ret = self.p.skip_lwsp();
            if ret <= 0 {
                if ret < 0 {
                    self.add_fixed();
                }
                break;
            }
        }
    }
}

pub(super) fn parse_addresses(value: &[u8]) -> Vec<MailAddr> {
    let mut ap = AddrParser {
        p: Rfc822::with_comments(value),
        out: Vec::new(),
        addr: MailAddr::default(),
        s: Vec::new(),
    };
    if ap.p.skip_lwsp() > 0 {
        ap.parse_list();
    }
    ap.out
}

pub(super) fn imap_addresses(list: &[MailAddr]) -> Vec<Address<'static>> {
    list.iter()
        .map(|a| Address {
            name: nstring(a.name.as_deref().map(for_humans)),
            adl: nstring(a.route.as_deref().map(nolf)),
            mailbox: nstring(a.mailbox.as_deref().map(nolf)),
            host: nstring(a.domain.as_deref().map(nolf)),
        })
        .collect()
}
