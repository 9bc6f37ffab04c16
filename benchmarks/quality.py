"""How close does the course's whole pipeline get to the data's ceiling? (quality benchmark)

    .venv/bin/python benchmarks/quality.py --mode smoke|full --seed S

Generates SynthAffWild with seed S (its own copy with audio, sized for the mode), runs the
whole pipeline (the course backbone: the shipped pretrained ``course_face``, or with
``--from-scratch`` one trained on this data's training split; progressive stages 1-3 on its
cached tokens, then stage 3
again with each frame's audio summary beside its stage-2 features, as in ``07_multimodal_audio``
and the ``+ audio`` row of ``08_evaluation``), evaluates every stage on the validation split, and
prints as its last line one JSON object:

- ``p_mtl`` (and ``va``, ``expr``, ``au``): the final stage's validation scores (the audio
  stage; ``--no-audio`` stops at stage 3);
- ``oracle``: the generator's ceiling (its clean labels scored against the noisy annotations);
- ``trivial``: the do-nothing floor (majority class, mean VA, every AU on; see
  :func:`course_lib.metrics.do_nothing_scores`);
- ``gap_closed``: (p_mtl - trivial) / (oracle - trivial), the share of the floor-to-ceiling gap
  the pipeline closes; ``stages``: P_MTL after each stage; timings;
- two reference points computed on the same split (:mod:`course_lib.baselines`, not part of
  the pipeline, timed apart): ``hog_baseline``, HOG + linear models (the pre-deep-learning
  way), and ``reading_ceiling``, what reading each frame's AU intensities exactly would score;
  ``half_gap`` is the P_MTL that closes half the gap.

Goals: smoke mode on 2 CPU cores within 10 minutes closes at least half of the gap
(``gap_closed >= 0.5``); full mode on a GPU reaches 90 % of the oracle (``p_mtl >= 0.9 * oracle``).
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

#: Data and training budget per mode. Smoke is sized to fit 10 minutes on 2 CPU cores.
SETTINGS = {
    "smoke": {"data": {"n_videos": 96, "frames_per_video": 75}, "backbone": {"epochs": 8},
              "progressive": {}, "budget_s": 600},
    "full": {"data": {"n_videos": 160, "frames_per_video": 300}, "backbone": {"epochs": 15},
             "progressive": {}, "budget_s": None},
}


def audio_stage(root, stage3_inputs, train, val, config, device) -> dict[str, float]:
    """Stage 3 once more, on the stage-2 features with each frame's audio summary beside them
    (:func:`course_lib.multimodal.audio_summaries`), as the ``+ audio`` row of the ablation."""
    import torch

    from course_lib.evaluate import METRIC_LABELS, predictions_table, scores
    from course_lib.multimodal import audio_summaries
    from course_lib.progressive import temporal_stage

    audio_train, audio_val = audio_summaries(root, train, val)
    out = temporal_stage(torch.cat([stage3_inputs["train"], audio_train], dim=1),
                         torch.cat([stage3_inputs["validation"], audio_val], dim=1), train, val, config, device)
    s = scores(predictions_table(out["validation"], val))
    return {"P_MTL": s["total"], **{METRIC_LABELS[m]: s[m] for m in ("va", "expr", "au")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(SETTINGS), default="smoke")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-audio", action="store_true", help="leave out the audio branch (and the audio files)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the backbone on this data's training split instead of the pretrained one")
    parser.add_argument("--videos", type=int, default=None, help="number of videos (default: the mode's)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the mode's)")
    parser.add_argument("--root", type=Path, default=None,
                        help="where to generate the data (default: <cache>/benchmarks/quality-<mode>-seed<S>)")
    args = parser.parse_args(argv)

    import torch

    from course_lib.config import cache_dir, get_device, mode_settings, seed_everything
    from course_lib.course_backbone import course_backbone
    from course_lib.data.abaw import read_split
    from course_lib.baselines import hog_baseline, reading_ceiling
    from course_lib.data.synth import generate_dataset, oracle_scores
    from course_lib.features import ensure_features
    from course_lib.metrics import do_nothing_scores
    from course_lib.models.backbones import COURSE_FACE_WEIGHTS
    from course_lib.progressive import progressive_config, run_progressive

    settings = dict(mode_settings(SETTINGS, args.mode))  # full mode shrinks with COURSE_SCALE
    sizes = {"n_videos": args.videos, "frames_per_video": args.frames}
    settings["data"] = {**settings["data"], **{k: v for k, v in sizes.items() if v is not None}}
    device = get_device()
    seed_everything(args.seed)
    start = time.perf_counter()
    audio = not args.no_audio
    root = args.root or cache_dir("benchmarks") / f"quality-{args.mode}-seed{args.seed}{'' if audio else '-noaudio'}"
    root = generate_dataset(root, **settings["data"], seed=args.seed, audio=audio, progress_bar=False)
    t_data = time.perf_counter() - start
    print(f"data: {root} ({t_data:.1f} s)", flush=True)

    tick = time.perf_counter()
    if not args.from_scratch and not COURSE_FACE_WEIGHTS.exists():
        parser.error(f"{COURSE_FACE_WEIGHTS} not found: ship the pretrained weights or pass --from-scratch")
    cb = course_backbone(root, args.mode, device=device, progress_bar=False, from_scratch=args.from_scratch,
                         **(settings["backbone"] if args.from_scratch else {}))
    t_backbone = time.perf_counter() - tick
    pretrained = bool(cb.settings.get("pretrained"))
    if pretrained:
        print(f"course backbone {cb.settings['name']}: pretrained, loaded in {t_backbone:.1f} s", flush=True)
    else:
        print(f"course backbone {cb.settings['name']}: validation P_MTL {cb.scores['total']:.3f} "
              f"({'trained' if cb.trained_now else 'cached'}, {t_backbone:.1f} s)", flush=True)
    tick = time.perf_counter()
    feats = ensure_features(cb.backbone, root, backbone_fingerprint=cb.fingerprint,
                            image_size=cb.settings["image_size"], device=device, progress_bar=False)
    t_features = time.perf_counter() - tick

    if device.type == "cpu":
        torch.set_num_threads(1)  # the stage models are small: one thread is faster than two (as in the notebooks)
    config = progressive_config(args.mode, seed=args.seed, **settings["progressive"])
    tick = time.perf_counter()
    result = run_progressive(root, args.mode, config=config, feats=feats, device=device, progress_bar=False)
    t_progressive = time.perf_counter() - tick
    print(result.scores.round(3).to_string(index=False), flush=True)

    train = read_split(root, "train")
    val = read_split(root, "validation")
    trivial = do_nothing_scores(train, val)
    oracle = oracle_scores(root, "validation")
    final = result.scores[result.scores.model == "each task from its model"].iloc[-1]
    final = {k: float(final[k]) for k in ("P_MTL", "VA CCC", "EXPR F1", "AU F1")}
    stages = {row.stage: round(float(row.P_MTL), 4) for row in result.scores.itertuples()
              if row.model in ("each task from its model", "fusion model")}
    t_audio = 0.0
    if audio:
        tick = time.perf_counter()
        final = audio_stage(root, result.extra["stage3_inputs"], train, val, config, device)
        t_audio = time.perf_counter() - tick
        stages["stage 3 + audio"] = round(final["P_MTL"], 4)
        print(f"stage 3 + audio: P_MTL {final['P_MTL']:.3f} ({t_audio:.1f} s)", flush=True)
    p = final["P_MTL"]
    seconds = time.perf_counter() - start
    tick = time.perf_counter()
    hog = hog_baseline(root, train, val, seed=args.seed)
    reading = reading_ceiling(root, train, val, seed=args.seed)
    t_references = time.perf_counter() - tick
    gap_closed = (p - trivial["total"]) / (oracle["total"] - trivial["total"])
    summary = {
        "mode": args.mode, "seed": args.seed, "device": str(device), "cores": os.cpu_count(),
        "audio": audio, "p_mtl": round(p, 4), "va": round(final["VA CCC"], 4), "expr": round(final["EXPR F1"], 4),
        "au": round(final["AU F1"], 4),
        "oracle": round(oracle["total"], 4),
        "oracle_parts": {k: round(oracle[k], 4) for k in ("va", "expr", "au")},
        "trivial": round(trivial["total"], 4),
        "trivial_parts": {k: round(trivial[k], 4) for k in ("va", "expr", "au")},
        "hog_baseline": round(hog["total"], 4),
        "hog_baseline_parts": {k: round(hog[k], 4) for k in ("va", "expr", "au")},
        "reading_ceiling": round(reading["total"], 4),
        "reading_ceiling_parts": {k: round(reading[k], 4) for k in ("va", "expr", "au")},
        "half_gap": round(trivial["total"] + 0.5 * (oracle["total"] - trivial["total"]), 4),
        "backbone": cb.settings["name"], "pretrained": pretrained, "backbone_trained_now": cb.trained_now,
        "backbone_p_mtl": None if pretrained else round(cb.scores["total"], 4), "stages": stages,
        "gap_closed": round(gap_closed, 4), "share_of_oracle": round(p / oracle["total"], 4),
        "seconds": round(seconds, 1),
        "seconds_parts": {"data": round(t_data, 1), "backbone": round(t_backbone, 1),
                          "features": round(t_features, 1), "progressive": round(t_progressive, 1),
                          "audio": round(t_audio, 1)},
        "reference_seconds": round(t_references, 1),
        "frames": {"train": len(train), "validation": len(val)},
    }
    if args.mode == "smoke":
        summary["goal"] = "gap_closed >= 0.5 within 600 s"
        summary["meets_goal"] = bool(gap_closed >= 0.5 and seconds <= settings["budget_s"])
    else:
        summary["goal"] = "p_mtl >= 0.9 * oracle"
        summary["meets_goal"] = bool(p >= 0.9 * oracle["total"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
