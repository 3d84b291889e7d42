//! BODY and BODYSTRUCTURE written from the MIME tree and each part's Content-* fields, field for
//! field as Dovecot writes them (NIL or "", case, parameter order, sizes and line counts, the
//! canonical form of a plain US-ASCII message).

use std::borrow::Cow;

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{IString, NString, Vec1};

use super::content::PartData;
use super::envelope::envelope_of_header;
use super::tree::{IS_MIME, MULTIPART, Node, RFC822, TEXT, Tree};
use super::wire::{istr, istring, nolf, nstring};

impl Tree<'_> {
    pub(super) fn structure(&self, idx: usize, extended: bool) -> BodyStructure<'static> {
        let node = &self.nodes[idx];
        let mut data = self.data_of(idx);
        if idx == 0 && data.is_plain_7bit(node) {
            // Dovecot answers a plain US-ASCII message in its canonical spelling.
            data = PartData::default();
        }
        if node.flags & MULTIPART != 0 {
            let bodies: Vec<BodyStructure<'static>> = node
                .children
                .iter()
                .map(|&c| self.structure(c, extended))
                .collect();
            let bodies =
                Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(empty_body(extended)));
            let subtype = istring(Cow::Owned(data.subtype.clone().unwrap_or_default()));
            let extension_data = extended.then(|| MultiPartExtensionData {
                parameter_list: params(&data.params, false),
                tail: Some(data.disposition_tail()),
            });
            return BodyStructure::Multi {
                bodies,
                subtype,
                extension_data,
            };
        }
        let (r#type, subtype, text) = if node.flags & RFC822 != 0 {
            (istr("message"), istr("rfc822"), false)
        } else {
            match &data.r#type {
                None => (istr("text"), istr("plain"), true),
                Some(t) => (
                    istring(Cow::Owned(t.clone())),
                    istring(Cow::Owned(data.subtype.clone().unwrap_or_default())),
                    t.eq_ignore_ascii_case(b"text"),
                ),
            }
        };
        let basic = BasicFields {
            parameter_list: params(&data.params, text),
            id: nstring(data.id.as_deref().map(nolf)),
            description: nstring(data.description.as_deref().map(nolf)),
            content_transfer_encoding: data
                .encoding
                .clone()
                .map_or_else(|| istr("7bit"), |e| istring(Cow::Owned(e))),
            size: u32::try_from(node.body.virtual_size).unwrap_or(u32::MAX),
        };
        let specific = if text {
            SpecificFields::Text {
                subtype,
                number_of_lines: node.body.lines,
            }
        } else if node.flags & RFC822 != 0 {
            let child = node.children.first().copied();
            let envelope = child.map_or_else(
                || envelope_of_header(b""),
                |c| envelope_of_header(self.header_bytes(c)),
            );
            let inner = child.map_or_else(|| empty_body(extended), |c| self.structure(c, extended));
            SpecificFields::Message {
                envelope: Box::new(envelope),
                body_structure: Box::new(inner),
                number_of_lines: node.body.lines,
            }
        } else {
            SpecificFields::Basic { r#type, subtype }
        };
        let extension_data = extended.then(|| SinglePartExtensionData {
            md5: nstring(data.md5.as_deref().map(nolf)),
            tail: Some(data.disposition_tail()),
        });
        BodyStructure::Single {
            body: Body { basic, specific },
            extension_data,
        }
    }

    /// Content-* data of a part; forgotten when the part is not MIME (no MIME-Version, no
    /// Content-Type, not inside a multipart), as Dovecot does.
    fn data_of(&self, idx: usize) -> PartData {
        if self.nodes[idx].flags & IS_MIME == 0 {
            return PartData::default();
        }
        PartData::parse(self.header_bytes(idx))
    }
}

impl PartData {
    /// text/plain, US-ASCII, 7bit and nothing else: Dovecot's "plain 7bit" message.
    fn is_plain_7bit(&self, node: &Node) -> bool {
        node.flags & TEXT != 0
            && node.children.is_empty()
            && self
                .subtype
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(b"plain"))
            && (self.params.is_empty()
                || (self.params.len() == 1
                    && self.params[0].0.eq_ignore_ascii_case(b"charset")
                    && self.params[0].1.eq_ignore_ascii_case(b"us-ascii")))
            && self.id.is_none()
            && self.description.is_none()
            && self
                .encoding
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(b"7bit"))
            && self.md5.is_none()
            && self.disposition.is_none()
            && self.language.is_empty()
            && self.location.is_none()
    }

    fn disposition_tail(&self) -> Disposition<'static> {
        Disposition {
            disposition: self.disposition.as_ref().map(|d| {
                (
                    istring(Cow::Owned(d.clone())),
                    params(&self.disposition_params, false),
                )
            }),
            tail: Some(Language {
                language: self
                    .language
                    .iter()
                    .map(|l| istring(Cow::Owned(l.clone())))
                    .collect(),
                tail: Some(Location {
                    location: nstring(self.location.as_deref().map(nolf)),
                    extensions: Vec::new(),
                }),
            }),
        }
    }
}

pub(super) fn params(
    list: &[(Vec<u8>, Vec<u8>)],
    default_charset: bool,
) -> Vec<(IString<'static>, IString<'static>)> {
    let mut out: Vec<(IString<'static>, IString<'static>)> = list
        .iter()
        .map(|(k, v)| {
            (
                istring(Cow::Owned(k.clone())),
                istring(Cow::Owned(v.clone())),
            )
        })
        .collect();
    if default_charset && !list.iter().any(|(k, _)| k.eq_ignore_ascii_case(b"charset")) {
        out.push((istr("charset"), istr("us-ascii")));
    }
    out
}

/// What Dovecot writes for a multipart without parts: one empty text/plain.
fn empty_body(extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istr("charset"), istr("us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istr("7bit"),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: istr("plain"),
                number_of_lines: 0,
            },
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: Some(Disposition {
                disposition: None,
                tail: Some(Language {
                    language: Vec::new(),
                    tail: Some(Location {
                        location: NString(None),
                        extensions: Vec::new(),
                    }),
                }),
            }),
        }),
    }
}
