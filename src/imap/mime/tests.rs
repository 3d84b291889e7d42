//! Expected answers are Dovecot 2.3.19's for the same bytes (checked against a running
//! Dovecot with tests/clients/dovecot.sh), written the way imap-codec spells them: it sends
//! the fixed type names of text and message/rfc822 parts as "TEXT" and "MESSAGE" "RFC822"
//! where Dovecot echoes the header's spelling.

use super::*;
use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_types::body::SpecificFields;
use imap_types::core::{AString, Vec1};
use imap_types::fetch::MessageDataItem;
use imap_types::fetch::Part;
use imap_types::response::{Data, Response};

/// The wire form of one FETCH data item, without the `* 1 FETCH (NAME ` frame.
fn wire(item: MessageDataItem<'static>) -> String {
    let resp = Response::Data(Data::Fetch {
        seq: NonZeroU32::MIN,
        items: Vec1::from(item),
    });
    let out = String::from_utf8_lossy(&ResponseCodec::default().encode(&resp).dump()).into_owned();
    let body = out
        .strip_prefix("* 1 FETCH (")
        .and_then(|s| s.strip_suffix(")\r\n"))
        .unwrap_or(&out)
        .to_owned();
    let space = body.find(' ').map_or(0, |i| i + 1);
    body[space..].to_owned()
}

fn env(raw: &[u8]) -> String {
    wire(MessageDataItem::Envelope(envelope(raw)))
}

fn bs(raw: &[u8]) -> String {
    wire(MessageDataItem::BodyStructure(body_structure(raw, true)))
}

fn body(raw: &[u8]) -> String {
    wire(MessageDataItem::Body(body_structure(raw, false)))
}

fn part(path: &[u32]) -> Part {
    let nums: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
    Part(Vec1::try_from(nums).expect("a part path"))
}

/// `BODY[<section>]` as text (`None` for a part that does not exist).
fn sec(raw: &[u8], section: Option<Section<'_>>) -> Option<String> {
    super::section(raw, section.as_ref()).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn names(list: &[&'static str]) -> Vec1<AString<'static>> {
    let v: Vec<AString<'static>> = list
        .iter()
        .map(|n| AString::try_from(*n).expect("a field name"))
        .collect();
    Vec1::try_from(v).expect("names")
}

const NESTED: &[u8] = b"From: Outer <outer@example.com>\r\n\
    Subject: nested\r\n\
    MIME-Version: 1.0\r\n\
    Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
    \r\n\
    preamble\r\n\
    --outer\r\n\
    Content-Type: multipart/alternative; boundary=inner\r\n\
    \r\n\
    --inner\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: quoted-printable\r\n\
    \r\n\
    caf=C3=A9\r\n\
    --inner\r\n\
    Content-Type: text/html\r\n\
    \r\n\
    <p>hi</p>\r\n\
    --inner--\r\n\
    --outer\r\n\
    Content-Type: message/rfc822\r\n\
    Content-Disposition: attachment; filename=\"fwd.eml\"\r\n\
    \r\n\
    From: inner@example.org\r\n\
    Subject: =?utf-8?q?caf=C3=A9?=\r\n\
    Message-ID: <in@example.org>\r\n\
    \r\n\
    inner body\r\n\
    --outer--\r\n\
    epilogue\r\n";

#[test]
fn simple_text_message() {
    let raw = b"From: A <a@example.com>\r\nSubject: hi\r\n\r\nhello\r\n";
    assert_eq!(
        env(raw),
        r#"(NIL "hi" (("A" NIL "a" "example.com")) (("A" NIL "a" "example.com")) (("A" NIL "a" "example.com")) NIL NIL NIL NIL NIL)"#
    );
    assert_eq!(
        body(raw),
        r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1)"#
    );
}

#[test]
fn nested_multiparts_and_an_attached_message() {
    assert_eq!(
        bs(NESTED),
        concat!(
            r#"((("TEXT" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0 NIL NIL NIL NIL)"#,
            r#"("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)"#,
            r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 99 (NIL "=?utf-8?q?caf=C3=A9?=" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL "<in@example.org>") ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) 4 NIL ("attachment" ("filename" "fwd.eml")) NIL NIL)"#,
            r#" "mixed" ("boundary" "outer") NIL NIL NIL)"#
        )
    );
    assert_eq!(
        body(NESTED),
        concat!(
            r#"((("TEXT" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0)("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0) "alternative")"#,
            r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 99 (NIL "=?utf-8?q?caf=C3=A9?=" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL "<in@example.org>") ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0) 4) "mixed")"#
        )
    );
}

