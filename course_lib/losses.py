"""Training losses for the three tasks, with missing labels masked out.

Taught in ``04`` (one loss per task: BCE for AUs, cross-entropy for expressions, 1 - CCC
for valence/arousal) and ``05`` (weighting them into one multi-task loss).

Missing labels use the markers of :mod:`course_lib.labels` (AU ``-1``, expression ``-1``,
VA ``-5``). A loss with nothing valid to average returns a zero that is still part of the
graph of the predictions (``backward()`` works and gives zero gradients), so a batch
without, say, expression labels needs no special case in the training loop. The losses
avoid data-dependent Python branches, so they never force a GPU synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data.label_stats import au_pos_weights, expr_class_weights
from .labels import AU_NAMES, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA

#: The tasks of :class:`MultiTaskLoss`, in the order they are computed and reported.
TASKS: tuple[str, ...] = ("au", "expr", "va")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 at least: half-precision moments and sums lose too much."""
    return torch.promote_types(t.dtype, torch.float32)


def _mask_like(mask: torch.Tensor | None, shape: torch.Size, name: str, device) -> torch.Tensor:
    """A bool mask broadcast to ``shape``; one value per row (``shape[:-1]``) or per element."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device).bool()
    if mask.shape == shape[:-1]:
        mask = mask.unsqueeze(-1)
    elif mask.shape != shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(shape[:-1])} "
                         f"or {tuple(shape)}")
    return mask.expand(shape)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
             ) -> torch.Tensor:
    """``1 - CCC`` (population moments) of predictions and targets, over the masked elements.

    ``pred`` and ``target`` are ``(N,)`` or ``(N, C)`` (e.g. valence and arousal); with C
    columns the result is the mean of the per-column losses. ``mask`` (bool, ``(N,)`` or the
    full shape) marks the valid elements. The CCC is a statistic of the whole batch, so use
    batches of dozens of frames, not a handful. A column with fewer than 2 valid elements is
    left out of the mean; if no column has 2, the result is a zero connected to ``pred``.
    Identical constant predictions and targets count as CCC = 1, as in ``metrics.ccc``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}")
    if pred.ndim not in (1, 2):
        raise ValueError(f"pred has shape {tuple(pred.shape)}, expected (N,) or (N, C)")
    dtype = _compute_dtype(pred)
    x = (pred if pred.ndim == 2 else pred.unsqueeze(1)).to(dtype)
    y = (target if target.ndim == 2 else target.unsqueeze(1)).to(device=x.device, dtype=dtype)
    if mask is not None and pred.ndim == 1:
        mask = torch.as_tensor(mask, device=x.device).reshape(-1, 1)
    m = _mask_like(mask, x.shape, "mask", x.device)

    n = m.sum(0).to(dtype)
    n_safe = n.clamp(min=1.0)
    zero = x.new_zeros(())
    mx = torch.where(m, x, zero).sum(0) / n_safe
    my = torch.where(m, y, zero).sum(0) / n_safe
    dx = torch.where(m, x - mx, zero)
    dy = torch.where(m, y - my, zero)
    cov = (dx * dy).sum(0) / n_safe
    denom = (dx * dx).sum(0) / n_safe + (dy * dy).sum(0) / n_safe + (mx - my) ** 2
    positive = denom > 0
    ccc = torch.where(positive, 2.0 * cov / torch.where(positive, denom, 1.0), 1.0)

    ok = n >= 2
    per_column = torch.where(ok, 1.0 - ccc, zero)
    return per_column.sum() / ok.sum().clamp(min=1)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits for the 12 AUs, averaged over the valid elements.

    Elements whose target is ``-1`` and rows (or elements) where ``mask`` is False are left
    out. ``pos_weight`` (``(12,)``) multiplies the positive term per AU, as in
    ``nn.BCEWithLogitsLoss``: rare AUs get a weight above 1 (negatives / positives is the
    usual choice). Zero, connected to ``logits``, if nothing is valid.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits has shape {tuple(logits.shape)} but target {tuple(target.shape)}")
    dtype = _compute_dtype(logits)
    z = logits.to(dtype)
    t = target.to(device=z.device, dtype=dtype)
    valid = (t != MISSING_AU) & _mask_like(mask, z.shape, "mask", z.device)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight).to(device=z.device, dtype=dtype)
        if pos_weight.shape not in ((z.shape[-1],), ()):
            raise ValueError(f"pos_weight has shape {tuple(pos_weight.shape)}, expected ({z.shape[-1]},)")
    per_element = F.binary_cross_entropy_with_logits(
        z, torch.where(valid, t, 0.0), pos_weight=pos_weight, reduction="none")
    total = torch.where(valid, per_element, z.new_zeros(())).sum()
    return total / valid.sum().clamp(min=1)


