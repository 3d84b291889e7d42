//! A fake authoritative DNS server for tests, on hickory-server: one zone
//! for the root `.` holding every record given, served on 127.0.0.1 over UDP
//! and TCP on the same ephemeral port. Names not given answer NXDOMAIN
//! authoritatively (so DMARC tree walks to `_dmarc.<parent>` end cleanly).
//! Names can also be made to stall ([`FakeDns::start_with_stalled`]), like
//! a sender's name server that never answers; and the whole server can be
//! made slow, dead (queries read, never answered) or broken (SERVFAIL to
//! everything) with [`FakeDns::start_with`]. It counts the queries it gets
//! ([`FakeDns::queries_for`]).
//!
//! ```ignore
//! #[path = "common/dns.rs"]
//! mod dns;
//! let dns = dns::FakeDns::start(&[("vendor.example", dns::RecordKind::Txt("v=spf1 -all".into()))]).await;
//! // point the resolver at dns.addr only
//! ```
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::MessageResponseBuilder;
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

/// How the whole server answers (see [`FakeDns::start_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// From its zone (the records given; NXDOMAIN for other names).
    #[default]
    Answer,
    /// Never: every query is read and dropped, like a dead resolver.
    Drop,
    /// SERVFAIL to every query.
    ServFail,
}

/// A running fake DNS server; stops when dropped.
pub struct FakeDns {
    /// UDP and TCP, same port, on 127.0.0.1.
    pub addr: SocketAddr,
    server: Server<Handler>,
    /// Every query name received (lowercase, without the final dot).
    queries: Arc<Mutex<Vec<String>>>,
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
        Self::build(records, stalled, Mode::Answer, Duration::ZERO).await
    }

    /// Like [`start`](Self::start), but every query is handled as `mode`
    /// says, each after `delay` (many at once).
    pub async fn start_with(
        records: &[(&str, RecordKind)],
        mode: Mode,
        delay: Duration,
    ) -> FakeDns {
        Self::build(records, &[], mode, delay).await
    }

    /// How many queries for `name` (any type) the server got.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.queries
            .lock()
            .expect("query log")
            .iter()
            .filter(|q| **q == name)
            .count()
    }

    /// Every query name received, in order (lowercase, no final dot).
    pub fn queried_names(&self) -> Vec<String> {
        self.queries.lock().expect("query log").clone()
    }

    /// How many queries the server got.
    pub fn query_count(&self) -> usize {
        self.queries.lock().expect("query log").len()
    }

    async fn build(
        records: &[(&str, RecordKind)],
        stalled: &[&str],
        mode: Mode,
        delay: Duration,
    ) -> FakeDns {
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
        let queries = Arc::new(Mutex::new(Vec::new()));
        let handler = Handler {
            catalog,
            stalled: stalled.iter().map(|n| LowerName::from(name(n))).collect(),
            mode,
            delay,
            queries: queries.clone(),
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        FakeDns {
            addr,
            server,
            queries,
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// The catalog, behind a filter that stalls queries for some names, and
/// the server's [`Mode`] and delay.
struct Handler {
    catalog: Catalog,
    stalled: Vec<LowerName>,
    mode: Mode,
    delay: Duration,
    queries: Arc<Mutex<Vec<String>>>,
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
            let logged = qname.to_string().trim_end_matches('.').to_ascii_lowercase();
            self.queries.lock().expect("query log").push(logged);
            if self.stalled.iter().any(|s| s.zone_of(qname)) {
                tokio::time::sleep(STALL).await;
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match self.mode {
            Mode::Answer => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            Mode::Drop => {
                tokio::time::sleep(STALL).await;
                not_sent(request)
            }
            Mode::ServFail => {
                let mut response_handle = response_handle;
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                response_handle
                    .send_response(response)
                    .await
                    .unwrap_or_else(|_| not_sent(request))
            }
        }
    }
}

/// What the server reports of a request it sent no answer to: SERVFAIL.
fn not_sent(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
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
