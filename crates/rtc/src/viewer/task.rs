//! The streaming loop of one viewer: frames from the bus into its paced queue and onto
//! its track, rendition moves, padding, stats and the metadata channel.

use super::extensions::{abs_capture_time, SendExtensions};
use super::registry::{
    lock_samples, push_bounded, set_state, state_name, IceParams, IceRestarted, ViewerRegistry,
    ViewerShared,
};
use super::setup::{registered_local_sdp, restarted_offer, LinkHandles};
use super::{AbortOnDrop, LinkStats, RtcConfig};
use crate::bus::{FrameBus, KeyframeRequest};
use crate::interceptor::has_keyframe_request;
use crate::ladder::RenditionChooser;
use crate::pacing::{SendQueue, PACING_FACTOR};
use crate::wire::WireTap;
use crate::MediaFrame;
use crate::RtcError;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, warn, Instrument};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

/// Resolves once the close switch is on (or its sender is gone).
pub(super) async fn wait_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// Prometheus handles of one viewer, labelled by detector.
pub(super) struct ViewerMetrics {
    pub(super) viewers: metrics::Gauge,
    pub(super) first_packet: metrics::Histogram,
    pub(super) last_packet: metrics::Histogram,
    pub(super) handoff_first: metrics::Histogram,
    pub(super) packets: metrics::Counter,
    pub(super) bytes: metrics::Counter,
    pub(super) frames_dropped: metrics::Counter,
    /// Viewers' link estimates, bits per second (one sample per look).
    pub(super) estimate: metrics::Histogram,
    pub(super) rendition_moves: metrics::Counter,
}

impl ViewerMetrics {
    pub(super) fn new(detector: &str) -> Self {
        Self::with_gauge(detector, "lumacast_viewers")
    }

    /// A publishing session's: counted in `lumacast_publish_sessions_active`, not as a
    /// viewer.
    pub(super) fn publisher(detector: &str) -> Self {
        Self::with_gauge(detector, "lumacast_publish_sessions_active")
    }

    fn with_gauge(detector: &str, gauge: &'static str) -> Self {
        let d = detector.to_string();
        ViewerMetrics {
            viewers: metrics::gauge!(gauge, "detector" => d.clone()),
            first_packet: metrics::histogram!("lumacast_frame_to_first_packet_seconds", "detector" => d.clone()),
            last_packet: metrics::histogram!("lumacast_frame_to_last_packet_seconds", "detector" => d.clone()),
            handoff_first: metrics::histogram!("lumacast_frame_to_first_handoff_seconds", "detector" => d.clone()),
            packets: metrics::counter!("lumacast_rtp_packets_sent_total", "detector" => d.clone()),
            bytes: metrics::counter!("lumacast_rtp_bytes_sent_total", "detector" => d.clone()),
            frames_dropped: metrics::counter!("lumacast_viewer_frames_dropped_total", "detector" => d.clone()),
            estimate: metrics::histogram!("lumacast_viewer_estimate_bps", "detector" => d.clone()),
            rendition_moves: metrics::counter!("lumacast_viewer_rendition_moves_total", "detector" => d),
        }
    }
}

pub(super) struct ViewerTask {
    pub(super) metrics: ViewerMetrics,
    pub(super) cfg: RtcConfig,
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) track: Arc<TrackLocalStaticRTP>,
    pub(super) payload_type: u8,
    pub(super) ssrc: u32,
    /// Times this viewer's packets on the socket; unregisters when the task ends.
    pub(super) tap: WireTap,
    pub(super) state_rx: watch::Receiver<RTCPeerConnectionState>,
    /// The viewer's data channel once it opens one, and the channel in use.
    pub(super) meta_rx: mpsc::Receiver<Arc<dyn DataChannel>>,
    pub(super) meta: Option<MetaChannel>,
    /// Each rendition's picture size (refreshed at every look), for the frame messages.
    pub(super) sizes: Vec<(u32, u32)>,
    pub(super) close_rx: watch::Receiver<bool>,
    pub(super) bus: FrameBus,
    pub(super) keyframe: KeyframeRequest,
    pub(super) shared: Arc<ViewerShared>,
    pub(super) registry: ViewerRegistry,
    pub(super) link: LinkHandles,
    /// The viewer negotiated RTX, and transport-wide feedback: its link can be probed
    /// with padding.
    pub(super) rtx: bool,
    pub(super) transport_cc: bool,
    /// Header extensions filled in on every packet (playout delay) or every frame's
    /// first packet (capture time).
    pub(super) extensions: SendExtensions,
    /// Told why the task ended (publishing sessions wait for it).
    pub(super) done: Option<tokio::sync::oneshot::Sender<&'static str>>,
}

