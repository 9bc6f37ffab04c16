"""The model randomisation test: does an explanation change when the model's weights are destroyed?

Taught in ``09_explanations``. Adebayo et al. (2018): :func:`randomized_copies` re-initialises the
weights from the output down (cascading) or all at once, and :func:`sanity_check` compares the
attributions (:func:`course_lib.explain.attribute`) of the trained and the randomised models with
:func:`rank_correlation`. An explanation that barely changes when the weights are destroyed
explains the image (its edges), not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import seeded
from .explain import Sign, Target, attribute


# --------------------------------------------------------------------------- the sanity check


def _stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The model's parts from the output down to the pixels, for cascading randomisation."""
    stages: list[tuple[str, list[nn.Module]]] = []
    for name in ("au_to_expr", "heads", "graph", "au_nodes", "project"):
        part = getattr(model, name, None)
        if part is not None:
            stages.append((name, [part]))
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        stages.append(("encoder.norm", [encoder.norm]))
        for i in reversed(range(len(encoder.blocks))):
            stages.append((f"encoder.blocks.{i}", [encoder.blocks[i]]))
        stages.append(("encoder.queries+reducer", [encoder.queries, encoder.reducer]))
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        parts: list[tuple[str, nn.Module]] = []
        for name, child in backbone.model.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                parts.extend((f"backbone.{name}.{n}", c) for n, c in child.named_children())
            else:
                parts.append((f"backbone.{name}", child))
        parts = [(n, c) for n, c in parts if any(True for _ in c.parameters())]
        stages.extend((n, [c]) for n, c in reversed(parts))
    if not stages:
        raise ValueError("found no parts to randomise in this model")
    return stages


@torch.no_grad()
def _randomize(modules: Sequence[nn.Module], generator_seed: int) -> None:
    """Re-initialise every parameter of ``modules`` (their own ``reset_parameters``, else a normal draw)."""
    with seeded(generator_seed):
        for module in modules:
            covered: set[int] = set()
            for sub in module.modules():
                if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                    sub.reset_parameters()
                    covered.update(id(p) for p in sub.parameters(recurse=False))
            for p in module.parameters():
                if id(p) not in covered:
                    std = float(p.std()) if p.numel() > 1 else 0.02
                    p.normal_(0.0, std if std > 0 else 0.02)


def randomized_copies(model: nn.Module, mode: Literal["cascading", "full"] = "cascading", seed: int = 0
                      ) -> list[tuple[str, nn.Module]]:
    """Copies of ``model`` with weights re-initialised at random (Adebayo et al. 2018).

    ``"cascading"``: one copy per stage, randomising from the output down: the heads first,
    then the cross-attention blocks, ..., the backbone's first layer last; each copy keeps the
    previous stages randomised. ``"full"``: one copy with every part randomised. Returns
    ``[(name of the last stage randomised, model), ...]``; the models are in eval mode.
    """
    if mode not in ("cascading", "full"):
        raise ValueError(f"mode={mode!r}: use 'cascading' or 'full'")
    stages = _stages(model)
    current = copy.deepcopy(model).eval()
    if mode == "full":
        named = dict(_stages(current))
        _randomize([m for mods in named.values() for m in mods], seed)
        return [("everything", current)]
    out = []
    for i, (name, _) in enumerate(stages):
        current = copy.deepcopy(current)
        _randomize(dict(_stages(current))[name], seed + i)
        out.append((name, current.eval()))
    return out


def rank_correlation(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation of two maps (ties get their average rank)."""
    x = pd.Series(np.asarray(a, dtype=np.float64).ravel()).rank().to_numpy()
    y = pd.Series(np.asarray(b, dtype=np.float64).ravel()).rank().to_numpy()
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def sanity_check(model: nn.Module, images: torch.Tensor, head: str, target: Target | Sequence[Target],
                 methods: Sequence[str] = ("saliency", "integrated_gradients", "grad_cam"), *,
                 mode: Literal["cascading", "full"] = "cascading", seed: int = 0, sign: Sign = "absolute",
                 **kwargs: Any) -> tuple[pd.DataFrame, dict[str, dict[str, torch.Tensor]]]:
    """Model randomisation test: how similar are the attributions of the trained and the randomised model?

    For each copy of :func:`randomized_copies` and each method, the Spearman rank correlation
    (:func:`rank_correlation`) between its maps and the trained model's maps, averaged over the
    images. An explanation that depends on what the model learned falls towards 0 as the
    weights are destroyed; one that stays high reflects the image, not the model. ``sign``
    defaults to ``"absolute"``, as Adebayo et al. compare magnitudes. Returns the table (rows:
    ``"trained"`` then the stages; columns: methods) and the maps ``{stage: {method: (B, H, W)}}``.
    """
    copies = [("trained", model), *randomized_copies(model, mode, seed)]
    maps: dict[str, dict[str, torch.Tensor]] = {}
    rows = []
    for name, m in copies:
        maps[name] = {method: attribute(m, images, head, target, method, sign=sign, **kwargs).cpu()
                      for method in methods}
        rows.append({"randomised up to": name, **{
            method: float(np.mean([rank_correlation(a, b) for a, b in zip(maps["trained"][method], maps[name][method])]))
            for method in methods}})
    return pd.DataFrame(rows).set_index("randomised up to"), maps


__all__ = ["randomized_copies", "rank_correlation", "sanity_check"]