#[test]
fn sections_of_nested_parts() {
    let raw = NESTED;
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1, 1])))).as_deref(),
        Some("caf=C3=A9")
    );
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1, 2])))).as_deref(),
        Some("<p>hi</p>")
    );
    assert_eq!(
        sec(raw, Some(Section::Mime(part(&[1, 2])))).as_deref(),
        Some("Content-Type: text/html\r\n\r\n")
    );
    // A message/rfc822 part: its body is the whole message, its HEADER and TEXT the
    // message's, and its part 1 the message's (non-multipart) body.
    let inner = "From: inner@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <in@example.org>\r\n\r\ninner body";
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[2])))).as_deref(),
        Some(inner)
    );
    assert_eq!(
        sec(raw, Some(Section::Header(Some(part(&[2]))))).as_deref(),
        Some(&inner[..inner.len() - "inner body".len()])
    );
    assert_eq!(
        sec(raw, Some(Section::Text(Some(part(&[2]))))).as_deref(),
        Some("inner body")
    );
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[2, 1])))).as_deref(),
        Some("inner body")
    );
    assert_eq!(
        sec(
            raw,
            Some(Section::HeaderFields(Some(part(&[2])), names(&["subject"])))
        )
        .as_deref(),
        Some("Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n")
    );
    // HEADER and TEXT of a part that holds no message, and parts that do not exist.
    assert_eq!(sec(raw, Some(Section::Header(Some(part(&[1, 1]))))), None);
    assert_eq!(sec(raw, Some(Section::Text(Some(part(&[1]))))), None);
    assert_eq!(sec(raw, Some(Section::Part(part(&[3])))), None);
    assert_eq!(sec(raw, Some(Section::Part(part(&[2, 2])))), None);
    assert_eq!(sec(raw, Some(Section::Part(part(&[1, 1, 2])))), None);
    // Part 1 of a single part is the part itself.
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1, 1, 1])))).as_deref(),
        Some("caf=C3=A9")
    );
    // The whole message, its header and text.
    assert_eq!(sec(raw, None).as_deref().map(str::len), Some(raw.len()));
    assert!(sec(raw, Some(Section::Text(None))).is_some_and(|t| t.starts_with("preamble\r\n")));
    assert_eq!(
        sec(
            raw,
            Some(Section::HeaderFields(None, names(&["SUBJECT", "from"])))
        )
        .as_deref(),
        Some("From: Outer <outer@example.com>\r\nSubject: nested\r\n\r\n")
    );
    assert_eq!(
        sec(
            raw,
            Some(Section::HeaderFieldsNot(
                None,
                names(&["content-type", "mime-version"])
            ))
        )
        .as_deref(),
        Some("From: Outer <outer@example.com>\r\nSubject: nested\r\n\r\n")
    );
}

#[test]
fn part_one_of_a_single_part_message_is_its_body() {
    let raw = b"Subject: s\r\n\r\nbody\r\n";
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
        Some("body\r\n")
    );
    assert_eq!(
        sec(raw, Some(Section::Mime(part(&[1])))).as_deref(),
        Some("Subject: s\r\n\r\n")
    );
    assert_eq!(sec(raw, Some(Section::Part(part(&[2])))), None);
    // A message that is a message/rfc822: part 1 is the attached message, 1.1 its body.
    let raw = b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@x.y\r\nSubject: in\r\n\r\nhello\r\n";
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
        Some("From: in@x.y\r\nSubject: in\r\n\r\nhello\r\n")
    );
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1, 1])))).as_deref(),
        Some("hello\r\n")
    );
    assert_eq!(
        sec(raw, Some(Section::Header(Some(part(&[1]))))).as_deref(),
        Some("From: in@x.y\r\nSubject: in\r\n\r\n")
    );
}

