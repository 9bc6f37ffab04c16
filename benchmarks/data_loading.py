"""Can the data loader keep a CPU training step busy? Loader frames/s against model frames/s.

Measures, in one run and on this machine, for ``course_lib.data.datasets.FrameDataset`` frames
(with a random horizontal flip, the usual cheap augmentation):

  loader   frames/s of one shuffled pass of a DataLoader: lazy JPEG decoding with each
           ``--workers`` count, and preloaded (all frames decoded once into RAM; the time
           to preload is reported separately)
  model    frames/s of a training step of a timm resnet18 (pretrained=False, 20 outputs,
           112x112 input, forward + backward + AdamW) on the CPU

and prints loader_fps / model_fps per loader configuration: above 1 the loader does not
starve training (both were timed alone; in training they share the cores). Without
``--root`` a SynthAffWild set is generated into a temporary folder first. Last line: one
JSON object.

    .venv/bin/python benchmarks/data_loading.py [--root DIR] [--frames 2048] [--batch 64]
                                                [--workers 0 2] [--steps 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from course_lib.data.abaw import read_mtl_annotations
from course_lib.data.datasets import FrameDataset

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)
FRAMES_PER_VIDEO = 128
VAL_FRACTION = 0.2  # synth's default share of validation videos


def generate(root: Path, frames: int) -> bool:
    """Generate SynthAffWild with at least ``frames`` training frames; False when synth is unavailable."""
    try:
        from course_lib.data.synth import generate_dataset
    except ImportError as exc:
        print(f"course_lib.data.synth is not available ({exc}): pass --root DIR (a folder with "
              "cropped_aligned/ and training_set_annotations.txt)")
        return False
    n_videos = max(8, math.ceil(frames / FRAMES_PER_VIDEO / (1 - VAL_FRACTION)) + 1)  # synth needs a few
    start = time.perf_counter()
    generate_dataset(root, n_videos=n_videos, frames_per_video=FRAMES_PER_VIDEO, image_size=112, seed=0)
    print(f"generated {n_videos} videos x {FRAMES_PER_VIDEO} frames in {time.perf_counter() - start:.1f} s")
    return True


def loader_fps(dataset: FrameDataset, batch: int, workers: int, repeats: int) -> dict[str, float]:
    """Shuffled passes: frames/s over a whole pass (worker start included) and time to the first
    batch, medians over ``repeats`` passes (the machine may be shared)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        first = None
        frames = 0
        for item in loader:
            frames += len(item["image"])
            if first is None:
                first = time.perf_counter() - start
        seconds = time.perf_counter() - start
        passes.append((frames / seconds, seconds, first or 0.0))
    fps, seconds, first = (statistics.median(values) for values in zip(*passes))
    return {"fps": fps, "seconds": seconds, "first_batch_s": first}


def model_fps(batch: int, steps: int) -> dict[str, float]:
    """Training-step frames/s of a timm resnet18 at 112x112 on the CPU (one warm-up step)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 3, 112, 112)
    targets = torch.randn(batch, 20)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(images), targets)
        loss.backward()
        optimizer.step()

    model.train()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"fps": batch * steps / seconds, "step_s": seconds / steps}


def run(root: Path, args) -> dict:
    table = read_mtl_annotations(root / "training_set_annotations.txt").head(args.frames)
    flip = v2.RandomHorizontalFlip()
    loaders: dict[str, dict[str, float]] = {}
    lazy = FrameDataset(table, root, transform=flip)
    for workers in args.workers:
        loaders[f"lazy, {workers} workers"] = loader_fps(lazy, args.batch, workers, args.repeats)
    start = time.perf_counter()
    preloaded = FrameDataset(table, root, transform=flip, preload=True)
    preload_s = time.perf_counter() - start
    loaders["preloaded, 0 workers"] = loader_fps(preloaded, args.batch, 0, args.repeats)
    model = model_fps(args.batch, args.steps)
    for result in loaders.values():
        result["ratio"] = result["fps"] / model["fps"]
    size = tuple(preloaded.frames.data.shape[1:])
    return {"frames": len(table), "frame_shape": list(size), "batch": args.batch, "repeats": args.repeats,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "preload_s": preload_s,
            "preload_mib": preloaded.frames.data.numel() / 2**20, "model": model, "loaders": loaders}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="data folder (cropped_aligned/, training_set_annotations.txt)")
    parser.add_argument("--frames", type=int, default=2048, help="frames to load (the first N of the training file)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=3, help="loader passes per configuration (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="data-loading-") as tmp:
        root = args.root
        if root is None:
            root = Path(tmp)
            if not generate(root, args.frames):
                return 2
        results = run(root, args)
    model = results["model"]
    print(f"\n{results['frames']} frames {tuple(results['frame_shape'])}, batch {results['batch']}, "
          f"{results['cores']} cores, {results['torch_threads']} torch threads; "
          f"preload {results['preload_s']:.1f} s for {results['preload_mib']:.0f} MiB")
    print(f"model: resnet18 112x112 train step {model['step_s']:.2f} s = {model['fps']:.0f} frames/s\n")
    print(f"{'loader':<24} {'frames/s':>9} {'1st batch s':>12} {'loader/model':>13}")
    for name, r in results["loaders"].items():
        print(f"{name:<24} {r['fps']:>9.0f} {r['first_batch_s']:>12.2f} {r['ratio']:>13.2f}")
    rounded = json.loads(json.dumps(results), parse_float=lambda x: round(float(x), 3))
    print(json.dumps(rounded))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
