"""Do attributions point at the AU's region? The localisation ratio, on SynthAffWild's known regions.

Taught in ``09_explanations`` (section 6). :func:`localization_ratio`: how much of the positive
attribution of a map (:func:`course_lib.explain.attribute`) falls inside the AU's true region,
against chance; :func:`localization_scores`: its mean per AU and method over the frames where
the AU is active. SynthAffWild knows where each AU acts in every frame
(:func:`course_lib.data.synth.au_region_masks`), which no real data set does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data.datasets import FrameDataset
from .data.synth import au_region_masks, load_ground_truth
from .explain import METHODS, attribute
from .labels import AU_NAMES
from .progress import progress


# --------------------------------------------------------------------------- localisation


def localization_ratio(attribution: np.ndarray | torch.Tensor, region: np.ndarray | torch.Tensor) -> float:
    """Share of the positive attribution inside ``region``, divided by the region's share of the image.

    ``attribution`` (H, W) (negative values are ignored: only evidence *for* the output counts),
    ``region`` (H, W) bool. 1 = chance (e.g. a uniform map), 1 / share = everything inside,
    0 = everything outside. NaN when there is no positive attribution at all; an empty or
    full region raises ``ValueError`` (the ratio is undefined or always 1).
    """
    a = torch.as_tensor(attribution, dtype=torch.float64)
    m = torch.as_tensor(np.asarray(region), dtype=torch.bool) if not torch.is_tensor(region) else region.bool()
    if a.shape != m.shape:
        raise ValueError(f"attribution {tuple(a.shape)} and region {tuple(m.shape)} differ in shape")
    share = float(m.double().mean())
    if share == 0.0 or share == 1.0:
        raise ValueError("the region is empty or covers the whole image: the ratio is undefined")
    positive = a.clamp(min=0)
    total = float(positive.sum())
    if total <= 0.0:
        return float("nan")
    return float(positive[m.to(a.device)].sum()) / total / share


def _sample_frames(active: np.ndarray, max_frames: int | None, seed: int, min_per_au: int = 0) -> np.ndarray:
    """Rows with an active AU: all, or ``max_frames`` of them drawn at random (``seed``), first
    ``min_per_au`` frames of each AU (rarest AU first; all of an AU's frames where it has fewer)."""
    rows = np.flatnonzero(active.any(1))
    if max_frames is None or len(rows) <= max_frames:
        return rows
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for au in np.argsort(active.sum(0), kind="stable"):
        have = sum(bool(active[r, au]) for r in chosen)
        free = np.setdiff1d(np.flatnonzero(active[:, au]), sorted(chosen))
        take = min(max(0, min_per_au - have), len(free), max_frames - len(chosen))
        if take:  # no draw at all when nothing is taken: min_per_au=0 draws exactly as before
            chosen.update(int(r) for r in rng.choice(free, size=take, replace=False))
    rest = np.setdiff1d(rows, sorted(chosen))
    chosen.update(int(r) for r in rng.choice(rest, size=max_frames - len(chosen), replace=False))
    return np.array(sorted(chosen), dtype=int)


def _pairs(root: Path, table: pd.DataFrame, max_frames: int | None, seed: int, image_size: int,
           min_per_au: int = 0) -> pd.DataFrame:
    """(frame row, AU) pairs of ``table`` where the AU is active (clean labels) and its region is drawn."""
    table = table.reset_index(drop=True)
    truth = {v: load_ground_truth(root, v) for v in table["video"].unique()}
    active = np.stack([truth[r.video]["au"][r.frame - 1] for r in table.itertuples()]).astype(bool)
    rows = _sample_frames(active, max_frames, seed, min_per_au)
    out = []
    for row in rows:
        r = table.iloc[row]
        masks = au_region_masks(truth[r.video], int(r.frame) - 1, image_size)
        for au in np.flatnonzero(active[row]):
            if 0 < masks[au].mean() < 1:
                out.append({"row": int(row), "image": r.image, "au": AU_NAMES[au], "au_index": int(au),
                            "region_share": float(masks[au].mean()), "mask": masks[au]})
    return pd.DataFrame(out)


def localization_scores(model: nn.Module, root: Path | str, table: pd.DataFrame,
                        methods: Sequence[str] = METHODS, *, max_frames: int | None = None, seed: int = 0,
                        min_per_au: int = 0, batch_size: int = 16,
                        method_kwargs: dict[str, dict[str, Any]] | None = None, per_pair: bool = False,
                        progress_bar: bool = True, **kwargs: Any) -> pd.DataFrame:
    """Per AU and method: the mean :func:`localization_ratio` over the frames of ``table`` where the AU is active.

    "Active" comes from the generator's clean labels (``ground_truth/``, not the noisy
    annotations) and the region from :func:`course_lib.data.synth.au_region_masks`, so this
    works on SynthAffWild only. Each active (frame, AU) pair is explained with the AU head and
    that AU as the target. ``max_frames``: a random subset (``seed``) of the frames with an
    active AU, of which ``min_per_au`` frames per AU where it has that many (rare AUs
    otherwise get one or two frames of a random draw). ``method_kwargs``: per-method options for
    :func:`~course_lib.explain.attribute`; ``kwargs``: options for every method. Returns a (12 AUs x methods) table of mean ratios (NaN for an AU never
    active), or with ``per_pair=True`` one row per (frame, AU, method) with its ratio and the
    region's share of the image. Timing per method is in ``.attrs["seconds"]``.
    """
    root = Path(root)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: use {list(METHODS)}")
    table = table.reset_index(drop=True)
    frames = FrameDataset(table, root)
    image_size = int(frames[0]["image"].shape[-1])
    pairs = _pairs(root, table, max_frames, seed, image_size, min_per_au)
    if pairs.empty:
        raise ValueError("no frame of the table has an active AU with a drawn region")
    device = next(model.parameters()).device
    records: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    steps = [(m, s) for m in methods for s in range(0, len(pairs), batch_size)]
    for method, start in progress(steps, desc="attributions", disable=not progress_bar):
        chunk = pairs.iloc[start:start + batch_size]
        images = torch.stack([frames[int(r)]["image"] for r in chunk["row"]]).to(device)
        tick = time.perf_counter()
        maps = attribute(model, images, "au", chunk["au_index"].tolist(), method,
                         **{**kwargs, **(method_kwargs or {}).get(method, {})}).cpu()
        seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - tick
        for m, (_, p) in zip(maps, chunk.iterrows()):
            records.append({"image": p["image"], "au": p["au"], "method": method,
                            "ratio": localization_ratio(m, p["mask"]), "region_share": p["region_share"]})
    long = pd.DataFrame(records)
    long.attrs["seconds"] = seconds
    if per_pair:
        return long
    wide = long.pivot_table(index="au", columns="method", values="ratio", aggfunc="mean")
    wide = wide.reindex(index=list(AU_NAMES), columns=list(methods))
    wide.index.name, wide.columns.name = "AU", "method"
    wide.attrs["seconds"] = seconds
    wide.attrs["frames"] = long[long["method"] == methods[0]].groupby("au").size().reindex(list(AU_NAMES)).fillna(0)
    return wide


__all__ = ["localization_ratio", "localization_scores"]