#[test]
fn envelope_values_are_raw_and_unfolded() {
    // Encoded-words stay encoded; folding is undone; subject and names lose extra blanks;
    // the other fields keep theirs; a repeated field is the last one, repeated address
    // fields add up.
    let raw = b"Subject: \t Re:  tabs\t\tand  spaces \r\n  folded\r\n\
        From: \"  Spaced   Name  \" <a@b.c>\r\n\
        Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
        Date: second\r\n\
        Message-ID:\r\n <folded@id>\r\n\
        In-Reply-To: <a@b>\r\n  <c@d>\r\n\
        To: =?utf-8?q?x=C3=A9?= <e@w.c>\r\n\
        To: g@h.i\r\n\
        \r\n\
        body\r\n";
    assert_eq!(
        env(raw),
        concat!(
            r#"("second" "Re: tabs and spaces folded" (("Spaced Name" NIL "a" "b.c")) (("Spaced Name" NIL "a" "b.c")) (("Spaced Name" NIL "a" "b.c")) "#,
            r#"(("=?utf-8?q?x=C3=A9?=" NIL "e" "w.c")(NIL NIL "g" "h.i")) NIL NIL "<a@b>  <c@d>" " <folded@id>")"#
        )
    );
}

#[test]
fn group_addresses() {
    let raw = b"From: a@b.c\r\nTo: undisclosed-recipients:;\r\n\
        Cc: Group: a@b.c, \"Q, N\" <d@e.f>;, g@h.i\r\n\
        Bcc: \"\": ;, empty:;\r\n\r\nbody\r\n";
    assert_eq!(
        env(raw),
        concat!(
            r#"(NIL NIL ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) "#,
            r#"((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) "#,
            r#"((NIL NIL "Group" NIL)(NIL NIL "a" "b.c")("Q, N" NIL "d" "e.f")(NIL NIL NIL NIL)(NIL NIL "g" "h.i")) "#,
            r#"((NIL NIL "" NIL)(NIL NIL NIL NIL)(NIL NIL "empty" NIL)(NIL NIL NIL NIL)) NIL NIL)"#
        )
    );
}

#[test]
fn broken_addresses_as_dovecot_reads_them() {
    let raw = b"From: a@b.c (Comment Name)\r\n\
        To: <x@y.z>, \"Quoted, Name\" <q@r.s>, Name <@r1,@r2:a@b.c>, justlocal, =?utf-8?q?x=C3=A9?= <e@w.c>, Broken <a@b.c, \"unterminated <u@v.w>\r\n\
        Cc: a@b.c.,<>, @, x@, \"\" <y@z.w>, name only <>\r\n\
        Reply-To: a . b @ c . d, [lit]@x\r\n\
        Sender: ,,, a@b.c ,,\r\n\r\nbody\r\n";
    assert_eq!(
        env(raw),
        concat!(
            r#"(NIL NIL (("Comment Name" NIL "a" "b.c")) "#,
            r#"((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "a" "b.c")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
            r#"(("a. b" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
            r#"((NIL NIL "x" "y.z")("Quoted, Name" NIL "q" "r.s")("Name" "@r1,@r2" "a" "b.c")(NIL NIL "justlocal" "MISSING_DOMAIN")("=?utf-8?q?x=C3=A9?=" NIL "e" "w.c")("Broken" NIL "a" "SYNTAX_ERROR")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "#,
            r#"((NIL NIL "a" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "x" "MISSING_DOMAIN")(NIL NIL "y" "z.w")("name only" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) NIL NIL NIL)"#
        )
    );
}

