"""Which component pays off? The ablation of 08_evaluation at the quality benchmark's scale.

    .venv/bin/python benchmarks/ablation.py [--mode smoke] [--seed S] [--train-seeds 0 1 2]

On the data of ``quality.py --mode smoke --seed S`` (generated here if missing: 96 videos x 75
frames with audio), with the shipped pretrained ``course_face`` tokens, runs
:func:`course_lib.ablation.run_ablation` at the course's budget for the mode (no overrides:
``progressive_config(mode)``) once per training seed: baseline (mean-pooled tokens), +
cross-attention, + AU-GCN, + progressive fusion (stages 1-2), + temporal (stage 3), + audio.
Prints each configuration's validation P_MTL (mean over the training seeds) with its 95 %
video-bootstrap interval, then each step's gain over the step before with a *paired* interval
(:func:`course_lib.ablation.step_gains`: the same resampled videos on both sides) and a verdict:
``helps`` when the interval lies above 0, ``hurts`` below, ``no clear effect`` otherwise. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("smoke", "full"), default="smoke")
    parser.add_argument("--seed", type=int, default=0, help="the data's seed (as quality.py --seed)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from quality import SETTINGS
    from course_lib import ablation as ab
    from course_lib import evaluate as ev
    from course_lib.confidence import format_intervals
    from course_lib.config import cache_dir, get_device
    from course_lib.course_backbone import course_backbone
    from course_lib.data.synth import generate_dataset
    from course_lib.features import ensure_features
    from course_lib.models.backbones import COURSE_FACE_WEIGHTS

    if not COURSE_FACE_WEIGHTS.exists():
        parser.error(f"{COURSE_FACE_WEIGHTS} not found: ship the pretrained weights first")
    start = time.perf_counter()
    device = get_device()
    root = generate_dataset(cache_dir("benchmarks") / f"quality-{args.mode}-seed{args.seed}",
                            **SETTINGS[args.mode]["data"], seed=args.seed, audio=True, progress_bar=False)
    cb = course_backbone(root, args.mode, device=device, progress_bar=False)
    feats = ensure_features(cb.backbone, root, backbone_fingerprint=cb.fingerprint,
                            image_size=cb.settings["image_size"], device=device, progress_bar=False)
    if device.type == "cpu":
        torch.set_num_threads(1)  # small models: one thread is faster than two (as in the notebooks)
    print(f"data {root}; {cb.summary()}; training seeds {args.train_seeds}", flush=True)
    result = ab.run_ablation(root, args.mode, feats=feats, seeds=args.train_seeds, device=device, n_boot=args.n_boot,
                             on_row=lambda r: print(f"  {r['configuration']:22s} seed {r['seed']}: P_MTL "
                                                    f"{r['P_MTL']:.3f} ({r['seconds']:.0f} s)", flush=True))
    gains = ab.step_gains(result, n_boot=args.n_boot)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nvalidation, mean over the training seeds [95 % video-bootstrap interval]")
        print(format_intervals(result.table).to_string(index=False))
        print("\nwhat each step adds (paired bootstrap over videos and seeds)")
        shown = gains[["step", "over"]].copy()
        for label in ev.METRIC_LABELS.values():
            shown[label] = [f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]" for g, lo, hi in
                            zip(gains[f"{label} gain"], gains[f"{label} low"], gains[f"{label} high"])]
        shown["verdict"] = gains["verdict"]
        print(shown.to_string(index=False))
    rows = result.table.set_index("configuration")
    summary = {
        "mode": args.mode, "data_seed": args.seed, "train_seeds": args.train_seeds, "device": str(device),
        "n_boot": args.n_boot, "videos": result.extra["videos"], "frames": result.extra["frames"],
        "p_mtl": {name: [round(float(rows.loc[name, c]), 4) for c in ("P_MTL", "P_MTL low", "P_MTL high")]
                  for name in rows.index},
        "gains": {r["step"]: {"p_mtl": [round(float(r[c]), 4) for c in ("P_MTL gain", "P_MTL low", "P_MTL high")],
                              "verdict": r["verdict"]} for _, r in gains.iterrows()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
