"""How much does the training pipeline cost on top of the backbone itself? (goal: under 30 %)

    .venv/bin/python benchmarks/train_speed.py [--backbone resnet18] [--batch 64] [--steps 20]

Measured in one run, on the same device, with the same images (preloaded SynthAffWild frames
at 112 px) and the same precision settings that :func:`course_lib.train.fit` picks (bf16
autocast and channels-last on CUDA, fp32 on CPU):

- **bare**: the backbone alone, forward + backward (``tokens.float().mean().backward()``), no
  optimiser, no data loader: the floor for one training step.
- **pipeline**: ``fit()`` training the course's image model end to end (backbone unfrozen,
  task-adaptive cross-attention, AU graph, weighted multi-task loss, AdamW, clipping,
  schedule, batches from a DataLoader), frames/s over its training steps only.

overhead = 1 - pipeline / bare. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the pipeline model")
    args = parser.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader, Subset

    from course_lib.config import get_device, seed_everything
    from course_lib.losses import weighted_loss
    from course_lib.data.abaw import read_split
    from course_lib.data.datasets import FrameDataset
    from course_lib.data.synth import ensure_course_data
    from course_lib.models import MTLConfig, build_model
    from course_lib.train import TrainConfig, fit, step_precision

    seed_everything(0)
    device = get_device()
    root = ensure_course_data("smoke", progress_bar=False)
    table = read_split(root, "train")
    n = args.batch * (args.steps + 2)
    frames = FrameDataset(table, root, preload=True)
    data = Subset(frames, [i % len(frames) for i in range(n)])
    config = MTLConfig(backbone=args.backbone, image_size=112, freeze_backbone=False, dim=128, depth=2,
                       backbone_kwargs={"output_stride": 16})
    model = build_model(config, table).to(device)
    precision = step_precision(TrainConfig(), device)

    # bare backbone: forward + backward on the same images, same precision and memory format
    backbone = model.backbone
    backbone.train()
    images = torch.stack([data[i]["image"] for i in range(args.batch)]).to(device)
    if precision.channels_last:
        backbone.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(device.type, dtype=precision.amp_dtype) if precision.amp_dtype
                else contextlib.nullcontext())

    def bare_step() -> None:
        with autocast:
            out = backbone(images)["tokens"]
        out.float().mean().backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        bare_step()
    sync()
    tick = time.perf_counter()
    for _ in range(args.steps):
        bare_step()
    sync()
    bare_fps = args.steps * args.batch / (time.perf_counter() - tick)
    backbone.zero_grad(set_to_none=True)
    print(f"bare {args.backbone} forward+backward: {bare_fps:.0f} frames/s", flush=True)

    def pipeline(compile_: bool) -> tuple[float, dict]:
        loader = DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        # two epochs: the first warms up (and compiles); frames/s of the second is read from the step timings
        result = fit(model, loader, None, config=TrainConfig(epochs=1, lr=1e-4, compile=compile_),
                     loss_fn=weighted_loss(table), input_key="image", device=device, progress_bar=False)
        result = fit(model, loader, None, config=TrainConfig(epochs=1, lr=1e-4, compile=compile_),
                     loss_fn=weighted_loss(table), input_key="image", device=device, progress_bar=False)
        return result.frames_per_second, result.extra

    pipe_fps, extra = pipeline(False)
    print(f"pipeline fit(): {pipe_fps:.0f} frames/s ({extra['amp']} autocast, channels_last={extra['channels_last']})",
          flush=True)
    summary = {"device": str(device), "backbone": args.backbone, "batch": args.batch, "steps": args.steps,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "amp": extra["amp"],
               "channels_last": extra["channels_last"], "bare_fps": round(bare_fps, 1),
               "pipeline_fps": round(pipe_fps, 1), "overhead": round(1 - pipe_fps / bare_fps, 3),
               "goal_overhead": 0.3}
    if args.compile:
        compiled_fps, _ = pipeline(True)
        summary["pipeline_compiled_fps"] = round(compiled_fps, 1)
        summary["overhead_compiled"] = round(1 - compiled_fps / bare_fps, 3)
    summary["meets_goal"] = summary["overhead"] < 0.3
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