#[test]
fn missing_header_fields_are_nil() {
    assert_eq!(env(b""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    assert_eq!(
        env(b"X-Other: 1\r\n\r\nbody"),
        "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
    // An empty Subject is an empty string, an empty From no address.
    assert_eq!(
        env(b"Subject:    \r\nFrom:\r\n\r\n"),
        r#"(NIL "" NIL NIL NIL NIL NIL NIL NIL NIL)"#
    );
}

#[test]
fn nul_and_eight_bit_header_values() {
    let raw = b"Subject: a\x00b \xc3\xa9t\xc3\xa9\r\nFrom: \"N\x00me\" <a@b.c>\r\n\r\nbody\r\n";
    let e = envelope(raw);
    assert_eq!(
        e.subject.into_option().as_deref(),
        Some("a\u{FFFD}b \u{e9}t\u{e9}".as_bytes())
    );
    assert_eq!(
        e.from[0].name.clone().into_option().as_deref(),
        Some("N\u{FFFD}me".as_bytes())
    );
}

#[test]
fn content_type_variants() {
    let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
        --B\r\nContent-Type: text\r\n\r\na\r\n\
        --B\r\nContent-Type: TEXT/PLAIN; CHARSET=UTF-8; Format=flowed\r\n\r\nb\r\n\
        --B\r\nContent-Type: text/plain garbage\r\n\r\nc\r\n\
        --B\r\nContent-Type: application/x; name*0=\"a b\"; name*1=c; title*=utf-8''%E2%82%AC; f*1=x; f*0*=us-ascii''y%20\r\n\r\nd\r\n\
        --B\r\nContent-Type: image/png; name=\"q\\\"uo\\\\te\"; name=dup\r\n\
        Content-Disposition: attachment; filename=\"a.png\"; size=12\r\n\
        Content-Disposition: inline\r\n\
        Content-Language: en, de-CH\r\n\
        Content-Location: http://x/y\r\n z\r\n\
        Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
        Content-ID: <cid@x>\r\n\
        Content-Description: a\r\n\tfolded  description\r\n\
        Content-Transfer-Encoding: BASE64\r\n\r\nAAAA\r\n\
        --B\r\nContent-Type: ;\r\n\r\ne\r\n\
        --B\r\nContent-Transfer-Encoding: x-uuencode (comment)\r\n\r\ng\r\n\
        --B--\r\n";
    assert_eq!(
        bs(raw),
        concat!(
            r#"(("TEXT" "" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)"#,
            r#"("TEXT" "PLAIN" ("CHARSET" "UTF-8" "Format" "flowed") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)"#,
            r#"("" "" NIL NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
            r#"("application" "x" ("f*" "us-ascii''y%20x" "name" "a bc" "title*1*" "utf-8''%E2%82%AC") NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
            "(\"image\" \"png\" (\"name\" \"q\\\"uo\\\\te\" \"name\" \"dup\") \"<cid@x>\" \"a\tfolded  description\" \"BASE64\" 4 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename\" \"a.png\" \"size\" \"12\")) (\"en\" \"de-CH\") \"http://x/y z\")",
            r#"("" "" NIL NIL NIL "7bit" 1 NIL NIL NIL NIL)"#,
            r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "x-uuencode" 1 0 NIL NIL NIL NIL)"#,
            r#" "mixed" ("boundary" "B") NIL NIL NIL)"#
        )
    );
}

#[test]
fn plain_us_ascii_messages_have_one_spelling() {
    for raw in [
        &b"Content-Type: text/plain; charset=US-ASCII\r\nContent-Transfer-Encoding: 7bit\r\n\r\nb\r\n"[..],
        b"MIME-Version: 1.0\r\nContent-Type: Text/Plain (comment) ; charset=\"us-ascii\" (c2)\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nb\r\n",
        b"Subject: no MIME at all\r\n\r\nb\r\n",
    ] {
        assert_eq!(
            bs(raw),
            r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)"#
        );
    }
}

#[test]
fn multipart_digest_and_attached_messages() {
    // In a digest a part without Content-Type is a message; an attached message can hold
    // another; an empty one is still a message with an empty text body.
    let digest = b"MIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n\
        --D\r\n\r\nFrom: x@y.z\r\nSubject: in digest\r\n\r\nbody1\r\n\
        --D\r\nContent-Type: text/plain\r\n\r\nbody2\r\n--D--\r\n";
    assert_eq!(
        body(digest),
        concat!(
            r#"(("MESSAGE" "RFC822" NIL NIL NIL "7bit" 40 (NIL "in digest" ((NIL NIL "x" "y.z")) ((NIL NIL "x" "y.z")) ((NIL NIL "x" "y.z")) NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 3)"#,
            r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) "digest")"#
        )
    );
    let nested = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=O\r\n\r\n\
        --O\r\nContent-Type: message/rfc822\r\n\r\n\
        From: inner@x.y\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n\
        From: inner2@x.y\r\nSubject: inner2\r\n\r\ntext\r\n\
        --O\r\nContent-Type: message/rfc822\r\n\r\n--O--\r\n";
    assert_eq!(
        body(nested),
        concat!(
            r#"(("MESSAGE" "RFC822" NIL NIL NIL "7bit" 125 (NIL "inner" ((NIL NIL "inner" "x.y")) ((NIL NIL "inner" "x.y")) ((NIL NIL "inner" "x.y")) NIL NIL NIL NIL NIL) "#,
            r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 41 (NIL "inner2" ((NIL NIL "inner2" "x.y")) ((NIL NIL "inner2" "x.y")) ((NIL NIL "inner2" "x.y")) NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) 3) 8)"#,
            r#"("MESSAGE" "RFC822" NIL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 0) "mixed")"#
        )
    );
    // The second attached message's blank line belongs to the closing boundary: its MIME
    // header ends without it and the message's HEADER.FIELDS are read past it.
    assert_eq!(
        sec(nested, Some(Section::Mime(part(&[2])))).as_deref(),
        Some("Content-Type: message/rfc822\r\n")
    );
    assert_eq!(
        sec(
            nested,
            Some(Section::HeaderFields(Some(part(&[2])), names(&["subject"])))
        )
        .as_deref(),
        Some("\r\n")
    );
    assert_eq!(
        sec(nested, Some(Section::Part(part(&[1, 1, 1])))).as_deref(),
        Some("text")
    );
}

