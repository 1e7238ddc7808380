//! One TCP port for every viewer's ICE-TCP (RFC 6544) connection.
//!
//! webrtc-rs 0.21 binds a passive TCP listener per peer connection (on an ephemeral port).
//! With `--ice-tcp-port` the answer advertises this one shared port instead; each
//! connection a viewer opens to it is read up to its first RFC 4571 frame (the ICE
//! connectivity check, a STUN Binding request), routed by the `USERNAME` attribute's
//! first half (our ICE username fragment, registered with the answer) to that viewer's
//! own listener, and then spliced through unchanged, both ways.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Most registered answers; older ones go first.
const MAX_UFRAGS: usize = 4096;
/// A registration older than this is forgotten (a viewer connects within seconds).
const KEEP: Duration = Duration::from_secs(120);
/// Longest wait for a connection's first frame.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// Most connections waiting for their first frame at once; more are closed at once.
const MAX_PENDING: usize = 256;

type Table = HashMap<String, (Instant, Vec<SocketAddr>)>;

struct Shared {
    local_addr: SocketAddr,
    table: Mutex<Table>,
    pending: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared ICE-TCP port (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct IceTcpMux {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IceTcpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceTcpMux")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl IceTcpMux {
    /// Binds `addr` and starts accepting; must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> std::io::Result<IceTcpMux> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        let shared = Arc::new(Shared {
            local_addr,
            table: Mutex::new(HashMap::new()),
            pending: Default::default(),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Some(shared) = weak.upgrade() else { return };
                use std::sync::atomic::Ordering::Relaxed;
                if shared.pending.fetch_add(1, Relaxed) >= MAX_PENDING {
                    shared.pending.fetch_sub(1, Relaxed);
                    debug!(%peer, "ice-tcp: too many connections waiting; closed");
                    continue;
                }
                tokio::spawn(async move {
                    if let Err(e) = forward(&shared, stream).await {
                        debug!(%peer, "ice-tcp: connection not forwarded: {e}");
                    }
                });
            }
        });
        Ok(IceTcpMux { shared })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Moves the answer's passive TCP host candidates to the shared port and remembers
    /// where they really listen, under the answer's ICE username fragment.
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
            let ours = (f.len() >= 10
                && f[2].eq_ignore_ascii_case("tcp")
                && f[7] == "host"
                && f[8] == "tcptype"
                && f[9] == "passive")
                .then(|| format!("{}:{}", f[4], f[5]).parse::<SocketAddr>().ok())
                .flatten()
                .filter(|a| a.is_ipv4() == self.shared.local_addr.is_ipv4());
            match ours {
                Some(local) => {
                    if !locals.contains(&local) {
                        locals.push(local);
                    }
                    f[5] = &port;
                    out.push_str("a=candidate:");
                    out.push_str(&f.join(" "));
                    out.push_str("\r\n");
                }
                None => out.push_str(line),
            }
        }
        if let (Some(ufrag), false) = (ufrag, locals.is_empty()) {
            let now = Instant::now();
            let mut t = self.shared.table();
            t.retain(|_, (at, _)| now.duration_since(*at) < KEEP);
            if t.len() >= MAX_UFRAGS {
                if let Some(oldest) = t
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    t.remove(&oldest);
                }
            }
            t.insert(ufrag, (now, locals));
        }
        out
    }
}

/// Our ICE username fragment from a STUN Binding request (`USERNAME` = "ours:theirs").
fn stun_ufrag(msg: &[u8]) -> Option<String> {
    if msg.len() < 20 || msg[0..2] != [0x00, 0x01] {
        return None;
    }
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let body = msg.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next().map(str::to_owned);
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

async fn forward(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut first = vec![0u8; 2];
    let read = tokio::time::timeout(FIRST_FRAME, async {
        stream.read_exact(&mut first).await?;
        let n = u16::from_be_bytes([first[0], first[1]]) as usize;
        first.resize(2 + n, 0);
        stream.read_exact(&mut first[2..]).await.map(|_| ())
    })
    .await;
    shared
        .pending
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    read.map_err(|_| invalid("no first frame in time"))??;
    let ufrag = stun_ufrag(&first[2..]).ok_or_else(|| invalid("not a STUN binding request"))?;
    let local_ip = stream.local_addr()?.ip();
    let target = {
        let t = shared.table();
        let (_, locals) = t.get(&ufrag).ok_or_else(|| invalid("unknown ufrag"))?;
        locals
            .iter()
            .find(|a| a.ip() == local_ip)
            .or_else(|| locals.first())
            .copied()
            .ok_or_else(|| invalid("no listener"))?
    };
    let mut inner = TcpStream::connect(target).await?;
    let _ = inner.set_nodelay(true);
    let _ = stream.set_nodelay(true);
    inner.write_all(&first).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut inner).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ufrag_is_the_first_half_of_the_username() {
        let user = b"abcd:efgh";
        let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        // a PRIORITY attribute first, then USERNAME (9 bytes, padded to 12)
        msg.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        msg.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        msg.extend_from_slice(user);
        msg.extend_from_slice(&[0, 0, 0]);
        let len = (msg.len() - 20) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(stun_ufrag(&msg).as_deref(), Some("abcd"));
        msg[1] = 0x02;
        assert_eq!(stun_ufrag(&msg), None);
    }

    #[tokio::test]
    async fn register_moves_passive_tcp_candidates_to_the_shared_port() {
        let mux = IceTcpMux::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = mux.local_addr().port();
        let sdp = "a=ice-ufrag:Uf1\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
                   a=candidate:2 1 tcp 2124414975 127.0.0.1 40001 typ host tcptype passive\r\n\
                   a=candidate:2 1 tcp 2128609279 127.0.0.1 9 typ host tcptype active\r\n";
        let out = mux.register(sdp);
        assert!(out.contains("127.0.0.1 50000 typ host\r\n"), "{out}");
        assert!(
            out.contains(&format!("127.0.0.1 {port} typ host tcptype passive\r\n")),
            "{out}"
        );
        assert!(out.contains("127.0.0.1 9 typ host tcptype active"), "{out}");
        let t = mux.shared.table();
        assert_eq!(
            t["Uf1"].1,
            vec!["127.0.0.1:40001".parse::<SocketAddr>().unwrap()]
        );
    }
}
