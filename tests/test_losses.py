"""course_lib.losses against torch's own losses and course_lib.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.labels import MISSING_AU, MISSING_EXPR, MISSING_VA
from course_lib.losses import MultiTaskLoss, ccc_loss, masked_bce, weighted_ce
from course_lib.metrics import ccc


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- ccc_loss


@pytest.mark.parametrize("seed", range(4))
def test_ccc_loss_is_one_minus_metric_ccc(seed):
    g = _gen(seed)
    y = torch.rand(200, 2, generator=g, dtype=torch.float64) * 2 - 1
    x = 0.5 * y + 0.3 * torch.randn(200, 2, generator=g, dtype=torch.float64) + 0.1
    per_col = [1 - ccc(x[:, c].numpy(), y[:, c].numpy()) for c in range(2)]
    assert ccc_loss(x, y).item() == pytest.approx(np.mean(per_col), abs=1e-12)
    assert ccc_loss(x[:, 0], y[:, 0]).item() == pytest.approx(per_col[0], abs=1e-12)
    assert ccc_loss(x.float(), y.float()).item() == pytest.approx(np.mean(per_col), abs=1e-5)
    assert ccc_loss(x.half(), y.half()).dtype == torch.float32


def test_ccc_loss_zero_for_perfect_predictions():
    y = torch.linspace(-1, 1, 50, dtype=torch.float64)
    assert ccc_loss(y, y).item() == pytest.approx(0.0, abs=1e-12)
    assert ccc_loss(y.expand(2, -1).T, y.expand(2, -1).T).item() == pytest.approx(0.0, abs=1e-12)
    const = torch.full((5,), 0.3, requires_grad=True)
    loss = ccc_loss(const, torch.full((5,), 0.3))  # identical constants: CCC 1, no NaN
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(const.grad).all()


def test_ccc_loss_masking_excludes_elements():
    g = _gen(1)
    x = torch.randn(100, 2, generator=g, dtype=torch.float64)
    y = 0.7 * x + 0.2 * torch.randn(100, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(100, generator=g) > 0.3
    want = ccc_loss(x[mask], y[mask])
    junk_x, junk_y = x.clone(), y.clone()
    junk_x[~mask], junk_y[~mask] = 1e6, MISSING_VA
    assert ccc_loss(junk_x, junk_y, mask).item() == pytest.approx(want.item(), abs=1e-12)
    junk_x[~mask] = float("nan")  # even NaN on masked elements does not leak
    assert ccc_loss(junk_x, junk_y, mask).item() == pytest.approx(want.item(), abs=1e-12)
    # a per-element mask scores each column on its own elements
    full = torch.stack([mask, ~mask], dim=1)
    per_col = [ccc_loss(x[full[:, c], c], y[full[:, c], c]).item() for c in range(2)]
    assert ccc_loss(x, y, full).item() == pytest.approx(np.mean(per_col), abs=1e-12)
    assert ccc_loss(x[:, 0], y[:, 0], mask).item() == pytest.approx(ccc_loss(x[mask, 0], y[mask, 0]).item())


def test_ccc_loss_fewer_than_two_valid_is_connected_zero():
    x = torch.randn(6, 2, requires_grad=True)
    y = torch.randn(6, 2)
    for mask in (torch.zeros(6, dtype=torch.bool), torch.arange(6) == 2):
        loss = ccc_loss(x, y, mask)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None
    # a column with < 2 valid elements is left out of the mean, not counted as 0
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[1:, 1] = False
    assert ccc_loss(x, y, mask).item() == pytest.approx(ccc_loss(x[:, 0], y[:, 0]).item(), abs=1e-6)


def test_ccc_loss_gradients_flow_and_sgd_reduces_it():
    g = _gen(3)
    y = torch.rand(64, 2, generator=g) * 2 - 1
    w = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    x_in = y + 0.5 * torch.randn(64, 2, generator=g)
    opt = torch.optim.SGD([w, b], lr=0.5)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ccc_loss(x_in * w + b + 0.01 * x_in, y)
        loss.backward()
        assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_ccc_loss_bad_shapes():
    with pytest.raises(ValueError, match="target"):
        ccc_loss(torch.zeros(5), torch.zeros(4))
    with pytest.raises(ValueError, match="expected"):
        ccc_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="mask"):
        ccc_loss(torch.zeros(5, 2), torch.zeros(5, 2), torch.ones(4, dtype=torch.bool))


# --------------------------------------------------------------------------- masked_bce


def test_masked_bce_equals_torch_on_valid_rows_with_pos_weight():
    g = _gen(4)
    logits = torch.randn(32, 12, generator=g, dtype=torch.float64)
    target = (torch.rand(32, 12, generator=g) < 0.3).double()
    missing = torch.rand(32, generator=g) < 0.25
    target[missing] = MISSING_AU
    has = torch.rand(32, generator=g) < 0.8
    pos_weight = torch.linspace(0.5, 8.0, 12, dtype=torch.float64)
    valid = ~missing & has
    for pw in (None, pos_weight):
        want = nn.BCEWithLogitsLoss(pos_weight=pw)(logits[valid], target[valid])
        assert masked_bce(logits, target, has, pw).item() == pytest.approx(want.item(), abs=1e-12)
    want = nn.BCEWithLogitsLoss()(logits[~missing], target[~missing])
    assert masked_bce(logits, target).item() == pytest.approx(want.item(), abs=1e-12)
    # soft targets too; one missing element ignored, the rest of its row kept
    soft = torch.rand(32, 12, generator=g, dtype=torch.float64)
    soft[0, 3] = MISSING_AU
    keep = soft != MISSING_AU
    want = F.binary_cross_entropy_with_logits(logits[keep], soft[keep])
    assert masked_bce(logits, soft).item() == pytest.approx(want.item(), abs=1e-12)


def test_masked_bce_nothing_valid_is_connected_zero():
    logits = torch.randn(4, 12, requires_grad=True)
    loss = masked_bce(logits, torch.full((4, 12), float(MISSING_AU)))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="pos_weight"):
        masked_bce(logits, torch.zeros(4, 12), pos_weight=torch.ones(11))


# --------------------------------------------------------------------------- weighted_ce


def test_weighted_ce_equals_cross_entropy_on_valid_rows():
    g = _gen(5)
    logits = torch.randn(40, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 8, (40,), generator=g)
    target[torch.rand(40, generator=g) < 0.3] = MISSING_EXPR
    weights = torch.linspace(0.2, 3.0, 8, dtype=torch.float64)
    valid = target != MISSING_EXPR
    for w in (None, weights):
        want = F.cross_entropy(logits[valid], target[valid], weight=w)
        assert weighted_ce(logits, target, w).item() == pytest.approx(want.item(), abs=1e-12)
        assert F.cross_entropy(logits, target, weight=w, ignore_index=-1).item() == pytest.approx(
            want.item(), abs=1e-12)
    mask = torch.rand(40, generator=g) < 0.5
    want = F.cross_entropy(logits[valid & mask], target[valid & mask], weight=weights)
    assert weighted_ce(logits, target, weights, mask=mask).item() == pytest.approx(want.item(), abs=1e-12)


def test_weighted_ce_nothing_valid_is_connected_zero():
    logits = torch.randn(4, 8, requires_grad=True)
    target = torch.full((4,), MISSING_EXPR)
    assert math.isnan(F.cross_entropy(logits, target, ignore_index=-1).item())  # what we avoid
    loss = weighted_ce(logits, target, torch.ones(8))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="expected"):
        weighted_ce(logits, torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- MultiTaskLoss


def _batch(seed: int, b: int = 16, t: int | None = None):
    g = _gen(seed)
    lead = (b,) if t is None else (b, t)
    outputs = {
        "au": torch.randn(*lead, 12, generator=g, requires_grad=True),
        "expr": torch.randn(*lead, 8, generator=g, requires_grad=True),
        "va": torch.randn(*lead, 2, generator=g, requires_grad=True),
    }
    batch = {
        "au": (torch.rand(*lead, 12, generator=g) < 0.3).float(),
        "expr": torch.randint(0, 8, lead, generator=g),
        "va": torch.rand(*lead, 2, generator=g) * 2 - 1,
    }
    return outputs, batch


def test_multitask_loss_is_weighted_sum_and_backward_works():
    outputs, batch = _batch(0)
    batch["au"][:3] = MISSING_AU
    batch["expr"][5:9] = MISSING_EXPR
    batch["va"][2, 1] = MISSING_VA
    pw, cw = torch.linspace(1, 4, 12), torch.linspace(0.5, 2, 8)
    crit = MultiTaskLoss({"au": 2.0, "va": 0.5}, pos_weight=pw, class_weights=cw)
    total, parts = crit(outputs, batch)
    au = masked_bce(outputs["au"], batch["au"], pos_weight=pw)
    ex = weighted_ce(outputs["expr"], batch["expr"], cw)
    va_ok = (batch["va"] != MISSING_VA).all(1)
    va = ccc_loss(outputs["va"][va_ok], batch["va"][va_ok])
    assert parts["au"].item() == pytest.approx(au.item()) and parts["expr"].item() == pytest.approx(ex.item())
    assert parts["va"].item() == pytest.approx(va.item())
    assert total.item() == pytest.approx(2.0 * au.item() + ex.item() + 0.5 * va.item(), rel=1e-6)
    assert not any(p.requires_grad for p in parts.values())
    total.backward()
    for out in outputs.values():
        assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    assert crit.weights == {"au": 2.0, "expr": 1.0, "va": 0.5}
    assert {n for n, _ in crit.named_buffers()} == {"pos_weight", "class_weights"}


@pytest.mark.parametrize("task", ["au", "expr", "va"])
def test_multitask_loss_skips_a_task_without_labels(task):
    outputs, batch = _batch(1)
    marker = {"au": MISSING_AU, "expr": MISSING_EXPR, "va": MISSING_VA}[task]
    batch[task] = torch.full_like(batch[task], marker)
    crit = MultiTaskLoss({"au": 1.5, "expr": 0.7, "va": 3.0})
    total, parts = crit(outputs, batch)
    assert math.isnan(parts[task].item())
    others = [t for t in ("au", "expr", "va") if t != task]
    assert total.item() == pytest.approx(sum(crit.weights[t] * parts[t].item() for t in others), rel=1e-6)
    total.backward()
    assert torch.equal(outputs[task].grad, torch.zeros_like(outputs[task]))
    assert all(outputs[t].grad.abs().sum() > 0 for t in others)


def test_multitask_loss_uses_has_masks_and_single_frame_va_is_skipped():
    outputs, batch = _batch(2)
    has_au = torch.arange(16) < 10
    batch["has_au"], batch["has_expr"] = has_au, torch.zeros(16, dtype=torch.bool)
    batch["has_va"] = torch.arange(16) == 4  # one VA frame: the CCC needs two
    total, parts = MultiTaskLoss()(outputs, batch)
    assert parts["au"].item() == pytest.approx(masked_bce(outputs["au"][:10], batch["au"][:10]).item())
    assert math.isnan(parts["expr"].item()) and math.isnan(parts["va"].item())
    assert total.item() == pytest.approx(parts["au"].item())
    # a has-mask never resurrects a label marked missing
    batch["au"][:10] = MISSING_AU
    total, parts = MultiTaskLoss()(outputs, batch)
    assert math.isnan(parts["au"].item()) and total.item() == 0.0 and total.grad_fn is not None
    total.backward()


def test_multitask_loss_sequences_are_flattened_over_time():
    outputs, batch = _batch(3, b=4, t=6)
    batch["expr"][0, :3] = MISSING_EXPR
    batch["has_va"] = torch.ones(4, 6, dtype=torch.bool)
    batch["has_va"][1] = False
    total, parts = MultiTaskLoss()(outputs, batch)
    flat_out = {k: v.reshape(24, -1) for k, v in outputs.items()}
    flat_batch = {"au": batch["au"].reshape(24, 12), "expr": batch["expr"].reshape(24),
                  "va": batch["va"].reshape(24, 2), "has_va": batch["has_va"].reshape(24)}
    total_flat, parts_flat = MultiTaskLoss()(flat_out, flat_batch)
    assert total.item() == pytest.approx(total_flat.item())
    for k in parts:
        assert parts[k].item() == pytest.approx(parts_flat[k].item())
    total.backward()
    assert all(torch.isfinite(v.grad).all() for v in outputs.values())


def test_multitask_loss_single_task_outputs_and_errors():
    outputs, batch = _batch(4)
    total, parts = MultiTaskLoss()({"expr": outputs["expr"]}, batch)
    assert set(parts) == {"expr"} and total.item() == pytest.approx(parts["expr"].item())
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskLoss({"valence": 1.0})
    with pytest.raises(ValueError, match="pos_weight"):
        MultiTaskLoss(pos_weight=torch.ones(11))
    with pytest.raises(ValueError, match="no 'va' labels"):
        MultiTaskLoss()(outputs, {"au": batch["au"], "expr": batch["expr"]})
    with pytest.raises(ValueError, match=r"outputs\['au'\] has shape \(16, 11\)"):
        MultiTaskLoss()({"au": outputs["au"][:, :11]}, batch)
    with pytest.raises(ValueError, match="has_expr"):
        MultiTaskLoss()(outputs, {**batch, "has_expr": torch.ones(15, dtype=torch.bool)})
    with pytest.raises(ValueError, match="none of the tasks"):
        MultiTaskLoss()({}, batch)
