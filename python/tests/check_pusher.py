"""Checks the lumacast package against a running server with a push detector.

    PYTHONPATH=python python3 python/tests/check_pusher.py http://127.0.0.1:8080 ext

Run by tests/python_package.rs (cargo test --test python_package). Exits non-zero with
a message on the first failed check; the last line of its output is a JSON summary.
"""

import json
import socket
import sys
import time

import numpy as np

import lumacast

W, H, BITS, FRAMES = 64, 48, 12, 30


def mono16(n: int) -> np.ndarray:
    """Frame n: a known 12-bit value at every pixel."""
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 7 + y * 13 + n * 101) % (1 << BITS)).astype(np.uint16)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"check failed: {what}")


def read_back(server: lumacast.Server, detector: str, x: int, y: int, expected) -> dict:
    """Waits (bounded) until the newest frame's value at (x, y) is `expected`.

    (The push answer's `seq` is the client's frame number, 0 without one, so the value
    itself tells when the pushed frame is the newest.)"""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            doc = server.request("GET", f"/api/detectors/{detector}/values", {"x": x, "y": y})
        except lumacast.LumacastError as e:
            # 409 until the capture thread has taken the first frame from the mailbox.
            if e.status != 409 or time.monotonic() > deadline:
                raise
            doc = {"error": e.message}
        if doc.get("value") == expected:
            return doc
        if time.monotonic() > deadline:
            raise SystemExit(f"check failed: value at ({x}, {y}) is not {expected}: {doc}")
        time.sleep(0.02)


def main() -> int:
    url, detector = sys.argv[1], sys.argv[2]
    server = lumacast.Server(url, timeout=10)
    summary = {}

    # 0. The server helper: start and stop the detector (before any frame).
    check(server.start(detector)["status"] == "success", "start")
    check(server.stats(detector)["running"] is True, "started")
    try:
        server.value(detector, 0, 0)
    except lumacast.LumacastError as e:
        check(e.status == 409, f"no frame yet: {e}")
    else:
        raise SystemExit("check failed: a value before any frame")
    check(server.stop(detector)["status"] == "success", "stop")
    check(server.stats(detector)["running"] is False, "stopped")
    check(any(d.get("name") == detector for d in server.detectors()), "listed")
    # The pixel size, as a stream parameter (all or nothing; a bad one names its field).
    check(server.set_params(detector, pixel_um=6.5)["pixel_um"] == 6.5, "pixel_um set")
    check(any(d["name"] == detector and d["pixel_um"] == 6.5 for d in server.detectors()),
          "pixel_um listed")
    try:
        server.set_params(detector, pixel_um=-1)
    except lumacast.LumacastError as e:
        check(e.status == 400 and "pixel_um" in e.message, f"bad pixel_um: {e}")
    else:
        raise SystemExit("check failed: a negative pixel_um was accepted")
    check(server.set_params(detector, pixel_um=None)["pixel_um"] is None, "pixel_um cleared")

    # A push starts a stopped push detector.
    with lumacast.Pusher(url, detector, bit_depth=BITS, timeout=10) as p:
        # 1. Thirty known Mono16 frames on one connection.
        t0 = time.time_ns() // 1000
        for n in range(FRAMES):
            answer = p.push(mono16(n), timestamp_us=t0 + n * 33_000, frame_number=1000 + n)
            check(answer["status"] == "success", f"push {n}: {answer}")
        check(p.frames_pushed == FRAMES, f"frames_pushed {p.frames_pushed}")
        check(p.connections_opened == 1, f"{p.connections_opened} connections for {FRAMES} pushes")
        check(answer["frames_received"] >= FRAMES, f"server counted {answer}")
        check(answer["pixel_format"] == "mono16" and answer["width"] == W, f"{answer}")
        check(answer["seq"] == 1000 + FRAMES - 1, f"seq follows frame_number: {answer}")
        doc = read_back(server, detector, 5, 9, int(mono16(FRAMES - 1)[9, 5]))
        check(doc["seq"] == answer["seq"], f"newest frame {doc}, last pushed {answer}")
        summary["frames_received"] = answer["frames_received"]

        # 2. Mono8 and RGB8 (the size may change between frames).
        gray = np.full((32, 40), 77, np.uint8)
        gray[3, 2] = 201
        a = p.push(gray)
        check(a["pixel_format"] == "mono8", f"{a}")
        read_back(server, detector, 2, 3, 201)
        rgb = np.zeros((20, 24, 3), np.uint8)
        rgb[4, 6] = (10, 200, 30)
        a = p.push(rgb)
        check(a["pixel_format"] == "rgb8", f"{a}")
        read_back(server, detector, 6, 4, [10, 200, 30])

        # 3. Bad frames: another dtype or shape is refused before sending ...
        for bad, kind in (
            (np.zeros((H, W), np.float32), TypeError),
            (np.zeros((H, W, 3), np.uint16), ValueError),
            (np.zeros(W * H, np.uint16), ValueError),
            (np.zeros((H, W, 4), np.uint8), ValueError),
        ):
            try:
                p.push(bad)
            except kind as e:
                check("uint8" in str(e) and "uint16" in str(e), f"unclear message: {e}")
            else:
                raise SystemExit(f"check failed: {bad.dtype} {bad.shape} was accepted")
        # ... and what only the server knows (sizes, detector names) comes back as its
        # JSON message.
        try:
            p.push(np.zeros((8, 8), np.uint16))
        except lumacast.LumacastError as e:
            check(e.status == 400, f"status {e.status}")
            check("below the 16x16 minimum" in e.message, f"message: {e.message}")
            summary["server_message"] = e.message
        else:
            raise SystemExit("check failed: an 8x8 frame was accepted")
        try:
            with lumacast.Pusher(url, "no-such-detector", timeout=10) as q:
                q.push(mono16(0))
        except lumacast.LumacastError as e:
            check(e.status == 404 and "no-such-detector" in e.message, f"{e}")
        else:
            raise SystemExit("check failed: pushed to an unknown detector")
        check(p.connections_opened == 1, f"{p.connections_opened} connections after refusals")

        # 4. A connection that dies under the pusher: the next push reconnects once.
        p._conn.sock.shutdown(socket.SHUT_RDWR)
        a = p.push(mono16(FRAMES))
        check(p.connections_opened == 2, f"{p.connections_opened} connections after a drop")
        summary["connections_opened"] = p.connections_opened

        # The last frame, for the Rust side to read back.
        last = p.push(mono16(FRAMES - 1), frame_number=5000)
        doc = read_back(server, detector, 0, 0, int(mono16(FRAMES - 1)[0, 0]))
        check(doc["seq"] == 5000, f"{doc}")
        summary["frames_pushed"] = p.frames_pushed
        # The server's counters for this detector: every frame it received was either
        # taken by the capture thread or replaced in the one-frame mailbox by a newer one.
        summary["last_frames_received"] = last["frames_received"]
        summary["last_frames_replaced"] = last["frames_replaced"]
        summary["last_seq"] = last["seq"]

    summary["module"] = lumacast.__file__
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
