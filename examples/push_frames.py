# Run: python3 examples/push_frames.py --url http://127.0.0.1:8080 --detector push --width 640 --height 480 --fps 20 --bits 12 --count 0
"""Push synthetic Mono16 frames to a lumacast "push" detector over HTTP.

Each frame is POSTed to {url}/api/detectors/{detector}/frames as one
application/octet-stream body: a 32-byte little-endian header followed by the raw
pixels (the format is documented in crates/capture/src/push.rs):

    0..4   magic b"LMCF"         4  version 1
    5      pixel format (1 = mono8, 2 = mono16, 3 = rgb8)
    6      bit depth (mono16: 1..16, 0 means 16; mono8/rgb8: 0 or 8)
    7      flags (bit 0: timestamp present, bit 1: frame number present)
    8..12  width u32             12..16 height u32
    16..24 frame number u64      24..32 timestamp u64, microseconds since the UNIX epoch
    32..   pixels, row-major; mono16 as little-endian u16

Needs Python 3 and numpy only. Other programs can reuse the encoder:

    from push_frames import pack_frame
    body = pack_frame(image_uint16, frame_number=n, timestamp_us=t_us, bit_depth=12)
"""

import argparse
import json
import struct
import sys
import time
import urllib.error
import urllib.request

import numpy as np

MAGIC = b"LMCF"
VERSION = 1
FORMAT_MONO8, FORMAT_MONO16, FORMAT_RGB8 = 1, 2, 3
FLAG_TIMESTAMP, FLAG_FRAME_NUMBER = 0x01, 0x02
# magic, version, format, bit depth, flags, width, height, frame number, timestamp
HEADER = struct.Struct("<4sBBBBIIQQ")
assert HEADER.size == 32


def pack_frame(arr, frame_number=None, timestamp_us=None, bit_depth=None):
    """Encode one frame (header + pixels) as the bytes of a POST body.

    arr: 2-D uint8 (mono8), 2-D uint16 (mono16) or H x W x 3 uint8 (rgb8).
    frame_number, timestamp_us: ints, or None to leave them out (the server then
    numbers the frame itself and uses the arrival time).
    bit_depth: mono16 significant bits, 1..16 (None means 16); for mono8/rgb8 it must be
    None, 0 or 8.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.dtype == np.uint16:
        fmt = FORMAT_MONO16
        depth = 16 if bit_depth is None else int(bit_depth)
        if not 1 <= depth <= 16:
            raise ValueError(f"mono16 bit_depth must be in 1..16, got {bit_depth}")
        pixels = arr.astype("<u2", copy=False)
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        fmt = FORMAT_MONO8 if arr.ndim == 2 else FORMAT_RGB8
        if bit_depth not in (None, 0, 8):
            raise ValueError(f"bit_depth must be None, 0 or 8 for 8-bit frames, got {bit_depth}")
        depth = 8
        pixels = arr
    else:
        raise ValueError(
            f"unsupported array {arr.dtype} {arr.shape}: expected 2-D uint8, 2-D uint16 "
            "or H x W x 3 uint8"
        )
    height, width = arr.shape[:2]
    flags = 0
    if timestamp_us is not None:
        flags |= FLAG_TIMESTAMP
    if frame_number is not None:
        flags |= FLAG_FRAME_NUMBER
    header = HEADER.pack(
        MAGIC,
        VERSION,
        fmt,
        depth,
        flags,
        width,
        height,
        0 if frame_number is None else int(frame_number),
        0 if timestamp_us is None else int(timestamp_us),
    )
    return header + np.ascontiguousarray(pixels).tobytes()


class Pattern:
    """Moving test picture: a diagonal gradient, a bright blob on a Lissajous path and
    Gaussian noise, scaled to `bits` significant bits."""

    def __init__(self, width, height, bits, seed=1):
        self.width, self.height = width, height
        self.max = (1 << bits) - 1
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        self.x, self.y = x, y
        self.gradient = 0.35 * (x / max(width - 1, 1) + y / max(height - 1, 1)) / 2
        self.sigma2 = 2 * (min(width, height) / 8.0) ** 2
        self.rng = np.random.default_rng(seed)

    def frame(self, n):
        t = n / 20.0
        cx = self.width * (0.5 + 0.35 * np.sin(1.3 * t))
        cy = self.height * (0.5 + 0.35 * np.sin(0.9 * t + 0.5))
        blob = np.exp(-((self.x - cx) ** 2 + (self.y - cy) ** 2) / self.sigma2)
        img = 0.05 + self.gradient + 0.55 * blob
        img += self.rng.normal(0.0, 0.02, img.shape).astype(np.float32)
        return (np.clip(img, 0.0, 1.0) * self.max).astype(np.uint16)


def error_message(err):
    """The server's JSON error message of an HTTPError, else its raw body."""
    try:
        body = err.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - best effort, the status line still counts it
        body = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            for key in ("error", "message", "detail"):
                if key in doc:
                    return f"HTTP {err.code}: {doc[key]}"
    except ValueError:
        pass
    return f"HTTP {err.code}: {body.strip() or err.reason}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    ap.add_argument("--detector", default="push", help="name of the push detector")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=20.0, help="frames per second to send")
    ap.add_argument("--bits", type=int, default=12, help="significant bits per pixel, 1..16")
    ap.add_argument("--count", type=int, default=0, help="frames to send; 0 = forever")
    ap.add_argument("--token", default=None, help="sent as 'Authorization: Bearer TOKEN'")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    args = ap.parse_args()
    if not 1 <= args.bits <= 16:
        ap.error("--bits must be in 1..16")
    if args.fps <= 0:
        ap.error("--fps must be positive")
    if args.width <= 0 or args.height <= 0:
        ap.error("--width and --height must be positive")

    endpoint = f"{args.url.rstrip('/')}/api/detectors/{args.detector}/frames"
    headers = {"Content-Type": "application/octet-stream"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    pattern = Pattern(args.width, args.height, args.bits)
    period = 1.0 / args.fps
    print(
        f"pushing {args.width}x{args.height} mono16 ({args.bits}-bit) at {args.fps:g} fps "
        f"to {endpoint}",
        flush=True,
    )

    sent = errors = n = 0
    last_error = None
    anchor, index = time.monotonic(), 0
    next_status = anchor + 1.0
    try:
        while args.count == 0 or n < args.count:
            image = pattern.frame(n)
            # Absolute schedule (frame k due at anchor + k * period), re-anchored when
            # more than a period late so a stall does not cause a burst.
            now = time.monotonic()
            due = anchor + index * period
            if due > now:
                time.sleep(due - now)
            elif now - due > period:
                anchor, index = now, 0
            index += 1

            # Stamped when released, as close to the schedule as possible.
            body = pack_frame(
                image, frame_number=n, timestamp_us=time.time_ns() // 1000, bit_depth=args.bits
            )
            req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            message = None
            try:
                with urllib.request.urlopen(req, timeout=args.timeout) as resp:
                    resp.read()
                sent += 1
            except urllib.error.HTTPError as e:
                message = error_message(e)
            except (urllib.error.URLError, OSError) as e:
                message = f"request failed: {getattr(e, 'reason', e)}"
            if message is not None:
                errors += 1
                # Print each distinct error once; repeats are only counted.
                if message != last_error:
                    print(f"frame {n}: {message}", file=sys.stderr, flush=True)
                    last_error = message
            n += 1

            now = time.monotonic()
            if now >= next_status:
                print(f"frames sent {sent}, errors {errors}", flush=True)
                next_status = now + 1.0
    except KeyboardInterrupt:
        pass
    print(f"done: frames sent {sent}, errors {errors}", flush=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
