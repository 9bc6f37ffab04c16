"""How fast does SynthAffWild generate data on this machine? (goal: >= 500 frames/s on 2 cores)

Generates the same data set with 1 worker and with one worker per core, in one run, and
reports frames per second end to end (planning, rendering, nuisances, JPEG encoding,
ground truth, annotation files) and the parallel speed-up. Last line: one JSON object.

    .venv/bin/python benchmarks/synth_speed.py [--videos 24] [--frames 150] [--audio]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from course_lib.data.synth import generate_dataset


def timed_generation(root: Path, workers: int, args) -> float:
    start = time.perf_counter()
    generate_dataset(root, n_videos=args.videos, frames_per_video=args.frames, image_size=args.size,
                     seed=args.seed, audio=args.audio, workers=workers, progress_bar=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--audio", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    frames = args.videos * args.frames
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, cores}):
            seconds = timed_generation(Path(tmp) / f"w{workers}", workers, args)
            results[workers] = seconds
            print(f"{workers} worker(s): {frames} frames in {seconds:.2f} s -> {frames / seconds:.0f} frames/s")
    best = min(results.values())
    summary = {"frames": frames, "image_size": args.size, "audio": args.audio, "cores": cores,
               "fps_1_worker": round(frames / results[1], 1), f"fps_{cores}_workers": round(frames / results[cores], 1),
               "speedup": round(results[1] / results[cores], 2), "goal_fps": 500, "meets_goal": frames / best >= 500}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
