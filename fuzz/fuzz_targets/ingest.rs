//! Ingest of one raw message: the first input byte picks an envelope (a
//! reply by token, the bare reply mailbox, a bounce address, a forwarding
//! address, the null sender), the rest is the message. Runs the real
//! pipeline: queue row committed, `ingest::prepare` (parse, classify,
//! visible reply; authentication off: DNS is not reachable here) and
//! `ingest::apply::apply` (route, duplicate check, message row, attachments,
//! agent-view placement, effects) in the store's writer transaction.
//! Checks: no panic, the apply succeeds, the stored message keeps the raw
//! bytes exactly, and a duplicate delivery is marked done in the queue.
#![no_main]

use std::sync::OnceLock;

use backchannel::ingest::{self, apply};
use backchannel::model::now_ms;
use backchannel::store::inbound::{self, Envelope};
use backchannel_fuzz::{DOMAIN, Gateway, TOKEN};
use libfuzzer_sys::fuzz_target;

fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(Gateway::new)
}

fn envelope(selector: u8) -> Envelope {
    let (mail_from, rcpt) = match selector % 5 {
        0 => ("vendor@carrier.example", format!("reply+{TOKEN}@{DOMAIN}")),
        1 => ("someone@elsewhere.example", format!("reply@{DOMAIN}")),
        2 => ("", format!("bounce+aaaabbbbccccdddd@{DOMAIN}")),
        3 => ("support@acme.com", format!("fwd-fuzz@{DOMAIN}")),
        _ => ("", format!("postmaster@{DOMAIN}")),
    };
    Envelope {
        peer_ip: "192.0.2.10".into(),
        helo: "mx.carrier.example".into(),
        mail_from: mail_from.into(),
        rcpts: vec![rcpt],
        tls: false,
        params: Vec::new(),
        received_at: now_ms(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let gw = gateway();
    let env = envelope(selector);
    let raw = raw.to_vec();
    gw.rt.block_on(async {
        let id = gw
            .store
            .write(move |c| inbound::enqueue(c, &env, &raw))
            .await
            .expect("enqueue");
        let m = gw
            .store
            .read(move |c| inbound::get(c, id))
            .await
            .expect("queued row");
        let raw = m.raw.clone();
        let prepared = ingest::prepare(m, None, DOMAIN.to_string())
            .await
            .expect("prepare");
        let config = gw.config.clone();
        let applied = gw
            .store
            .write(move |c| apply::apply(c, &config, &prepared))
            .await;
        match applied {
            Ok(apply::Applied::Stored { message, .. }) => {
                let stored: Vec<u8> = gw
                    .store
                    // As every reader sees them (the bytes are kept
                    // once, in the queue's copy).
                    .read(move |c| backchannel::store::view::raw(c, message))
                    .await
                    .expect("stored message")
                    .expect("a stored message has its bytes");
                assert_eq!(
                    stored, raw,
                    "the stored raw bytes differ from what was received"
                );
            }
            // The same message again (same Message-ID and content, trace
            // headers aside): stored once, this delivery kept in the queue.
            Ok(apply::Applied::Duplicate { .. }) => {
                let row = gw
                    .store
                    .read(move |c| backchannel::store::inbound::get(c, id))
                    .await
                    .expect("queue row");
                let (state, kept) = (row.state, row.raw);
                assert_ne!(state, "queued", "a duplicate left its queue row queued");
                assert_eq!(kept, raw, "the queued raw bytes changed");
            }
            Ok(apply::Applied::AlreadyDone) => panic!("a fresh queue row was already done"),
            Err(e) => panic!("apply failed: {e}"),
        }
    });
});
