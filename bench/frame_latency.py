"""Frame-to-detection latency of a campaign's wrist camera, from its MCAP bag.

    .venv/bin/python bench/frame_latency.py <run_dir>      # e.g. the run folder of bench/campaign.py

Each /wrist_camera/image_raw is paired with the next /perception/detections by the recorder's
receive times (log_time): the time perception_node took from the frame's arrival to its answer,
as a third process saw it. A request that failed before detecting publishes no detections, so its
frame pairs with a later one (the max can be such a pair). Last line:
``RESULT frames=... p50_ms=... p90_ms=... max_ms=...``.
"""

from __future__ import annotations

import argparse
import bisect
import pathlib
import sys

IMAGE, DETECTIONS = "/wrist_camera/image_raw", "/perception/detections"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=pathlib.Path)
    args = ap.parse_args(argv)
    from mcap.reader import make_reader

    bags = sorted((args.run_dir / "bag").glob("*.mcap"))
    if not bags:
        print(f"no MCAP bag in {args.run_dir / 'bag'}", file=sys.stderr)
        return 2
    frames: list[float] = []
    answers: list[float] = []
    for bag in bags:
        with open(bag, "rb") as fh:
            for _schema, channel, message in make_reader(fh).iter_messages(topics=[IMAGE, DETECTIONS]):
                (frames if channel.topic == IMAGE else answers).append(message.log_time / 1e9)
    answers.sort()
    delays = sorted(answers[i] - t for t in frames for i in [bisect.bisect_left(answers, t)] if i < len(answers))
    if not delays:
        print(f"no {IMAGE} followed by {DETECTIONS} in the bag", file=sys.stderr)
        return 2
    ms = [d * 1000 for d in delays]
    print(f"RESULT frames={len(frames)} p50_ms={ms[len(ms) // 2]:.0f} p90_ms={ms[int(len(ms) * 0.9)]:.0f} "
          f"max_ms={ms[-1]:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
