//! The tokio runtime for webrtc-rs, with UDP socket buffers sized for video.
//!
//! A 720p keyframe is 100-200 KB, i.e. 100+ RTP packets that leave in one burst. The
//! Linux default receive buffer (212 KB of *truesize*, about 90 loopback packets) then
//! overflows whenever the reading task is not scheduled for a few milliseconds, and the
//! viewer loses part of every keyframe. Bigger buffers absorb the burst without adding
//! any latency (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
//!
//! Every socket is also wrapped so that each datagram it sent is reported to
//! [`crate::wire`], which times when a frame's RTP packets really left.

use std::future::Future;
use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

const MDNS_PORT: u16 = 5353;

/// Requested socket buffer size (bytes) for every WebRTC UDP socket.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct MediaRuntime {
    inner: TokioRuntime,
    /// Single-port mode: connections' sockets are replaced by views of this one.
    mux: Option<crate::mux::UdpMux>,
}

/// The runtime of one peer connection; with `mux`, its sockets go through the shared
/// single-port socket.
pub(crate) fn media_runtime(mux: Option<crate::mux::UdpMux>) -> Arc<dyn Runtime> {
    Arc::new(MediaRuntime {
        inner: TokioRuntime,
        mux,
    })
}

/// A tokio UDP socket with media-sized buffers that reports what it sends to
/// [`crate::wire`].
pub(crate) fn wrap_timed(socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer than asked is still a working socket.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(UDP_BUFFER_BYTES);
    let inner = TokioRuntime.wrap_udp_socket(socket)?;
    Ok(Arc::new(TimedUdpSocket { inner }))
}

impl Runtime for MediaRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // The mDNS socket (port 5353, resolving browsers' `.local` candidates) stays
        // its own; only ICE sockets go through the single port.
        // An address of the other IP family than the single port (IPv6 next to an IPv4
        // port) keeps its own socket too: it could not be reached through the port.
        let local = socket.local_addr().ok();
        let mdns = local.is_some_and(|a| a.port() == MDNS_PORT);
        match &self.mux {
            Some(mux)
                if !mdns && local.is_some_and(|a| a.is_ipv4() == mux.local_addr().is_ipv4()) =>
            {
                mux.adopt(socket)
            }
            _ => wrap_timed(socket),
        }
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (lumacast media buffers)"
    }
}

/// Reports the first `n` bytes of `transmit`, just sent, to [`crate::wire`].
pub(crate) fn report_sent(transmit: &Transmit<'_>, n: usize) {
    let now = Instant::now();
    let sent = &transmit.contents[..n.min(transmit.contents.len())];
    match transmit.segment_size {
        // GSO: one buffer, several datagrams of `size` bytes each.
        Some(size) if size > 0 => {
            for d in sent.chunks(size) {
                crate::wire::on_datagram(d, now);
            }
        }
        _ => crate::wire::on_datagram(sent, now),
    }
}

/// A UDP socket that reports every datagram it sent to [`crate::wire`].
#[derive(Debug)]
struct TimedUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl AsyncUdpSocket for TimedUdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let r = self.inner.poll_send(cx, transmit);
        if let Poll::Ready(Ok(n)) = &r {
            report_sent(transmit, *n);
        }
        r
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}
