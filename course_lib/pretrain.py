"""Pretraining the course's face backbone on the corpus of other identities, once.

Taught in ``02_backbones_and_features`` (transfer). The recipe, the analogue of a backbone
pretrained on an external AU data set (000's AffectNet EfficientNet, 003's face-recognition
IResNet):

- **data**: :mod:`course_lib.data.corpus`, thousands of synthetic identities from a seed range
  no course split uses, every nuisance on, AU intensities drawn independently;
- **objective**: regress the 12 clean AU intensities (standardised, mean squared error) from
  the backbone's pooled features through one linear layer, the very read-out the probes use;
  AUs hidden by an occluder are left out of the loss; augmentations (shifts, flips, colour)
  make position and light irrelevant;
- **model**: timm ``resnet10t`` cut after its stride-16 stage (7 x 7 tokens on 112 px faces);
- **loop**: AdamW, warm-up then cosine, a step-indexed sampler (a rerun continues exactly
  where the last checkpoint left off), atomic checkpoints, a progress bar with throughput, and
  the AU probe on held-out identities logged as it goes.

It writes ``weights.safetensors`` (the backbone, loadable by timm), ``model_card.json`` and
``MODEL_CARD.md``; ``--ship`` copies those three into ``course_lib/weights/``, where
:func:`course_lib.models.create_backbone` finds them (``pretrained=True``)::

    python -m course_lib.pretrain --size cpu --ship     # hours on 2 CPU cores
    python -m course_lib.pretrain --size gpu            # about 10 minutes on one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from safetensors.torch import save_file
from torch import nn

from .config import cache_dir, get_device, seeded
from .data.corpus import CORPUS_SEED, EYE_AUS, MOUTH_AUS, Corpus, CorpusSpec, build_corpus
from .data.synth import generate_dataset
from .files import atomic_write
from .labels import AU_NAMES
from .models.backbones import COURSE_FACE, COURSE_FACE_ARCH, Backbone, create_backbone
from .probes import au_probe, course_au_probe, course_probe_set, pooled_features
from .progress import progress
from .train import save_checkpoint

#: The architecture of the course backbone (one for every mode).
ARCHITECTURE: dict[str, Any] = {"name": COURSE_FACE_ARCH["timm_name"], "image_size": COURSE_FACE_ARCH["image_size"],
                                "token_stride": COURSE_FACE_ARCH["token_stride"]}
#: Held-out identities for the probe logged during training: their own seed range.
PROBE_FIRST: int = CORPUS_SEED + 5_000_000
#: The fresh SynthAffWild seed of the course probe in the model card (no course split uses it).
COURSE_PROBE_SEED: int = 4242

#: Sizes: ``cpu`` (hours on 2 cores), ``gpu`` (about 10 minutes on one GPU), ``demo`` (the live
#: rerun of ``02``: seconds), ``tiny`` (tests).
PRETRAIN_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"identities": 6, "frames": 4, "probe_identities": 6, "steps": 4, "batch_size": 8, "lr": 2e-3,
             "probe_every": 2, "checkpoint_every": 2, "course_probe": False},
    "demo": {"identities": 60, "frames": 8, "probe_identities": 30, "steps": 20, "batch_size": 32, "lr": 2e-3,
             "probe_every": 10, "checkpoint_every": 10, "course_probe": False},
    "cpu": {"identities": 6000, "frames": 20, "probe_identities": 300, "steps": 6400, "batch_size": 32,
            "lr": 1.5e-3, "probe_every": 400, "checkpoint_every": 100, "course_probe": True},
    "gpu": {"identities": 6000, "frames": 20, "probe_identities": 300, "steps": 6000, "batch_size": 256,
            "lr": 4e-3, "probe_every": 500, "checkpoint_every": 500, "course_probe": True},
}
WARMUP_FRACTION = 0.03


class AUReader(nn.Module):
    """The pretraining model: backbone, pooled features, one linear layer to 12 AU intensities."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, len(AU_NAMES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)["pooled"])


