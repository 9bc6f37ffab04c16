"""Does the real-data path scale? Feature caching and head training on a stand-in of s-Aff-Wild2's size.

The real training split has 142 333 frames, the validation split 26 876. This builds a folder
in the release layout with exactly those row counts (the images are hard links to a small
SynthAffWild pool, so frames repeat; video names, gaps in frame numbers and the two annotation
files are as in the release), then measures, each phase in a fresh process so that its peak
RAM is its own:

  features  ``course_features(root, "smoke")``: read both annotation files, run the shipped
            course_face over every frame, cache tokens and pooled features (float16 memmaps)
  heads     one epoch of the course's token heads (cross-attention, no GCN) over the training
            split, then scoring on validation, with the datasets' default (``preload=None``)

and prints wall time, frames/s and peak memory of each: resident (ru_maxrss, which counts the
memmapped cache pages the process has read) and anonymous (sampled RssAnon: what the process
itself holds), with the size of the cache on disk. Last line: one JSON object.

    .venv/bin/python benchmarks/release_scale.py [--out DIR] [--train 142333] [--validation 26876]
                                                 [--epochs 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FRAMES_PER_VIDEO = 400  # real videos run from a few hundred to a few thousand frames


def build_stand_in(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A release-layout folder with ``n_train`` / ``n_val`` rows whose images link to a SynthAffWild pool."""
    import numpy as np
    import pandas as pd

    from course_lib.data.abaw import SPLIT_FILES, read_mtl_annotations, write_mtl_annotations
    from course_lib.data.release import export_release_layout, real_video_names
    from course_lib.data.synth import generate_dataset

    pool_src = generate_dataset(out / "pool-synth", n_videos=12, frames_per_video=100, seed=seed, audio=False,
                                progress_bar=False)
    pool = export_release_layout(pool_src, out / "pool", seed=seed).root  # gaps and names as in a release
    rows = read_mtl_annotations(pool / SPLIT_FILES["train"])
    root = out / "s-Aff-Wild2"
    rng = np.random.default_rng(seed)
    counts = {"train": n_train, "validation": n_val}
    names = iter(real_video_names(sum(-(-n // FRAMES_PER_VIDEO) for n in counts.values()), seed=seed + 1))
    for split, n in counts.items():
        tables = []
        for start in range(0, n, FRAMES_PER_VIDEO):
            length = min(FRAMES_PER_VIDEO, n - start)
            video = next(names)
            take = rows.iloc[rng.integers(0, len(rows), length)].reset_index(drop=True)
            steps = 1 + (rng.random(length) < 0.03) * rng.integers(1, 12, length)  # runs of missing frames
            frames = np.cumsum(steps)
            table = take.assign(video=video, frame=frames,
                                image=[f"{video}/{f:05d}.jpg" for f in frames])
            folder = root / "cropped_aligned" / video
            folder.mkdir(parents=True)
            for src, dst in zip(take["image"], table["image"]):
                os.link(pool / "cropped_aligned" / src, root / "cropped_aligned" / dst)
            tables.append(table)
        write_mtl_annotations(pd.concat(tables, ignore_index=True), root / SPLIT_FILES[split])
    shutil.rmtree(out / "pool-synth")
    return root


def peak_mb() -> float:
    """Peak resident memory of this process (memmapped cache pages that were read count too)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonymousPeak:
    """Peak anonymous (heap) memory, sampled from /proc every 0.2 s: what the process itself holds,
    without the file pages of the memmaps, which the kernel can drop at any time."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak_kb / 1024


def phase_features(root: Path) -> dict:
    from course_lib.course_backbone import course_features

    anon = AnonymousPeak()
    tick = time.perf_counter()
    cb, feats = course_features(root, "smoke", device="cpu", progress_bar=False)
    seconds = time.perf_counter() - tick
    frames = sum(len(f) for f in feats.values())
    return {"seconds": seconds, "frames": frames, "frames_per_s": frames / seconds, "peak_mb": peak_mb(),
            "peak_anon_mb": anon.stop(),
            "cache_mb": sum(f.nbytes for f in feats.values()) / 2**20,
            "shape_train_tokens": list(feats["train"].tokens.shape)}


def phase_heads(root: Path, epochs: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from course_lib.course_backbone import course_features
    from course_lib.losses import weighted_loss
    from course_lib.data.abaw import read_split
    from course_lib.features import CachedFrameDataset
    from course_lib.models import MTLConfig, build_model
    from course_lib.train import TrainConfig, fit

    torch.set_num_threads(1)  # the heads are small: one thread is faster, as in the notebooks
    anon = AnonymousPeak()
    tick = time.perf_counter()
    train = read_split(root, "train")
    val = read_split(root, "validation")
    _, feats = course_features(root, "smoke", device="cpu", progress_bar=False)  # cached: only opens the memmaps
    train_set = CachedFrameDataset(feats["train"], train, what="tokens")
    val_set = CachedFrameDataset(feats["validation"], val, what="tokens")
    ready = time.perf_counter() - tick
    torch.manual_seed(0)
    model = build_model(MTLConfig(token_dim=feats["train"].dim, n_tokens=feats["train"].n_tokens, dim=64, depth=1,
                                  gcn=False), train)
    loader = DataLoader(train_set, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
    tick = time.perf_counter()
    result = fit(model, loader, DataLoader(val_set, batch_size=1024), config=TrainConfig(epochs=epochs, lr=1e-3),
                 loss_fn=weighted_loss(train), device="cpu", progress_bar=False)
    seconds = time.perf_counter() - tick
    return {"seconds_to_ready": ready, "seconds": seconds, "epochs": epochs,
            "train_frames_per_s": epochs * len(train) / seconds, "peak_mb": peak_mb(), "peak_anon_mb": anon.stop(),
            "preloaded": train_set._rows.data is not None, "P_MTL": result.best_scores["total"]}


def run_phase(name: str, root: Path, epochs: int) -> dict:
    """Run one phase in a fresh interpreter; its last stdout line is the phase's JSON."""
    cmd = [sys.executable, __file__, "--phase", name, "--root", str(root), "--epochs", str(epochs)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--train", type=int, default=142_333)
    parser.add_argument("--validation", type=int, default=26_876)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the stand-in and its cache")
    parser.add_argument("--phase", choices=("features", "heads"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        os.environ["COURSE_CACHE"] = str(args.root.parent / "cache")
        result = phase_features(args.root) if args.phase == "features" else phase_heads(args.root, args.epochs)
        print(json.dumps(result))
        return

    out = args.out or Path(tempfile.mkdtemp(prefix="release-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    root = build_stand_in(out, args.train, args.validation)
    built = time.perf_counter() - tick
    print(f"stand-in: {args.train} training + {args.validation} validation rows in {root} ({built:.0f} s to build)",
          flush=True)
    results = {"train_rows": args.train, "validation_rows": args.validation, "build_seconds": built}
    for name in ("features", "heads"):
        results[name] = run_phase(name, root, args.epochs)
        r = results[name]
        if name == "features":
            print(f"features: {r['seconds']:.0f} s ({r['frames_per_s']:.0f} frames/s), peak RAM {r['peak_mb']:.0f} MB "
                  f"resident, {r['peak_anon_mb']:.0f} MB without the memmaps' file pages, "
                  f"cache {r['cache_mb']:.0f} MB on disk, train tokens {r['shape_train_tokens']}", flush=True)
        else:
            print(f"heads: ready in {r['seconds_to_ready']:.1f} s, {r['epochs']} epoch(s) + validation in "
                  f"{r['seconds']:.0f} s ({r['train_frames_per_s']:.0f} training frames/s), peak RAM "
                  f"{r['peak_mb']:.0f} MB resident, {r['peak_anon_mb']:.0f} MB without the memmaps' file pages, "
                  f"preloaded {r['preloaded']}, P_MTL {r['P_MTL']:.3f}", flush=True)
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
