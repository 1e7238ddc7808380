"""A detector loop: grab a frame, push it, repeat; prints the rate it reaches.

    python3 python/examples/detector_loop.py --url http://127.0.0.1:8080 --detector ext \\
        --width 2048 --height 2048 --fps 0 --seconds 10

Replace `grab()` with your camera's call (ImSwitch: `detector.getLatestFrame()`,
pycro-manager / pymmcore: `core.pop_next_image()`, ...). `--fps 0` pushes as fast as
the server answers (a throughput measurement).
"""

import argparse
import time

import numpy as np

import lumacast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--detector", default="ext")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--bits", type=int, default=12)
    ap.add_argument("--fps", type=float, default=20.0, help="0: as fast as possible")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    # A few prepared frames (a moving bright bar on noise) so that grabbing costs nothing.
    rng = np.random.default_rng(1)
    top = (1 << args.bits) - 1
    frames = []
    for k in range(8):
        f = rng.integers(0, top // 8, (args.height, args.width), dtype=np.uint16)
        x0 = k * args.width // 8
        f[:, x0 : x0 + args.width // 16] = top * 3 // 4
        frames.append(f)

    def grab(n: int) -> np.ndarray:
        return frames[n % len(frames)]

    period = 1.0 / args.fps if args.fps > 0 else 0.0
    with lumacast.Pusher(args.url, args.detector, args.token, bit_depth=args.bits) as p:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < args.seconds:
            frame = grab(n)
            p.push(frame, timestamp_us=time.time_ns() // 1000, frame_number=n)
            n += 1
            if period:
                delay = start + n * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        elapsed = time.monotonic() - start
        mb = n * frames[0].nbytes / elapsed / 1e6
        print(
            f"{n} frames {args.width}x{args.height} mono16 in {elapsed:.2f} s: "
            f"{n / elapsed:.1f} fps, {mb:.0f} MB/s, {p.connections_opened} connection(s), "
            f"server replaced {p.last_response and p.last_response.get('frames_replaced')} "
            "frames not yet taken"
        )


if __name__ == "__main__":
    main()
