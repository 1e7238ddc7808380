//! Single-port mode: every viewer's ICE, DTLS, SRTP and RTCP on one UDP port.
//!
//! Firewalls and Docker want one known port, but webrtc-rs 0.21 binds its own sockets
//! for each peer connection and has no UDP mux. So the mux lives in our runtime's socket
//! layer ([`crate::runtime`]):
//!
//! - one shared socket is bound to the configured port, and one task reads it;
//! - each peer connection still binds its small ephemeral socket (webrtc-rs insists,
//!   and its address is the key the connection knows its candidate by), but the runtime
//!   hands webrtc-rs a [`MuxedSocket`] in its place: sends leave through the shared
//!   socket, receives come from a bounded inbox the reader fills;
//! - the answer's host candidates are rewritten from the ephemeral port to the shared
//!   one, and the answer's ICE username fragment is registered ([`UdpMux::register`]);
//! - the reader routes a datagram by its source address once known; a source it does not
//!   know is let in only by a STUN binding request whose USERNAME starts with a
//!   registered fragment (the ICE check itself, RFC 8445 §7.2.2), which then binds that
//!   address to the connection. Anything else is dropped and counted.
//!
//! Every table is bounded and cleaned when a connection's socket is dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use tracing::{debug, info, warn};
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Datagrams waiting for one connection's driver, at most (then new ones are dropped).
const INBOX_CAP: usize = 512;
/// Source addresses bound to connections, at most (a new one evicts nothing: it waits).
const MAX_ROUTES: usize = 8192;
/// Registered connections (ICE username fragments), at most.
const MAX_UFRAGS: usize = 4096;
/// Largest datagram the reader takes (64 KiB with GRO segments split by stride).
const READ_BUF: usize = 64 * 1024;

/// Counters of a mux, for `/api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// The shared socket's address.
    pub local_addr: Option<SocketAddr>,
    /// Connections registered (one per viewer).
    pub connections: usize,
    /// Source addresses bound to a connection.
    pub routes: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams from a source no connection claimed (not a check with a known ufrag).
    pub dropped_unknown: u64,
    /// Datagrams dropped because a connection's inbox or the socket's send buffer was full.
    pub dropped_full: u64,
}

#[derive(Default)]
struct Counters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    dropped_unknown: AtomicU64,
    dropped_full: AtomicU64,
}