/// The metadata channel of a viewer (see crates/rtc/src/meta.rs).
pub(super) struct MetaChannel {
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) open: Arc<std::sync::atomic::AtomicBool>,
    pub(super) sent: u64,
    pub(super) dropped: u64,
    pub(super) _reader: AbortOnDrop,
}

impl MetaChannel {
    /// Takes the viewer's channel: a task answers its pings and follows its state.
    pub(super) fn start(dc: Arc<dyn DataChannel>) -> Self {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dc, open) = (dc.clone(), open.clone());
            tokio::spawn(
                async move {
                    while let Some(event) = dc.poll().await {
                        match event {
                            DataChannelEvent::OnOpen => {
                                debug!("metadata channel open");
                                open.store(true, Ordering::Relaxed);
                            }
                            DataChannelEvent::OnMessage(m) => {
                                if let Some(pong) =
                                    crate::meta::answer(&m.data, crate::meta::unix_us())
                                {
                                    let _ = dc.try_send_text(&pong).await;
                                }
                            }
                            DataChannelEvent::OnClose => break,
                            _ => {}
                        }
                    }
                    open.store(false, Ordering::Relaxed);
                }
                .in_current_span(),
            )
        };
        MetaChannel {
            dc,
            open,
            sent: 0,
            dropped: 0,
            _reader: AbortOnDrop(Some(reader)),
        }
    }
}

/// How often a viewer task looks at its estimate (rendition choice, pacing rate, stats).
pub(super) const LOOK_INTERVAL: Duration = Duration::from_millis(200);
/// No padding while the viewer's own send queue holds more than this.
pub(super) const PADDING_MAX_QUEUE: Duration = Duration::from_millis(50);

/// The viewer's own RTP numbering and the timing of the frame being sent.
pub(super) struct Outgoing {
    pub(super) seq: u16,
    pub(super) ts_offset: u32,
    pub(super) write_errors: u64,
    pub(super) frame_first_us: u32,
    pub(super) frame_bytes: u64,
}