def weighted_ce(logits: torch.Tensor, target: torch.Tensor,
                class_weights: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Cross-entropy over the 8 expressions, ignoring targets ``-1`` (and rows where ``mask`` is False).

    Same value as ``F.cross_entropy(logits, target, weight=class_weights, ignore_index=-1)``:
    with class weights the mean is weighted, ``sum w_y l / sum w_y``. Logits ``(..., C)``,
    targets ``(...)``. Zero, connected to ``logits``, if no row is valid (where
    ``F.cross_entropy`` returns NaN).
    """
    if logits.shape[:-1] != target.shape or logits.ndim < 2:
        raise ValueError(f"logits has shape {tuple(logits.shape)} and target {tuple(target.shape)}, "
                         "expected (N, C) and (N,)")
    dtype = _compute_dtype(logits)
    z = logits.reshape(-1, logits.shape[-1]).to(dtype)
    t = target.reshape(-1).to(device=z.device).long()
    valid = t != MISSING_EXPR
    if mask is not None:
        valid = valid & torch.as_tensor(mask, device=z.device).bool().reshape(-1)
    safe_t = torch.where(valid, t, 0)
    if class_weights is None:
        w = valid.to(dtype)
    else:
        class_weights = torch.as_tensor(class_weights).to(device=z.device, dtype=dtype)
        if class_weights.shape != (z.shape[-1],):
            raise ValueError(f"class_weights has shape {tuple(class_weights.shape)}, "
                             f"expected ({z.shape[-1]},)")
        w = torch.where(valid, class_weights[safe_t], 0.0)
    nll = F.cross_entropy(z, safe_t, reduction="none")
    den = w.sum()
    return (w * nll).sum() / torch.where(den > 0, den, 1.0)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the AU, expression and VA losses, with missing labels masked.

    ``weights``: task -> weight (``"au"``, ``"expr"``, ``"va"``; 1.0 for those not given).
    ``pos_weight`` (12,) for :func:`masked_bce` and ``class_weights`` (8,) for
    :func:`weighted_ce` are buffers, so they follow ``.to(device)``.

    ``forward(outputs, batch)`` returns ``(total, parts)``. ``outputs`` maps tasks to
    predictions, ``"au"`` (B, 12) logits, ``"expr"`` (B, 8) logits, ``"va"`` (B, 2); a task
    missing from ``outputs`` is not computed (single-task training). ``batch`` holds the
    labels with their missing markers and optional bool masks ``"has_au"``, ``"has_expr"``,
    ``"has_va"`` (B,); a mask is combined with the markers, so a label marked missing is
    never trained on. Sequences (B, T, ...) are flattened over time.

    A task without valid labels in the batch (for VA: fewer than 2 frames, the CCC needs
    2) contributes exactly 0 to ``total`` and is reported as NaN in ``parts`` (use
    ``nanmean`` to average over batches). ``parts`` holds the detached, unweighted task
    losses; ``total`` is ``sum weight[task] * loss[task]``.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *,
                 pos_weight: torch.Tensor | None = None,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task weights {unknown}: use {list(TASKS)}")
        self.weights: dict[str, float] = {t: float(weights.get(t, 1.0)) for t in TASKS}
        for name, value, size in (("pos_weight", pos_weight, len(AU_NAMES)),
                                  ("class_weights", class_weights, len(EXPR_NAMES))):
            if value is not None:
                value = torch.as_tensor(value, dtype=torch.float32)
                if value.shape != (size,):
                    raise ValueError(f"{name} has shape {tuple(value.shape)}, expected ({size},)")
            self.register_buffer(name, value)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"

    @staticmethod
    def _has(batch: Mapping[str, torch.Tensor], task: str, rows: torch.Size, device) -> torch.Tensor:
        has = batch.get(f"has_{task}")
        if has is None:
            return torch.ones(rows, dtype=torch.bool, device=device)
        has = torch.as_tensor(has, device=device).bool()
        if has.shape != rows:
            raise ValueError(f"has_{task} has shape {tuple(has.shape)}, expected {tuple(rows)}")
        return has

    def _task(self, task: str, out: torch.Tensor, lab: torch.Tensor,
              batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, whether it had valid labels) of one task, flattened over any time axis."""
        lab = torch.as_tensor(lab, device=out.device)
        width = {"au": len(AU_NAMES), "expr": len(EXPR_NAMES), "va": 2}[task]
        want = out.shape[:-1] if task == "expr" else out.shape
        if out.ndim < 2 or out.shape[-1] != width or lab.shape != want:
            raise ValueError(f"outputs['{task}'] has shape {tuple(out.shape)} and batch['{task}'] "
                             f"{tuple(lab.shape)}, expected (B, {width}) and "
                             f"{'(B,)' if task == 'expr' else f'(B, {width})'} (or with a time axis)")
        has = self._has(batch, task, out.shape[:-1], out.device).reshape(-1)
        out = out.reshape(-1, width)
        if task == "au":
            lab = lab.reshape(-1, width)
            loss = masked_bce(out, lab, has, self.pos_weight)
            present = ((lab != MISSING_AU) & has.unsqueeze(1)).any()
        elif task == "expr":
            lab = lab.reshape(-1)
            loss = weighted_ce(out, lab, self.class_weights, has)
            present = ((lab != MISSING_EXPR) & has).any()
        else:
            lab = lab.reshape(-1, width)
            valid = has & (lab != MISSING_VA).all(dim=1)
            loss = ccc_loss(out, lab, valid)
            present = valid.sum() >= 2
        return loss, present

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tasks = [t for t in TASKS if t in outputs]
        if not tasks:
            raise ValueError(f"outputs holds none of the tasks {list(TASKS)}")
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for task in tasks:
            if task not in batch:
                raise ValueError(f"outputs has '{task}' but batch has no '{task}' labels")
            loss, present = self._task(task, outputs[task], batch[task], batch)
            parts[task] = torch.where(present, loss.detach(), float("nan"))
            term = self.weights[task] * loss
            total = term if total is None else total + term
        assert total is not None
        return total, parts


#: Per-AU positive weights are capped here, so that a rare AU cannot dominate the loss.
MAX_POS_WEIGHT = 10.0


def weighted_loss(train_table: "pd.DataFrame") -> MultiTaskLoss:  # noqa: F821
    """The multi-task loss with per-AU positive weights (capped at :data:`MAX_POS_WEIGHT`) and
    expression class weights of ``train_table``: the loss every notebook from 02 on trains with."""
    pos_weight = torch.tensor(au_pos_weights(train_table)).clamp(max=MAX_POS_WEIGHT)
    return MultiTaskLoss(pos_weight=pos_weight, class_weights=torch.tensor(expr_class_weights(train_table)))