#[test]
fn broken_boundaries() {
    // No boundary parameter, no parts, a boundary cutting a header short, text after the
    // closing boundary, a boundary longer than 80 octets (Dovecot cuts it), boundaries that
    // are prefixes of each other and one that ends in dashes.
    let cases: [(&[u8], &str); 6] = [
        (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nhello\r\n",
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")"#,
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\npreamble only\r\n",
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")"#,
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=H\r\n\r\n--H\r\nContent-Type: text/plain\r\n--H\r\nContent-Type: text/plain\r\n\r\nx\r\n--H--\r\n",
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")"#,
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\npre\r\n--P\r\n\r\na\r\n--P--\r\nepilogue\r\n--P\r\nafter close\r\n",
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")"#,
        ),
        (
            b"Content-Type: multipart/mixed; boundary=\"a--\"\n\n--a--\nContent-Type: multipart/mixed; boundary=\"a----\"\n\n--a----\nContent-Type: text/plain\n\nbody\n--a------\nContent-Type: text/html\n\nbody2\n--a----\r\n",
            r#"((("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed") "mixed")"#,
        ),
        (
            b"Content-Type: multipart/alternative;\n boundary=\"--120710081418BV.24190.Texte--\"\r\nMime-Version: 1.0\r\n\r\n\r\n----120710081418BV.24190.Texte--\r\nContent-Type: text/plain;\r\n  charset=\"UTF-8\"\r\n\r\nHi\n\r\n----120710081418BV.24190.Texte--\r\nContent-Type: text/html;\r\n  charset=\"UTF-8\"\r\n\r\n<html><body>Hi</body></html>\r\n\r\n----120710081418BV.24190.Texte----\r\n",
            r#"(("TEXT" "plain" ("charset" "UTF-8") NIL NIL "7bit" 4 1)("TEXT" "html" ("charset" "UTF-8") NIL NIL "7bit" 30 1) "alternative")"#,
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(body(raw), want, "{}", String::from_utf8_lossy(raw));
    }
    let long = [
        &b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\""[..],
        &[b'x'; 90],
        b"\"\r\n\r\n--",
        &[b'x'; 90],
        b"\r\nContent-Type: text/plain\r\n\r\nbody\r\n--",
        &[b'x'; 80],
        b"--\r\n",
    ]
    .concat();
    assert_eq!(
        body(&long),
        r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) "mixed")"#
    );
}