def new_backbone() -> Backbone:
    """The course backbone's architecture with random weights."""
    return create_backbone(COURSE_FACE, pretrained=False, image_size=ARCHITECTURE["image_size"])


def augment(pixels: np.ndarray, generator: torch.Generator, device: torch.device | str = "cpu",
            shift: int = 6) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) -> floats (B, 3, H, W) on ``device``: random shift, flip, brightness,
    contrast, saturation and the odd grey frame. The random numbers come from ``generator`` (CPU),
    the arithmetic runs on ``device``. The AUs of the course's faces are bilateral, so a flip keeps
    the labels."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(0, 3, 1, 2).float().div_(255)
    b, _, h, w = x.shape
    off = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).to(device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(device)
    u = torch.rand(b, 4, generator=generator).to(device)
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    rows = (off[:, 0, None] + torch.arange(h, device=device))[:, :, None]  # (B, H, 1)
    cols = off[:, 1, None] + torch.arange(w, device=device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, :]  # a flip reads the columns backwards
    x = padded[torch.arange(b, device=device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    sat = torch.where(u[:, 3] < 0.1, torch.zeros_like(u[:, 0]), 0.6 + 0.8 * u[:, 0]).view(b, 1, 1, 1)
    x = grey + sat * (x - grey)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (0.7 + 0.6 * u[:, 1]).view(b, 1, 1, 1) * (x - mean)
    x = x * (0.7 + 0.6 * u[:, 2]).view(b, 1, 1, 1)
    return x.clamp_(0, 1).contiguous(memory_format=torch.channels_last)


def visible_mask(occluded: np.ndarray) -> np.ndarray:
    """(N, 12) weights: 0 for the AUs whose region an occluder hides, 1 elsewhere."""
    mask = np.ones((len(occluded), len(AU_NAMES)), dtype=np.float32)
    mask[np.ix_(occluded[:, 0], EYE_AUS)] = 0.0
    mask[np.ix_(occluded[:, 1], MOUTH_AUS)] = 0.0
    return mask


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The frames of training step ``step``: epoch-wise permutations, a pure function of the step."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.sort(order[k * batch_size:(k + 1) * batch_size])


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 3 % of the steps, then cosine down to 5 % of ``peak``."""
    warm = max(1, int(WARMUP_FRACTION * steps))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def probe_split(probe: Corpus) -> dict[str, np.ndarray]:
    """Two thirds of the probe identities to fit the ridge, one third (other people) to score it."""
    people = np.unique(probe.identity)
    train = np.isin(probe.identity, people[: 2 * len(people) // 3])
    return {"train": np.flatnonzero(train), "validation": np.flatnonzero(~train)}


def corpus_probe(backbone: Backbone, probe: Corpus, device: torch.device | str) -> dict:
    """AU probe R² of ``backbone`` on held-out corpus identities."""
    split = probe_split(probe)
    fx = {s: pooled_features(backbone, probe.pixels(rows), device=device) for s, rows in split.items()}
    return au_probe(fx["train"], probe.au[split["train"]], fx["validation"], probe.au[split["validation"]])


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def pretrain(out: Path | str, size: str = "cpu", *, device: torch.device | str | None = None,
             corpus_dir: Path | str | None = None, seed: int = 0, progress_bar: bool = True,
             command: str | None = None, until: int | None = None, init: Path | str | None = None,
             **overrides: Any) -> dict | None:
    """Pretrain (or resume pretraining) into ``out``; returns the model card.

    ``overrides`` change the settings of :data:`PRETRAIN_SIZES` (``steps=...``). A checkpoint in
    ``out`` with the same settings is resumed; one with other settings is an error. ``until``
    stops after that step with a checkpoint (returns None): a long run in several sittings.
    ``init``: a finished run's folder to continue from (its weights, a fresh learning-rate
    schedule); the card then counts both runs' frames and time and gives both commands.
    """
    out = Path(out)
    settings = {**PRETRAIN_SIZES[size], **overrides, "seed": seed, "architecture": ARCHITECTURE}
    before = None
    if init is not None:
        init = Path(init).resolve()
        if not (init / "model_card.json").exists():
            raise FileNotFoundError(f"{init / 'model_card.json'} not found: --init needs a finished run's folder")
        before = json.loads((init / "model_card.json").read_text())
        settings["init"] = str(init)
    device = torch.device(device) if device is not None else get_device()
    corpus_root = Path(corpus_dir) if corpus_dir is not None else cache_dir("corpus")
    spec = CorpusSpec(settings["identities"], settings["frames"])
    probe_spec = CorpusSpec(settings["probe_identities"], 6, first=PROBE_FIRST)
    corpus = build_corpus(corpus_root, spec, progress_bar=progress_bar)
    probe = build_corpus(corpus_root, probe_spec, progress_bar=progress_bar)
    au_mean = corpus.au.mean(0).astype(np.float32)
    au_std = corpus.au.std(0).clip(1e-3).astype(np.float32)

    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):  # the initial weights from ``seed``; the caller's stream untouched
        model = AUReader(new_backbone())
    if init is not None:
        model.load_state_dict(torch.load(init / "checkpoint.pt", map_location="cpu", weights_only=False)["model"])
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.05)
    checkpoint = out / "checkpoint.pt"
    step, seconds, history = 0, 0.0, []
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["settings"] != settings:
            raise ValueError(f"{checkpoint} was written with other settings ({saved['settings']}); "
                             "use another --out or delete it")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, seconds, history = saved["step"], saved["seconds"], saved["history"]
        generator.set_state(saved["generator"])
        print(f"resuming {checkpoint} at step {step} of {settings['steps']}")

    def save() -> None:
        save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                     "seconds": seconds, "history": history, "settings": settings,
                                     "generator": generator.get_state()})

    mean_t, std_t = torch.from_numpy(au_mean).to(device), torch.from_numpy(au_std).to(device)
    # mixed precision on a GPU: bfloat16 where the GPU has it natively, float16 with loss scaling otherwise (T4)
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    total = settings["steps"]
    bar = progress(total=total, initial=step, desc="pretraining", unit="step", disable=not progress_bar)
    running, window_start, window_images = None, time.perf_counter(), 0
    model.train()
    stop = total if until is None else min(total, until)
    while step < stop:
        tick = time.perf_counter()
        rows = batch_indices(step, len(corpus), settings["batch_size"], seed)
        x = augment(corpus.pixels(rows), generator, device)
        y = (torch.from_numpy(corpus.au[rows]).to(device) - mean_t) / std_t
        w = torch.from_numpy(visible_mask(corpus.occluded[rows])).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, settings["lr"])
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            pred = model(x)
        loss = ((pred.float() - y) ** 2 * w).sum() / w.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        seconds += time.perf_counter() - tick
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        window_images += len(rows)
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", img_s=f"{window_images / (time.perf_counter() - window_start):.0f}")
        record = {"step": step, "loss": float(loss.item()), "images": step * settings["batch_size"],
                  "seconds": round(seconds, 2)}
        if step % settings["probe_every"] == 0 or step == total:
            result = corpus_probe(model.backbone, probe, device)
            record["probe_r2"] = result["mean"]
            record["probe_per_au"] = result["per_au"]
            bar.write(f"step {step}: loss {running:.3f}, held-out AU probe R2 {result['mean']:.3f} "
                      f"({seconds / 60:.1f} min)")
            model.train()
        history.append(record)
        if step % settings["checkpoint_every"] == 0 or step == stop:
            save()
    bar.close()
    if step < total:
        print(f"stopped at step {step} of {total}: run the same command again to continue")
        return None
    return write_release(out, model.backbone, settings, history, seconds, device,
                         command or "python -m course_lib.pretrain --size " + size, before=before)


def write_release(out: Path, backbone: Backbone, settings: dict, history: list[dict], seconds: float,
                  device: torch.device, command: str, before: dict | None = None) -> dict:
    """Write ``weights.safetensors``, ``model_card.json`` and ``MODEL_CARD.md`` into ``out``.

    ``before``: the card of the run this one continued (``init``): its history comes first, and
    frames, time and commands add up."""
    backbone = backbone.cpu().eval()
    state = {k: v.detach().contiguous() for k, v in backbone.model.state_dict().items()}
    tmp = out / ".weights.safetensors.tmp"
    save_file(state, str(tmp), metadata={"architecture": json.dumps(ARCHITECTURE)})
    tmp.replace(out / "weights.safetensors")
    if before is not None:  # continue the earlier run's curve
        images, secs, steps = (before["history"][-1][k] for k in ("images", "seconds", "step"))
        history = before["history"] + [{**h, "step": h["step"] + steps, "images": h["images"] + images,
                                        "seconds": round(h["seconds"] + secs, 2)} for h in history]
        seconds += before["wall_seconds"]
        command = before["command"] + " && " + command
    probes = [h for h in history if "probe_r2" in h]
    card: dict[str, Any] = {
        "architecture": ARCHITECTURE, "parameters": int(sum(v.numel() for v in state.values())),
        "objective": "MSE on standardised clean AU intensities (12 AUs) through a linear layer on the pooled "
                     "features; occluded AUs masked; augmentations: shifts, flips, brightness, contrast, "
                     "saturation, grey",
        "data": {"generator": "SynthAffWild renderer, course_lib.data.corpus", "identities": settings["identities"],
                 "frames_per_identity": settings["frames"],
                 "identity_range": [CORPUS_SEED, CORPUS_SEED + settings["identities"] - 1],
                 "probe_identity_range": [PROBE_FIRST, PROBE_FIRST + settings["probe_identities"] - 1]},
        "training": {k: settings[k] for k in ("steps", "batch_size", "lr", "seed")},
        "stages": [*before.get("stages", [before["training"]]), {k: settings[k] for k in ("steps", "batch_size", "lr", "seed")}]
        if before is not None else [{k: settings[k] for k in ("steps", "batch_size", "lr", "seed")}],
        "frames_seen": int(history[-1]["images"]) if history else 0,
        "hardware": _hardware(device), "wall_seconds": round(seconds, 1),
        "probe_held_out_identities": probes[-1]["probe_per_au"] if probes else None,
        "probe_held_out_mean": probes[-1]["probe_r2"] if probes else None,
        "command": command,
        # every probed step, and enough others (about 400) to draw the loss curve
        "history": [{k: v for k, v in h.items() if k != "probe_per_au"} for i, h in enumerate(history)
                    if "probe_r2" in h or i % max(1, len(history) // 400) == 0 or i == len(history) - 1],
    }
    if settings.get("course_probe"):
        root = generate_dataset(cache_dir("probe") / f"synth-probe-{COURSE_PROBE_SEED}", n_videos=60,
                                frames_per_video=30, seed=COURSE_PROBE_SEED, progress_bar=False,
                                overwrite=True)  # a private folder: another generator version replaces it
        result = course_au_probe(backbone, course_probe_set(root))
        card["course_probe"] = {"data": f"SynthAffWild seed {COURSE_PROBE_SEED}, 60 videos x 30 frames, "
                                        "ridge fitted on the training videos, R2 on the validation videos",
                                "mean": result["mean"], "per_au": result["per_au"]}
    atomic_write(out / "model_card.json", json.dumps(card, indent=1))
    atomic_write(out / "MODEL_CARD.md", model_card_markdown(card))
    return card


def model_card_markdown(card: dict) -> str:
    """The model card as Markdown (what ``MODEL_CARD.md`` says)."""
    d, t = card["data"], card["training"]
    lines = [f"# Course face backbone: {card['architecture']['name']} "
             f"(cut at stride {card['architecture']['token_stride']}, {card['architecture']['image_size']} px)", "",
             "Pretrained by `course_lib.pretrain` on synthetic faces of identities that no course split uses.", "",
             f"- **Data**: {d['identities']} identities x {d['frames_per_identity']} frames, identity numbers "
             f"{d['identity_range'][0]}..{d['identity_range'][1]} ({d['generator']}), every nuisance on",
             f"- **Objective**: {card['objective']}",
             "- **Training**: " + " then ".join(
                 f"{st['steps']} steps of {st['batch_size']} frames (peak learning rate {st['lr']})"
                 for st in card.get("stages", [t])) + f"; {card['frames_seen']} frames seen, AdamW with warm-up "
             f"and cosine decay{' in each stage' if len(card.get('stages', [])) > 1 else ''}, seed {t['seed']}",
             f"- **Parameters**: {card['parameters']:,}",
             f"- **Hardware**: {card['hardware']}; training time {card['wall_seconds'] / 60:.1f} min (the steps; "
             "corpus rendering and probes apart)",
             f"- **Reproduce**: `{card['command']}`", ""]
    tables = [("held-out corpus identities", card.get("probe_held_out_identities"))]
    if card.get("course_probe"):
        tables.append((card["course_probe"]["data"], card["course_probe"]["per_au"]))
    for title, per_au in tables:
        if not per_au:
            continue
        lines += [f"## Ridge probe R² per AU: {title}", "", "| " + " | ".join(per_au) + " | mean |",
                  "|" + " --- |" * (len(per_au) + 1),
                  "| " + " | ".join(f"{v:.2f}" for v in per_au.values()) + f" | {np.mean(list(per_au.values())):.2f} |",
                  ""]
    return "\n".join(lines)


def plot_pretraining(card: dict, title: str = "pretraining the course backbone"):
    """A plotly figure of a model card's history: the loss per step and the held-out AU probe R²."""
    history = pd.DataFrame(card["history"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (standardised MSE)",
                                                        "AU probe R² on held-out identities"))
    smooth = history["loss"].rolling(max(1, len(history) // 50), min_periods=1).mean()
    fig.add_trace(go.Scatter(x=history["images"], y=history["loss"], name="loss", mode="lines",
                             line=dict(color="#adb5bd", width=1)), row=1, col=1)
    fig.add_trace(go.Scatter(x=history["images"], y=smooth, name="loss (running mean)", mode="lines",
                             line=dict(color="#264653")), row=1, col=1)
    if "probe_r2" in history:
        probed = history.dropna(subset=["probe_r2"])
        fig.add_trace(go.Scatter(x=probed["images"], y=probed["probe_r2"], name="probe R²", mode="lines+markers",
                                 line=dict(color="#2a9d8f")), row=1, col=2)
    fig.update_xaxes(title_text="frames seen")
    fig.update_layout(height=340, title=title)
    return fig


def ship(out: Path | str, target: Path | str | None = None) -> Path:
    """Copy a finished run's weights and card into ``course_lib/weights/`` (or ``target``)."""
    target = Path(target) if target is not None else Path(__file__).parent / "weights"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("weights.safetensors", "model_card.json", "MODEL_CARD.md"):
        shutil.copyfile(Path(out) / name, target / name)
    return target


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(PRETRAIN_SIZES), default="cpu")
    parser.add_argument("--out", type=Path, help="run folder (default: <cache>/pretrain-<size>)")
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: <cache>/corpus)")
    parser.add_argument("--steps", type=int, help="training steps (default: the size's)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the best there is)")
    parser.add_argument("--until", type=int, help="stop after this step (a rerun continues)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the size's)")
    parser.add_argument("--init", type=Path, help="continue from this finished run's folder (its weights)")
    parser.add_argument("--ship", action="store_true", help="copy the weights and card into course_lib/weights/")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v}
    out = args.out or cache_dir(f"pretrain-{args.size}")
    command = "python -m course_lib.pretrain " + shlex.join(sys.argv[1:] if argv is None else argv)
    card = pretrain(out, args.size, device=args.device, corpus_dir=args.corpus, command=command, until=args.until,
                    init=args.init, **overrides)
    if card is None:
        return None
    print(json.dumps({k: card[k] for k in ("frames_seen", "wall_seconds", "probe_held_out_mean")}))
    if args.ship:
        print(f"shipped to {ship(out)}")
    return card


if __name__ == "__main__":
    main()
