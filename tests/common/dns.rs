//! A fake authoritative DNS server for tests, on hickory-server: one zone
//! for the root `.` holding every record given, served on 127.0.0.1 over UDP
//! and TCP on the same ephemeral port. Names not given answer NXDOMAIN
//! authoritatively (so DMARC tree walks to `_dmarc.<parent>` end cleanly).
//! Names can also be made to stall ([`FakeDns::start_with_stalled`]), like
//! a sender's name server that never answers.
//!
//! ```ignore
//! #[path = "common/dns.rs"]
//! mod dns;
//! let dns = dns::FakeDns::start(&[("vendor.example", dns::RecordKind::Txt("v=spf1 -all".into()))]).await;
//! // point the resolver at dns.addr only
//! ```
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// TTL of every record served.
const TTL: u32 = 60;
/// Longest character-string in a TXT record (RFC 1035 §3.3).
const TXT_CHUNK: usize = 255;
/// How long a stalled query waits before it is answered (in practice never:
/// the server task is aborted when the [`FakeDns`] is dropped).
const STALL: Duration = Duration::from_secs(3600);

/// The data of one record.
#[derive(Debug, Clone)]
pub enum RecordKind {
    /// Split into 255-byte character-strings when longer.
    Txt(String),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Preference and exchange host name.
    Mx(u16, String),
    Cname(String),
    Ptr(String),
}

/// A running fake DNS server; stops when dropped.
pub struct FakeDns {
    /// UDP and TCP, same port, on 127.0.0.1.
    pub addr: SocketAddr,
    server: Server<Handler>,
}

impl FakeDns {
    /// Serves `records` (name, data); names are absolute whether or not they
    /// end with a dot. Panics on a name hickory cannot parse (test input).
    pub async fn start(records: &[(&str, RecordKind)]) -> FakeDns {
        Self::start_with_stalled(records, &[]).await
    }

    /// Like [`start`](Self::start), but queries for any name at or below one
    /// of `stalled` get no answer.
    pub async fn start_with_stalled(records: &[(&str, RecordKind)], stalled: &[&str]) -> FakeDns {
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            Name::root(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let serial = 1;
        let soa = SOA::new(
            name("ns.fake-dns.test"),
            name("hostmaster.fake-dns.test"),
            serial,
            3600,
            600,
            86_400,
            TTL,
        );
        assert!(zone.upsert_mut(
            Record::from_rdata(Name::root(), TTL, RData::SOA(soa)),
            serial
        ));
        for (owner, kind) in records {
            let rdata = match kind {
                RecordKind::Txt(text) => {
                    let chunks: Vec<&[u8]> = if text.is_empty() {
                        vec![b"".as_slice()]
                    } else {
                        text.as_bytes().chunks(TXT_CHUNK).collect()
                    };
                    RData::TXT(TXT::from_bytes(chunks))
                }
                RecordKind::A(ip) => RData::A(A(*ip)),
                RecordKind::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
                RecordKind::Mx(pref, host) => RData::MX(MX::new(*pref, name(host))),
                RecordKind::Cname(target) => RData::CNAME(CNAME(name(target))),
                RecordKind::Ptr(target) => RData::PTR(PTR(name(target))),
            };
            let record = Record::from_rdata(name(owner), TTL, rdata);
            assert!(
                zone.upsert_mut(record, serial),
                "fake dns: cannot add {owner} {kind:?}"
            );
        }

        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = Arc::new(zone);
        catalog.upsert(LowerName::from(Name::root()), vec![handler]);

        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp addr");
        let handler = Handler {
            catalog,
            stalled: stalled.iter().map(|n| LowerName::from(name(n))).collect(),
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        FakeDns { addr, server }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// The catalog, behind a filter that stalls queries for some names.
struct Handler {
    catalog: Catalog,
    stalled: Vec<LowerName>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let qname = info.query.name();
            if self.stalled.iter().any(|s| s.zone_of(qname)) {
                tokio::time::sleep(STALL).await;
            }
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// An address on 127.0.0.1 where no DNS server listens (bound, then closed):
/// queries get "connection refused" or no answer.
pub async fn closed_addr() -> SocketAddr {
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().expect("udp addr");
    drop((udp, tcp));
    addr
}

fn name(text: &str) -> Name {
    let mut n = Name::from_ascii(text).unwrap_or_else(|e| panic!("fake dns: bad name {text}: {e}"));
    n.set_fqdn(true);
    n
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("fake dns: no port free for both UDP and TCP on 127.0.0.1");
}