#[test]
fn bare_lf_counts_as_crlf() {
    let raw = b"From: a@b.c\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"L\"\n\n--L\nContent-Type: text/plain\n\nline1\nline2\n--L\nContent-Type: text/html\n\n<p>x</p>\n--L--\n";
    assert_eq!(
        body(raw),
        r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1)("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" 8 0) "alternative")"#
    );
    assert_eq!(
        sec(raw, Some(Section::Part(part(&[1])))).as_deref(),
        Some("line1\r\nline2")
    );
    let whole = super::section(raw, None).unwrap_or_default();
    assert!(!whole.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    assert_eq!(
        whole.len(),
        raw.len() + raw.iter().filter(|&&b| b == b'\n').count()
    );
}

#[test]
fn header_fields_blank_line_rules() {
    // HEADER.FIELDS of the message always ends with the blank line; HEADER.FIELDS.NOT only
    // when the header has one (Dovecot).
    let no_blank = b"From: a@b.c\r\nSubject: no body";
    assert_eq!(
        sec(
            no_blank,
            Some(Section::HeaderFields(None, names(&["from", "subject"])))
        )
        .as_deref(),
        Some("From: a@b.c\r\nSubject: no body\r\n")
    );
    assert_eq!(
        sec(
            no_blank,
            Some(Section::HeaderFieldsNot(None, names(&["x"])))
        )
        .as_deref(),
        Some("From: a@b.c\r\nSubject: no body")
    );
    assert_eq!(
        sec(b"", Some(Section::HeaderFields(None, names(&["x"])))).as_deref(),
        Some("\r\n")
    );
    assert_eq!(
        sec(b"", Some(Section::HeaderFieldsNot(None, names(&["x"])))).as_deref(),
        Some("")
    );
}

#[test]
fn partial_windows() {
    let nz = NonZeroU32::new;
    assert_eq!(partial(b"0123456789", 0, nz(3)), b"012");
    assert_eq!(partial(b"0123456789", 8, nz(5)), b"89");
    assert_eq!(partial(b"0123456789", 10, nz(5)), b"");
    assert_eq!(partial(b"0123456789", 4_000_000_000, nz(5)), b"");
    assert_eq!(partial(b"0123456789", 3, None), b"3456789");
}

#[test]
fn header_decoding_and_dates() {
    assert_eq!(
        decode_header(b"=?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?="),
        "Die Hasen und die Fr\u{f6}sche"
    );
    assert_eq!(
        decode_header(b"=?UTF-8?B?Y2Fmw6k=?= =?utf-8?q?_au_lait?=."),
        "caf\u{e9} au lait."
    );
    assert_eq!(decode_header(b"a =?bogus?x?y?= b"), "a =?bogus?x?y?= b");
    // Text right after a word stays right after it, and text around words keeps its blanks
    // (Dovecot's joining, not mail-parser's unstructured reader, which adds a space).
    assert_eq!(
        decode_header(b"=?UTF-8?B?Y2Fmw6k=?=. Re:  x =?utf-8?q?y?=z"),
        "caf\u{e9}. Re:  x yz"
    );
    // Charsets are mail-parser's tables (full_encoding), unknown ones read as UTF-8.
    assert_eq!(
        decode_header(b"=?iso-2022-jp?q?=1B$B%O%m!<=1B(B?= =?x-unknown?q?caf=C3=A9?="),
        "\u{30cf}\u{30ed}\u{30fc}caf\u{e9}"
    );
    assert_eq!(decode_header(b"=?"), "=?");
    // A word ends at its third "?", which "=" must follow (a "?" in Q text is no word).
    assert_eq!(decode_header(b"=?utf-8?q?a?b?="), "=?utf-8?q?a?b?=");
    let run = "=?ab?q?a".repeat(8192);
    assert_eq!(decode_header(run.as_bytes()), run);
    assert_eq!(
        decode_header(b"x=?utf-8?q?unterminated"),
        "x=?utf-8?q?unterminated"
    );
    // Out-of-range fields are refused, not normalised; zones count the right way round.
    assert_eq!(parse_date(b"30 Feb 2024 10:00:00 +0000"), None);
    assert_eq!(
        parse_date(b"29 Feb 2024 10:00:00 +0000"),
        Some(1_709_200_800)
    );
    assert_eq!(parse_date(b"1 Jan 2000 00:00 Z"), Some(946_684_800));
    assert_eq!(parse_date(b"1 Jan 2000 00:00 A"), Some(946_684_800 - 3600));
    assert_eq!(
        parse_date(b"1 Jan 2000 00:00 PDT"),
        Some(946_684_800 + 7 * 3600)
    );
    assert_eq!(
        parse_date(b"Fri, 21 Nov 1997 09(comment):   55  :  06 -0600"),
        Some(880_127_706)
    );
    assert_eq!(parse_date(b"21 Nov 97 09:55:06 GMT"), Some(880_106_106));
    assert_eq!(parse_date(b"Wed, 15 Dec 2010    59:10 -0500"), None);
    assert_eq!(parse_date(b"Thu,"), None);
    assert_eq!(
        parse_date(b"Thu, 13 Feb 1969 23:32:54 -0330"),
        Some(-27_723_426)
    );
}