/// One connection's receive queue.
struct Inbox {
    local: SocketAddr,
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Table {
    /// Ephemeral local address of a connection's socket → its inbox.
    by_local: HashMap<SocketAddr, Weak<Inbox>>,
    /// ICE username fragment → the local addresses of that connection's sockets.
    by_ufrag: HashMap<String, Vec<SocketAddr>>,
    /// (remote address, our address it wrote to) → inbox, learnt from ICE checks. Keyed by
    /// both: a viewer checks each of a connection's candidates (one per interface) from
    /// the same address, and each candidate's traffic must reach its own socket.
    by_remote: HashMap<(SocketAddr, Option<IpAddr>), Weak<Inbox>>,
}

struct Shared {
    /// The reader's view of the shared socket.
    socket: Arc<dyn AsyncUdpSocket>,
    /// The same socket for sending: plain non-blocking sends (GSO and source address
    /// included), so that no connection ever waits on another one's readiness.
    send_socket: std::net::UdpSocket,
    send_state: UdpSocketState,
    local_addr: SocketAddr,
    table: Mutex<Table>,
    counters: Counters,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one received datagram to its connection's inbox.
    fn route(&self, from: SocketAddr, dst_ip: Option<IpAddr>, data: &[u8]) {
        self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let inbox = {
            let mut t = self.table();
            // An ICE check names its connection: it may (re)bind the source address.
            let by_check = stun_request_ufrag(data).and_then(|ufrag| {
                let locals = t.by_ufrag.get(ufrag)?;
                let pick = locals
                    .iter()
                    .find(|l| Some(l.ip()) == dst_ip)
                    .or_else(|| locals.first())
                    .copied()?;
                t.by_local.get(&pick)?.upgrade()
            });
            match by_check {
                Some(inbox) => {
                    let key = (from, dst_ip);
                    let known = t
                        .by_remote
                        .get(&key)
                        .and_then(Weak::upgrade)
                        .is_some_and(|i| Arc::ptr_eq(&i, &inbox));
                    if !known && (t.by_remote.len() < MAX_ROUTES || t.by_remote.contains_key(&key))
                    {
                        debug!(%from, local = %inbox.local, "single-port: source bound to a viewer by its ICE check");
                        t.by_remote.insert(key, Arc::downgrade(&inbox));
                    }
                    Some(inbox)
                }
                None => t.by_remote.get(&(from, dst_ip)).and_then(Weak::upgrade),
            }
        };
        let Some(inbox) = inbox else {
            self.counters
                .dropped_unknown
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let waker = {
            let mut s = inbox.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.queue.len() >= INBOX_CAP {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                return;
            }
            s.queue.push_back((from, data.to_vec()));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn forget(&self, inbox: &Inbox) {
        let mut t = self.table();
        t.by_local.remove(&inbox.local);
        t.by_remote
            .retain(|_, w| w.upgrade().is_some() && !std::ptr::eq(w.as_ptr(), inbox));
        t.by_ufrag.retain(|_, locals| {
            locals.retain(|l| *l != inbox.local);
            !locals.is_empty()
        });
    }
}

/// The shared UDP socket of single-port mode and its routing table. Dropping the last
/// handle stops the reader task; sockets still held by connections keep working until
/// those connections close.
#[derive(Clone)]
pub struct UdpMux {
    shared: Arc<Shared>,
    _reader: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpMux")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl UdpMux {
    /// Binds the shared socket (with the same large buffers as every media socket) and
    /// starts its reader on the current tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpMux> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let send_socket = socket.try_clone()?;
        let socket = crate::runtime::wrap_timed(socket)?;
        let send_state = UdpSocketState::new(UdpSockRef::from(&send_socket))?;
        let shared = Arc::new(Shared {
            socket,
            send_socket,
            send_state,
            local_addr,
            table: Mutex::new(Table::default()),
            counters: Counters::default(),
        });
        let reader = tokio::spawn(read_loop(Arc::downgrade(&shared), shared.socket.clone()));
        info!(%local_addr, "single-port mode: every viewer's media on this UDP port");
        Ok(UdpMux {
            shared,
            _reader: Arc::new(AbortOnDrop(reader)),
        })
    }

    /// The shared socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Takes a connection's socket (bound by webrtc-rs to an ephemeral port) and returns
    /// the socket webrtc-rs should use instead: sending and receiving through the mux.
    pub(crate) fn adopt(&self, own: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = own.local_addr()?;
        let inbox = Arc::new(Inbox {
            local,
            state: Mutex::new(InboxState::default()),
        });
        {
            let mut t = self.shared.table();
            t.by_local.retain(|_, w| w.upgrade().is_some());
            t.by_local.insert(local, Arc::downgrade(&inbox));
        }
        Ok(Arc::new(MuxedSocket {
            shared: self.shared.clone(),
            inbox,
            _own: own,
        }))
    }

    /// Registers an answer's connection under its ICE username fragment and returns the
    /// answer with every host candidate of that connection moved to the shared port.
    /// Candidates that are not ours (or not UDP host candidates) are left as they are.
    pub fn register(&self, answer_sdp: &str) -> String {
        let ufrag = answer_sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned);
        let port = self.shared.local_addr.port().to_string();
        let mut locals = Vec::new();
        let mut out = String::with_capacity(answer_sdp.len());
        for line in answer_sdp.split_inclusive('\n') {
            let l = line.trim_end();
            let Some(rest) = l.strip_prefix("a=candidate:") else {
                out.push_str(line);
                continue;
            };
            // foundation component transport priority address port "typ" type ...
            let mut f: Vec<&str> = rest.split_whitespace().collect();
            let ours = (f.len() >= 8 && f[2].eq_ignore_ascii_case("udp") && f[7] == "host")
                .then(|| format!("{}:{}", f[4], f[5]).parse::<SocketAddr>().ok())
                .flatten()
                .filter(|a| self.shared.table().by_local.contains_key(a));
            match ours {
                Some(local) => {
                    locals.push(local);
                    f[5] = &port;
                    out.push_str("a=candidate:");
                    out.push_str(&f.join(" "));
                    out.push_str("\r\n");
                }
                None => out.push_str(line),
            }
        }
        match ufrag {
            Some(ufrag) if !locals.is_empty() => {
                let mut t = self.shared.table();
                if t.by_ufrag.len() < MAX_UFRAGS || t.by_ufrag.contains_key(&ufrag) {
                    debug!(%ufrag, sockets = locals.len(), "single-port: viewer registered");
                    t.by_ufrag.insert(ufrag, locals);
                } else {
                    warn!("single-port: too many registered viewers; this one cannot connect");
                }
            }
            _ => warn!("single-port: the answer has no ICE ufrag or none of our candidates"),
        }
        out
    }

    /// Counters and table sizes.
    pub fn stats(&self) -> MuxStats {
        let t = self.shared.table();
        let c = &self.shared.counters;
        MuxStats {
            local_addr: Some(self.shared.local_addr),
            connections: t.by_ufrag.len(),
            routes: t.by_remote.len(),
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            dropped_unknown: c.dropped_unknown.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
        }
    }
}

async fn read_loop(shared: Weak<Shared>, socket: Arc<dyn AsyncUdpSocket>) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let mut meta = [RecvMeta::default()];
        let res = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match res {
            Ok(n) => {
                for m in &meta[..n.min(1)] {
                    let len = m.len.min(buf.len());
                    for d in buf[..len].chunks(m.stride.clamp(1, len.max(1))) {
                        shared.route(m.addr, m.dst_ip, d);
                    }
                }
            }
            Err(e) => {
                // ICMP errors (a viewer gone) surface here on Linux; nothing to do.
                debug!(error = %e, "single-port socket receive error");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
}

/// What webrtc-rs gets for a connection's socket in single-port mode.
struct MuxedSocket {
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
    /// The connection's own ephemeral socket: unused, held so its address (the key
    /// webrtc-rs knows the connection's candidate by) stays unique.
    _own: std::net::UdpSocket,
}

impl std::fmt::Debug for MuxedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxedSocket")
            .field("local", &self.inbox.local)
            .field("shared", &self.shared.local_addr)
            .finish()
    }
}

impl Drop for MuxedSocket {
    fn drop(&mut self) {
        self.shared.forget(&self.inbox);
    }
}

impl MuxedSocket {
    /// Binds an address this connection sends to (its ICE agent checking a remote
    /// candidate) to this connection, so the answers come back to it before the remote's
    /// own checks have bound the address. An address another live connection holds is
    /// left to it.
    fn learn_destination(&self, to: SocketAddr) {
        let key = (to, Some(self.inbox.local.ip()));
        let mut t = self.shared.table();
        let held = t.by_remote.get(&key).and_then(Weak::upgrade).is_some();
        if !held && t.by_remote.len() < MAX_ROUTES {
            t.by_remote.insert(key, Arc::downgrade(&self.inbox));
        }
    }
}

impl AsyncUdpSocket for MuxedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inbox.local)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        // Many connections send through one socket, and waiting for a tokio socket's
        // readiness would let one connection's waker replace another's. A full send
        // buffer (4 MiB: it does not fill on a live stream) drops instead, as UDP may.
        let mut t = transmit.clone();
        if self.shared.local_addr.ip().is_unspecified() {
            t.src_ip = Some(self.inbox.local.ip());
        }
        // STUN (first byte 0 or 1): our ICE checks and responses; media never needs it.
        if t.contents.first().is_some_and(|b| *b < 2) {
            self.learn_destination(t.destination);
        }
        let c = &self.shared.counters;
        match self
            .shared
            .send_state
            .try_send(UdpSockRef::from(&self.shared.send_socket), &t)
        {
            Ok(()) => {
                crate::runtime::report_sent(&t, t.contents.len());
                c.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
            // On a shared socket an error (an ICMP "port unreachable" from a viewer gone
            // away) may belong to any connection: never fail this one for it.
            Err(e) => debug!(error = %e, to = %t.destination, "single-port send error"),
        }
        Poll::Ready(Ok(transmit.contents.len()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.inbox.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = s.queue.pop_front() else {
                break;
            };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = len;
            m.stride = len;
            m.dst_ip = Some(self.inbox.local.ip());
            meta[n] = m;
            n += 1;
        }
        if n == 0 {
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn max_gso_segments(&self) -> usize {
        self.shared.send_state.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        1
    }
}

/// The local ICE username fragment of a STUN binding request (`USERNAME` is
/// `"<receiver's ufrag>:<sender's ufrag>"`, RFC 8445 §7.2.2), if `d` is one.
fn stun_request_ufrag(d: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const MAGIC: u32 = 0x2112_A442;
    const USERNAME: u16 = 0x0006;
    if d.len() < 20 || u16::from_be_bytes([d[0], d[1]]) != BINDING_REQUEST {
        return None;
    }
    if u32::from_be_bytes([d[4], d[5], d[6], d[7]]) != MAGIC {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    let body = d.get(20..20 + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            let (local, _) = name.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, so the parser has to walk past one.
        attrs.extend_from_slice(&0x0024u16.to_be_bytes());
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut d = Vec::new();
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        d.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attrs);
        d
    }

    #[test]
    fn finds_the_receivers_ufrag_in_a_binding_request() {
        assert_eq!(
            stun_request_ufrag(&binding_request("abcd:wxyz")),
            Some("abcd")
        );
    }

    #[test]
    fn ignores_everything_that_is_not_a_binding_request_with_a_username() {
        let mut response = binding_request("abcd:wxyz");
        response[0] = 0x01; // 0x0101: binding success response
        assert_eq!(stun_request_ufrag(&response), None);
        let mut truncated = binding_request("abcd:wxyz");
        truncated.truncate(30);
        assert_eq!(stun_request_ufrag(&truncated), None);
        assert_eq!(stun_request_ufrag(&binding_request(":wxyz")), None);
        assert_eq!(stun_request_ufrag(&binding_request("nocolon")), None);
        assert_eq!(stun_request_ufrag(&[0x80, 0x60, 0, 1]), None); // RTP
        assert_eq!(stun_request_ufrag(&[22, 254, 253, 0]), None); // DTLS
    }

    #[tokio::test]
    async fn register_moves_only_our_host_candidates_to_the_shared_port() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let own = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = own.local_addr().unwrap();
        let _sock = mux.adopt(own).unwrap();
        let sdp = format!(
            "v=0\r\na=ice-ufrag:Uf1\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host\r\n\
             a=candidate:2 1 udp 2130706431 127.0.0.1 9 typ host\r\n\
             a=candidate:3 1 udp 1694498815 203.0.113.5 {} typ srflx raddr 0.0.0.0 rport 0\r\n",
            local.port(),
            local.port()
        );
        let out = mux.register(&sdp);
        let port = mux.local_addr().port();
        assert!(out.contains(&format!(
            "a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host\r\n"
        )));
        assert!(
            out.contains("127.0.0.1 9 typ host"),
            "not our socket: unchanged"
        );
        assert!(out.contains(&format!("203.0.113.5 {} typ srflx", local.port())));
        assert_eq!(mux.stats().connections, 1);
        drop(_sock);
        assert_eq!(
            mux.stats().connections,
            0,
            "a closed connection is forgotten"
        );
    }

    #[tokio::test]
    async fn routes_by_ice_check_then_by_source_and_drops_strangers() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let own = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = own.local_addr().unwrap();
        let sock = mux.adopt(own).unwrap();
        mux.register(&format!(
            "a=ice-ufrag:Uf1\r\na=candidate:1 1 udp 1 127.0.0.1 {} typ host\r\n",
            local.port()
        ));
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = mux.local_addr();
        stranger.send_to(b"\x80\x60hello", to).await.unwrap();
        peer.send_to(&binding_request("Uf1:peer"), to)
            .await
            .unwrap();
        peer.send_to(b"\x80\x60media", to).await.unwrap();

        let mut got = Vec::new();
        for _ in 0..2 {
            let mut buf = vec![0u8; 2048];
            let mut meta = [RecvMeta::default()];
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                std::future::poll_fn(|cx| {
                    let mut bufs = [IoSliceMut::new(&mut buf)];
                    sock.poll_recv(cx, &mut bufs, &mut meta)
                }),
            )
            .await
            .expect("datagram routed in time")
            .unwrap();
            assert_eq!(n, 1);
            assert_eq!(meta[0].addr, peer.local_addr().unwrap());
            got.push(buf[..meta[0].len].to_vec());
        }
        assert_eq!(got[1], b"\x80\x60media");
        // The stranger's datagram was read first (same socket, sent first) and dropped.
        let s = mux.stats();
        assert_eq!(s.dropped_unknown, 1, "{s:?}");
        assert_eq!(s.routes, 1);

        // Sending goes out of the shared port.
        let reply = Transmit {
            destination: peer.local_addr().unwrap(),
            ecn: None,
            contents: b"reply",
            segment_size: None,
            src_ip: None,
        };
        let n = std::future::poll_fn(|cx| sock.poll_send(cx, &reply))
            .await
            .unwrap();
        assert_eq!(n, 5);
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], to));
    }
}
