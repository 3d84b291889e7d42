//! Every SMTP reply the listener sends, with its RFC 3463 enhanced status
//! code, in one place.

use std::fmt::Write as _;

/// One SMTP reply: basic code, enhanced code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub esc: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, esc: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            esc,
            text: text.into(),
        }
    }

    /// 5xx: the client did something wrong (counts toward the error limit).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    pub fn class(&self) -> &'static str {
        match self.code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        }
    }

    /// Appends the wire form (`code esc text CRLF`) to `out`. Text is
    /// stripped of CR/LF so nothing from a client can forge a reply line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let text: String = self
            .text
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        let mut line = String::with_capacity(text.len() + 16);
        if self.esc.is_empty() {
            let _ = write!(line, "{} {}\r\n", self.code, text);
        } else {
            let _ = write!(line, "{} {} {}\r\n", self.code, self.esc, text);
        }
        out.extend_from_slice(line.as_bytes());
    }
}

/// Writes a multi-line reply (EHLO): every line but the last uses `code-`.
pub fn write_multiline(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
}

/// The greeting. RFC 2034 §3 puts no enhanced code on it.
pub fn greeting(host: &str) -> Reply {
    Reply::new(220, "", format!("{host} ESMTP backchannel ready"))
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "OK")
}
pub fn helo_ok(host: &str, peer: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("{host} greets {peer}"))
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender OK")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient OK")
}
pub fn queued(id: i64) -> Reply {
    Reply::new(250, "2.0.0", format!("OK: queued as {id}"))
}
pub fn chunk_ok(n: usize) -> Reply {
    Reply::new(250, "2.0.0", format!("{n} octets received"))
}
pub fn bye(host: &str) -> Reply {
    Reply::new(221, "2.0.0", format!("{host} closing connection"))
}
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.0",
        "Cannot VRFY user; send mail and delivery will be attempted",
    )
}
pub fn help() -> Reply {
    Reply::new(
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS HELP",
    )
}
pub fn start_data() -> Reply {
    Reply::new(354, "", "Start mail input; end with <CRLF>.<CRLF>")
}
pub fn start_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

// 4xx
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{host} service shutting down, try again later"),
    )
}
pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "Too many connections, try again later")
}
pub fn too_many_from_ip() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many connections from your address, try again later",
    )
}
pub fn connection_rate() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many connections from your address per minute, try again later",
    )
}
/// The session is cut, or a connection refused, because the address failed
/// too many recipients (token guessing); it is blocked for a while.
pub fn blocked() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many failed recipients from your address, try again later",
    )
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors, closing connection")
}
pub fn timeout(host: &str) -> Reply {
    Reply::new(
        421,
        "4.4.2",
        format!("{host} timeout exceeded, closing connection"),
    )
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Too many recipients")
}
pub fn commit_failed() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Temporary failure storing the message, try again later",
    )
}
pub fn lookup_failed() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Temporary failure checking the recipient, try again later",
    )
}
pub fn tls_unavailable_now() -> Reply {
    Reply::new(454, "4.7.0", "TLS not available")
}

// 5xx
pub fn unrecognized() -> Reply {
    Reply::new(500, "5.5.1", "Command unrecognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.2", format!("Syntax: {usage}"))
}
pub fn bad_sender_address() -> Reply {
    Reply::new(501, "5.1.7", "Bad sender address syntax")
}
pub fn bad_recipient_address() -> Reply {
    Reply::new(501, "5.1.3", "Bad recipient address syntax")
}
pub fn invalid_parameter(param: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid value for parameter {param}"))
}
pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
}
pub fn not_implemented(cmd: &str) -> Reply {
    Reply::new(502, "5.5.1", format!("{cmd} not implemented"))
}
pub fn need_helo() -> Reply {
    Reply::new(503, "5.5.1", "Send HELO/EHLO first")
}
pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1", "Sender already specified")
}
pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "Need MAIL command first")
}
pub fn need_rcpt() -> Reply {
    Reply::new(503, "5.5.1", "No valid recipients")
}
pub fn bdat_data_mix() -> Reply {
    Reply::new(
        503,
        "5.5.1",
        "DATA and BDAT cannot be mixed in one transaction",
    )
}
pub fn already_tls() -> Reply {
    Reply::new(503, "5.5.1", "TLS already active")
}
pub fn size_exceeded() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}
pub fn relay_denied() -> Reply {
    Reply::new(550, "5.7.1", "Relaying denied")
}
pub fn thread_over_quota() -> Reply {
    Reply::new(
        552,
        "5.2.2",
        "This side conversation has reached its storage quota",
    )
}
pub fn sender_over_quota() -> Reply {
    Reply::new(
        451,
        "4.7.1",
        "Too much mail from this sender in the last hour; try again later",
    )
}
pub fn no_such_user() -> Reply {
    Reply::new(550, "5.1.1", "No such user here")
}
pub fn not_smtp() -> Reply {
    Reply::new(521, "5.7.0", "This is an SMTP server; closing connection")
}