/// Every prefix of a tricky message parses without panicking and with consistent sizes.
#[test]
fn truncated_input_never_panics() {
    for raw in [NESTED, &b"Content-Type: multipart/mixed; boundary=\"a--\"\n\n--a--\nContent-Type: message/rfc822\n\nContent-Type: multipart/digest; boundary=a\n\n--a\n\nFrom: (x\n--a--"[..]] {
        for end in 0..=raw.len() {
            let raw = &raw[..end];
            let _ = envelope(raw);
            check_sizes(raw);
        }
    }
}

/// Invariants between BODYSTRUCTURE and the section bytes, for every part of `raw`.
fn check_sizes(raw: &[u8]) {
    fn walk(tree: &Tree<'_>, b: &BodyStructure<'_>, path: &mut Vec<u32>) {
        match b {
            BodyStructure::Multi { bodies, .. } => {
                for (i, child) in bodies.as_ref().iter().enumerate() {
                    path.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
                    walk(tree, child, path);
                    path.pop();
                }
            }
            BodyStructure::Single { body, .. } => {
                let p = if path.is_empty() {
                    vec![1]
                } else {
                    path.clone()
                };
                let bytes = tree.section(&Section::Part(part(&p)));
                // A multipart without parts reports one empty part it does not have.
                let Some(bytes) = bytes else {
                    assert_eq!(body.basic.size, 0, "{p:?}");
                    return;
                };
                assert_eq!(body.basic.size as usize, bytes.len(), "size of {p:?}");
                let lines = bytes.iter().filter(|&&c| c == b'\n').count();
                match &body.specific {
                    SpecificFields::Text {
                        number_of_lines, ..
                    }
                    | SpecificFields::Message {
                        number_of_lines, ..
                    } => {
                        assert_eq!(*number_of_lines as usize, lines, "lines of {p:?}");
                    }
                    SpecificFields::Basic { .. } => {}
                }
                if let SpecificFields::Message { body_structure, .. } = &body.specific {
                    let mut inner = p.clone();
                    if !matches!(**body_structure, BodyStructure::Multi { .. }) {
                        inner.push(1);
                    }
                    walk(tree, body_structure, &mut inner);
                }
            }
        }
    }
    let tree = Tree::parse(raw);
    let b = tree.structure(0, true);
    let _ = tree.structure(0, false);
    walk(&tree, &b, &mut Vec::new());
}

/// The whole shared corpus: no panic, and sizes and line counts that match the bytes.
#[test]
fn corpus_structure_is_consistent() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !root.is_dir() {
        eprintln!("notice: {} absent, corpus check skipped", root.display());
        return;
    }
    let mut stack = vec![root];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(raw) = std::fs::read(&path) {
                let _ = envelope(&raw);
                check_sizes(&raw);
                let _ = super::section(&raw, Some(&Section::Header(None)));
                n += 1;
            }
        }
    }
    assert!(n > 1000, "only {n} corpus files");
}