impl ViewerTask {
    /// Writes every packet the pacer lets out now, with this viewer's RTP header.
    pub(super) async fn send_ready(&mut self, queue: &mut SendQueue, out: &mut Outgoing) {
        while let Some(p) = queue.pop(Instant::now()) {
            let rtp_ts = out.ts_offset.wrapping_add(p.rtp_ts);
            let mut pkt = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: p.marker,
                    payload_type: self.payload_type,
                    sequence_number: out.seq,
                    timestamp: rtp_ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: p.payload.clone(),
            };
            // Ids 1-14 and payloads this small always fit a one-byte header extension.
            if let Some((id, delay)) = self.extensions.playout_delay {
                let _ = pkt.header.set_extension(id, Bytes::copy_from_slice(&delay));
            }
            if let (Some(id), true) = (self.extensions.abs_capture_time, p.first) {
                let _ = pkt
                    .header
                    .set_extension(id, Bytes::copy_from_slice(&abs_capture_time(p.captured_us)));
            }
            out.seq = out.seq.wrapping_add(1);
            let len = p.payload.len() as u64;
            if let Err(e) = self.track.write_rtp(pkt).await {
                out.write_errors += 1;
                if out.write_errors == 1 {
                    warn!(error = %e, "writing RTP failed (further errors only counted)");
                }
            }
            if p.first {
                out.frame_first_us = p.captured.elapsed().as_micros() as u32;
                out.frame_bytes = 0;
            }
            out.frame_bytes += len;
            self.metrics.packets.increment(1);
            self.metrics.bytes.increment(len);
            self.shared.packets_sent.fetch_add(1, Ordering::Relaxed);
            self.shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            if !p.marker {
                continue;
            }
            let now = Instant::now();
            let first_us = out.frame_first_us;
            let last_us = now.saturating_duration_since(p.captured).as_micros() as u32;
            if let Some(meta) = self
                .meta
                .as_mut()
                .filter(|m| m.open.load(Ordering::Relaxed))
            {
                let (width, height) = self.sizes.get(p.rendition).copied().unwrap_or((0, 0));
                let message = crate::meta::FrameMeta {
                    seq: p.frame_seq,
                    rtp_ts,
                    captured_us: p.captured_us,
                    encode_us: p.encode_us,
                    send_us: u64::from(last_us),
                    keyframe: p.keyframe,
                    bytes: out.frame_bytes,
                    rendition: p.rendition,
                    width,
                    height,
                }
                .message();
                // Never waits: a message that does not fit the bounded buffer is dropped.
                if meta.dc.try_send_text(&message).await.is_ok() {
                    meta.sent += 1;
                } else {
                    meta.dropped += 1;
                }
            }
            self.metrics.handoff_first.record(f64::from(first_us) / 1e6);
            {
                let mut s = lock_samples(&self.shared.samples);
                push_bounded(
                    &mut s.handoff,
                    (now, first_us, last_us, out.frame_bytes as u32),
                );
                // Frames whose packets have left the socket by now (usually
                // the previous ones: the driver sends after we hand over).
                self.tap.drain(|t| {
                    self.metrics
                        .first_packet
                        .record(f64::from(t.first_us) / 1e6);
                    self.metrics.last_packet.record(f64::from(t.last_us) / 1e6);
                    push_bounded(&mut s.wire, (now, t.first_us, t.last_us));
                });
            }
            self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An ICE restart (RFC 9725): the viewer's offer again with its new credentials and
    /// candidates; webrtc-rs restarts the ICE agent on it (keeping our candidates, DTLS and
    /// SRTP) and answers with new local credentials, which the single-port sockets learn.
    async fn restart_ice(&mut self, remote: &IceParams) -> Result<IceRestarted, RtcError> {
        let offer = self
            .pc
            .remote_description()
            .await
            .ok_or_else(|| RtcError::Unanswerable("the session has no offer yet".into()))?
            .sdp;
        let offer = restarted_offer(&offer, remote);
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| RtcError::Unanswerable(format!("ICE restart: {e}")))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| RtcError::Unanswerable(format!("ICE restart: {e}")))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description (ICE restart)", e))?;
        let sdp = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::webrtc("local_description", "missing after set"))?
            .sdp;
        let answer_sdp = registered_local_sdp(&self.cfg, sdp);
        let local = IceParams::parse(&answer_sdp)?;
        *self
            .shared
            .remote_ufrag
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(remote.ufrag.clone());
        let generation = self.shared.ice_generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(IceRestarted {
            answer_sdp,
            local,
            generation,
        })
    }

    pub(super) async fn run(mut self) {
        self.metrics.viewers.increment(1.0);
        let reason = self.stream().await;
        self.metrics.viewers.decrement(1.0);
        set_state(&self.shared, "closed");
        info!(
            reason,
            frames_sent = self.shared.frames_sent.load(Ordering::Relaxed),
            frames_dropped = self.shared.frames_dropped.load(Ordering::Relaxed),
            "viewer closed"
        );
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "closing the peer connection");
        }
        self.registry.remove(self.shared.id);
        if let Some(done) = self.done.take() {
            let _ = done.send(reason);
        }
    }

    /// Streams until the viewer goes away; returns why it ended.
    pub(super) async fn stream(&mut self) -> &'static str {
        let started = Instant::now();
        set_state(&self.shared, "connecting");
        // Subscribe and ask for the viewer's IDR now, while ICE and DTLS run: the IDR is
        // encoded in parallel with the handshake and waits in the (bounded) bus until we
        // are connected, instead of being requested only afterwards. If connecting takes
        // longer than the bus holds, `Lagged` below asks for a fresh one.
        let mut rx = self.bus.subscribe();
        self.keyframe.request("new viewer");
        // Trickled remote candidates (WHEP PATCH) go to the peer connection as they come.
        let trickle_rx = self
            .shared
            .trickle_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let trickle_task = trickle_rx.map(|mut rx| {
            let pc = self.pc.clone();
            tokio::spawn(
                async move {
                    while let Some(candidate) = rx.recv().await {
                        let init = RTCIceCandidateInit {
                            candidate,
                            sdp_mline_index: Some(0),
                            ..Default::default()
                        };
                        match pc.add_ice_candidate(init).await {
                            Ok(()) => debug!("trickled candidate added"),
                            Err(e) => warn!(error = %e, "a trickled candidate was refused"),
                        }
                    }
                }
                .in_current_span(),
            )
        });
        let _trickle_guard = AbortOnDrop(trickle_task);
        // Wait for the connection (ICE + DTLS), bounded.
        let connected = tokio::select! {
            r = tokio::time::timeout(
                self.cfg.connect_timeout,
                self.state_rx.wait_for(|s| matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )),
            ) => match r {
                Ok(Ok(s)) => *s,
                Ok(Err(_)) => return "peer connection dropped before connecting",
                Err(_) => {
                    warn!(timeout_s = self.cfg.connect_timeout.as_secs(), "viewer never connected (ICE/DTLS did not complete): is its network reachable from our candidates?");
                    return "connect timeout";
                }
            },
            _ = wait_closed(&mut self.close_rx) => return "closed by server",
        };
        if connected != RTCPeerConnectionState::Connected {
            warn!(state = state_name(connected), "viewer failed to connect");
            return "failed to connect";
        }
        info!(
            connect_ms = started.elapsed().as_millis() as u64,
            "viewer connected"
        );
        set_state(&self.shared, "connected");

        // Keyframe requests from the viewer (PLI/FIR) go to the encoder of the rendition
        // it is on.
        let track = self.track.clone();
        let kf = self.keyframe.clone();
        let shared = self.shared.clone();
        let on_rendition = Arc::new(AtomicUsize::new(0));
        let on = on_rendition.clone();
        let rtcp_task = tokio::spawn(
            async move {
                while let Some(evt) = track.poll().await {
                    if let TrackLocalEvent::OnRtcpPacket(packets) = evt {
                        if has_keyframe_request(&packets) {
                            debug!("viewer asked for a keyframe (PLI/FIR)");
                            shared.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            kf.request_for(on.load(Ordering::Relaxed), "pli");
                        }
                    }
                }
            }
            .in_current_span(),
        );

        let mut out = Outgoing {
            seq: rand::random(),
            ts_offset: rand::random(),
            write_errors: 0,
            frame_first_us: 0,
            frame_bytes: 0,
        };
        let mut queue = SendQueue::new();
        let mut chooser = RenditionChooser::with_padding(self.rtx && self.transport_cc);
        let mut current = 0usize;
        // A move in progress: the target's subscription, until its first keyframe.
        let mut pending: Option<(usize, broadcast::Receiver<Arc<MediaFrame>>, Instant)> = None;
        let mut waiting_for_keyframe = true;
        let mut disconnected_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut look = tokio::time::interval(LOOK_INTERVAL);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue_drops = 0u64;

        let mut restart_rx = self
            .shared
            .restart_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let reason = loop {
            let release = queue.next_release(Instant::now());
            tokio::select! {
                biased;
                _ = wait_closed(&mut self.close_rx) => break "closed by server",
                Some(req) = async { restart_rx.as_mut()?.recv().await }, if restart_rx.is_some() => {
                    let result = self.restart_ice(&req.remote).await;
                    match &result {
                        Ok(r) => info!(generation = r.generation, candidates = req.remote.candidates.len(), "ICE restarted"),
                        Err(e) => warn!(error = %e, "ICE restart refused"),
                    }
                    let _ = req.reply.send(result);
                }
                changed = self.state_rx.changed() => {
                    if changed.is_err() {
                        break "peer connection dropped";
                    }
                    let s = *self.state_rx.borrow_and_update();
                    match s {
                        RTCPeerConnectionState::Failed => break "connection failed",
                        RTCPeerConnectionState::Closed => break "closed by viewer",
                        RTCPeerConnectionState::Disconnected => {
                            set_state(&self.shared, "disconnected");
                            disconnected_since.get_or_insert_with(Instant::now);
                        }
                        RTCPeerConnectionState::Connected => {
                            set_state(&self.shared, "connected");
                            disconnected_since = None;
                        }
                        _ => {}
                    }
                }
                Some(dc) = self.meta_rx.recv(), if self.meta.is_none() => {
                    info!("the viewer opened a metadata channel");
                    self.meta = Some(MetaChannel::start(dc));
                }
                _ = tick.tick() => {
                    if disconnected_since.is_some_and(|t| t.elapsed() > self.cfg.disconnect_timeout) {
                        break "disconnected too long";
                    }
                }
                _ = async { tokio::time::sleep_until(release.unwrap_or_else(Instant::now).into()).await }, if release.is_some() => {
                    self.send_ready(&mut queue, &mut out).await;
                }
                _ = look.tick() => {
                    // The estimate, where the viewer's feedback says one.
                    let now = Instant::now();
                    let est = *self.link.estimate.lock().unwrap_or_else(|e| e.into_inner());
                    let remb = self.link.remb.load(Ordering::Relaxed) as f64;
                    let (feedback, estimate, congested) = if est.reports > 0 {
                        ("transport-cc", est.bitrate_bps, est.congested)
                    } else if remb > 0.0 {
                        ("remb", remb, false)
                    } else {
                        ("none", 0.0, false)
                    };
                    queue.set_rate((estimate > 0.0).then_some(estimate * PACING_FACTOR));
                    let ladder = self.bus.ladder();
                    self.sizes = ladder.iter().map(|r| (r.width, r.height)).collect();
                    if current >= ladder.len().max(1) && pending.is_none() {
                        // The ladder lost this step (turned off, or the picture shrank):
                        // back to the full size.
                        info!(from = current, "the ladder changed: viewer moves to the full-size rendition");
                        chooser.reset_to(0);
                        pending = Some((0, self.bus.subscribe_to(0), now));
                        self.keyframe.request_for(0, "rendition gone");
                    } else if estimate > 0.0 && ladder.len() > 1 {
                        let bitrates: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
                        if let Some((to, why)) = chooser.decide(now, estimate, congested, &bitrates) {
                            if to != current || pending.is_some() {
                                info!(
                                    from = current,
                                    to,
                                    why = why.as_str(),
                                    estimate_kbps = (estimate / 1000.0) as u64,
                                    loss = est.loss,
                                    queue_ms = est.queue_ms as u64,
                                    "viewer moves to another rendition"
                                );
                                if to == current {
                                    // Back where it is: nothing to wait for, but frames of
                                    // this rendition dropped meanwhile need a keyframe.
                                    pending = None;
                                    if waiting_for_keyframe {
                                        self.keyframe.request_for(current, "rendition move cancelled");
                                    }
                                } else {
                                    if to > current {
                                        // Down: the link cannot carry what is queued of this
                                        // rendition; let the smaller IDR through first.
                                        queue_drops += queue.drop_unstarted();
                                    }
                                    pending = Some((to, self.bus.subscribe_to(to), now));
                                    self.keyframe.request_for(to, "rendition switch");
                                }
                            }
                        }
                    }
                    // A move whose keyframe has not come: ask again.
                    if let Some((to, _, since)) = pending.as_mut() {
                        if now.saturating_duration_since(*since) > Duration::from_secs(1) {
                            *since = now;
                            self.keyframe.request_for(*to, "rendition switch (again)");
                        }
                    }
                    // Padding probes the link above the media (only with RTX; nothing
                    // while a move is under way or the viewer's own queue is behind).
                    let padding_bps = if ladder.len() > 1 && estimate > 0.0 {
                        let bitrates: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
                        let total = chooser.padding_target(now, estimate, congested, &bitrates);
                        let media = bitrates.get(current).copied().unwrap_or(0) as f64;
                        if pending.is_none() && queue.delay() < PADDING_MAX_QUEUE {
                            (total - media).max(0.0)
                        } else {
                            0.0
                        }
                    } else {
                        0.0
                    };
                    self.link.nack.padding_bps.store(padding_bps as u64, Ordering::Relaxed);
                    let r = ladder.get(current).copied();
                    let mut l = self.shared.link.lock().unwrap_or_else(|e| e.into_inner());
                    *l = LinkStats {
                        feedback,
                        estimate_bps: estimate,
                        loss: if feedback == "transport-cc" { est.loss } else { 0.0 },
                        queue_ms: est.queue_ms,
                        rendition: current,
                        width: r.map_or(0, |r| r.width),
                        height: r.map_or(0, |r| r.height),
                        switches: chooser.switches(),
                        pacing_bps: queue.rate().unwrap_or(0.0),
                        send_queue_ms: queue.delay().as_secs_f64() * 1e3,
                        frames_dropped_queue: queue_drops,
                        nack_requested: self.link.nack.requested.load(Ordering::Relaxed),
                        nack_resent: self.link.nack.resent.load(Ordering::Relaxed),
                        nack_refused: self.link.nack.refused.load(Ordering::Relaxed),
                        rtx: self.rtx,
                        padding_bps,
                        padding_packets: self.link.nack.padding_packets.load(Ordering::Relaxed),
                        meta_sent: self.meta.as_ref().map(|m| m.sent),
                        meta_dropped: self.meta.as_ref().map_or(0, |m| m.dropped),
                    };
                    drop(l);
                    self.metrics.estimate.record(estimate);
                }
                r = async {
                    match pending.as_mut() {
                        Some((_, rx, _)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(frame) if frame.keyframe => {
                        // The target's first keyframe: the move happens here, on the same
                        // track and SSRC; what is queued of the old rendition and has not
                        // started is dropped (the new picture replaces it).
                        let Some((to, new_rx, _)) = pending.take() else { continue };
                        queue.drop_unstarted();
                        rx = new_rx;
                        current = to;
                        on_rendition.store(to, Ordering::Relaxed);
                        self.metrics.rendition_moves.increment(1);
                        waiting_for_keyframe = false;
                        queue.push_frame(&frame);
                        self.tap.expect(out.ts_offset.wrapping_add(frame.rtp_ts), frame.captured);
                        self.send_ready(&mut queue, &mut out).await;
                    }
                    Ok(_) => {} // not decodable on its own: wait for the keyframe
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break "detector stopped",
                },
                r = rx.recv() => match r {
                        Ok(_) if pending.as_ref().is_some_and(|(to, _, _)| *to > current) => {
                        // Moving down: frames of the rendition being left only delay the
                        // smaller keyframe on a link that cannot carry them.
                        self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        waiting_for_keyframe = true;
                    }
                    Ok(frame) => {
                        if waiting_for_keyframe {
                            if !frame.keyframe {
                                self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            waiting_for_keyframe = false;
                            debug!(seq = frame.seq, rendition = current, "keyframe to viewer");
                        }
                        queue.push_frame(&frame);
                        if queue.over_bound() {
                            // The link cannot carry what is queued: drop whole frames that
                            // have not started and resume on a keyframe (latest wins).
                            let n = queue.drop_unstarted();
                            queue_drops += n;
                            self.shared.frames_dropped.fetch_add(n, Ordering::Relaxed);
                            self.metrics.frames_dropped.increment(n);
                            if queue_drops == n {
                                warn!(dropped = n, pacing_kbps = queue.rate().unwrap_or(0.0) as u64 / 1000, "viewer's link is too slow for its rendition: frames dropped, resyncing on a keyframe (further drops only counted)");
                            }
                            waiting_for_keyframe = true;
                            self.keyframe.request_for(current, "viewer queue full");
                            continue;
                        }
                        self.tap.expect(out.ts_offset.wrapping_add(frame.rtp_ts), frame.captured);
                        self.send_ready(&mut queue, &mut out).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // This viewer fell behind; the others did not wait for it. Resume on
                        // the next keyframe so it never decodes from a broken reference.
                        self.shared.frames_dropped.fetch_add(missed, Ordering::Relaxed);
                        self.metrics.frames_dropped.increment(missed);
                        warn!(missed, "viewer too slow: frames dropped, resyncing on a keyframe");
                        queue.drop_unstarted();
                        waiting_for_keyframe = true;
                        self.keyframe.request_for(current, "viewer lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break "detector stopped",
                }
            }
        };
        rtcp_task.abort();
        reason
    }
}
