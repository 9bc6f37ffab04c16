"""course_lib.metrics against independent references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from course_lib.labels import AU_NAMES, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA
from course_lib.metrics import (
    DEFAULT_THRESHOLD_GRID, abaw2_au_score, abaw2_expr_score, always_positive_f1, au_f1, ccc,
    expr_f1, p_mtl, tune_au_thresholds,
)


def _ccc_from_pearson(x, y):
    """CCC = 2 r s_x s_y / (s_x^2 + s_y^2 + (mean difference)^2), computed another way."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    return 2 * r * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 500)
    y = 0.6 * x + rng.normal(0.1, 0.3, 500)
    assert ccc(x, y) == pytest.approx(_ccc_from_pearson(x, y), abs=1e-12)
    assert ccc(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(ccc(x, y), abs=1e-6)


def test_ccc_punishes_shift_and_scale_unlike_pearson():
    x = np.linspace(-1, 1, 101)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)
    assert ccc(x, x + 0.5) < 0.8 and np.corrcoef(x, x + 0.5)[0, 1] == pytest.approx(1.0)
    assert ccc(x, x / 3) == pytest.approx(2 * (1 / 3) * x.var() / (x.var() + x.var() / 9))
    assert ccc(x, np.zeros_like(x)) == 0.0
    assert ccc(x, x[::-1] * 0 + 0.3) == 0.0
    assert ccc(np.ones(4), np.ones(4)) == 1.0


def test_ccc_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        ccc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        ccc([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        ccc([], [])


@pytest.mark.parametrize("positives, n", [(1, 50), (10, 100), (683, 1000), (100, 100)])
def test_always_positive_f1_matches_sklearn(positives, n):
    truth = np.arange(n) < positives
    assert always_positive_f1(positives / n) == pytest.approx(f1_score(truth, np.ones(n, bool)))
    with pytest.raises(ValueError):
        always_positive_f1(1.5)


# --------------------------------------------------------------------------- F1 scores and P_MTL


def _au_data(rng, n=400, missing=0.2):
    """AU truth with sprinkled missing rows and correlated probabilities; some AUs rare."""
    rates = rng.uniform(0.02, 0.7, 12)
    truth = (rng.random((n, 12)) < rates).astype(np.float64)
    prob = np.clip(0.35 * truth + rng.random((n, 12)) * 0.65, 0, 1)
    truth[rng.random(n) < missing] = MISSING_AU
    return truth, prob


def _expr_data(rng, n=400, missing=0.2):
    truth = rng.integers(0, 8, n)
    logits = rng.normal(0, 1, (n, 8))
    logits[np.arange(n), truth] += 1.0
    truth[rng.random(n) < missing] = MISSING_EXPR
    return truth, logits


def _va_data(rng, n=400, missing=0.2):
    truth = rng.uniform(-1, 1, (n, 2))
    pred = np.clip(0.6 * truth + rng.normal(0, 0.3, (n, 2)), -1, 1)
    gone = rng.random(n) < missing
    truth[gone, rng.integers(0, 2, gone.sum())] = MISSING_VA  # one value missing = row missing
    return truth, pred


@pytest.mark.parametrize("seed", range(4))
def test_au_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth, prob = _au_data(rng)
    keep = truth[:, 0] != MISSING_AU
    t, d = truth[keep].astype(int), (prob[keep] >= 0.5).astype(int)
    want = [f1_score(t[:, k], d[:, k], zero_division=0) for k in range(12)]
    mean, per_au = au_f1(truth, prob)
    assert per_au.shape == (12,) and per_au.dtype == np.float64
    np.testing.assert_allclose(per_au, want, atol=1e-12)
    assert mean == pytest.approx(np.mean(want), abs=1e-12)
    # 0/1 decisions are scored as they are
    decisions = np.full(prob.shape, 0.3)
    decisions[keep] = d
    assert au_f1(truth, decisions)[0] == pytest.approx(mean, abs=1e-12)


def test_au_f1_zero_division_is_zero_like_sklearn():
    truth = np.zeros((6, 12))
    truth[:3, 1:] = 1  # AU1 never present ...
    pred = truth.copy()  # ... and never predicted: 0/0
    mean, per_au = au_f1(truth, pred)
    assert per_au[0] == 0.0 == f1_score(truth[:, 0], pred[:, 0], zero_division=0)
    np.testing.assert_array_equal(per_au[1:], 1.0)
    assert mean == pytest.approx(11 / 12)


def test_au_f1_per_au_thresholds_apply_per_column():
    rng = np.random.default_rng(7)
    truth, prob = _au_data(rng)
    th = np.linspace(0.1, 0.9, 12)
    keep = truth[:, 0] != MISSING_AU
    want = [f1_score(truth[keep, k], prob[keep, k] >= th[k], zero_division=0) for k in range(12)]
    np.testing.assert_allclose(au_f1(truth, prob, threshold=th)[1], want, atol=1e-12)
    # one column's threshold moves only that column's F1
    th2 = th.copy()
    th2[3] = 0.99
    moved = au_f1(truth, prob, threshold=th2)[1] != au_f1(truth, prob, threshold=th)[1]
    assert moved.tolist() == [k == 3 for k in range(12)]
    # ">=": a probability equal to the threshold counts as present
    assert au_f1(np.ones((2, 12)), np.full((2, 12), 0.5))[0] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_expr_f1_matches_sklearn_and_logits_equal_ids(seed):
    rng = np.random.default_rng(seed)
    truth, logits = _expr_data(rng)
    keep = truth != MISSING_EXPR
    ids = logits.argmax(1)
    want = f1_score(truth[keep], ids[keep], labels=range(8), average=None, zero_division=0)
    mean, per_class = expr_f1(truth, logits)
    np.testing.assert_allclose(per_class, want, atol=1e-12)
    assert mean == pytest.approx(
        f1_score(truth[keep], ids[keep], labels=range(8), average="macro", zero_division=0), abs=1e-12)
    assert expr_f1(truth, ids)[0] == mean
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert expr_f1(truth, probs)[0] == mean


def test_expr_f1_absent_class_counts_as_zero():
    truth = np.array([0, 0, 1, 1, 4, 4])
    pred = truth.copy()
    mean, per_class = expr_f1(truth, pred)
    assert per_class.tolist() == [1, 1, 0, 0, 1, 0, 0, 0]
    assert mean == pytest.approx(
        f1_score(truth, pred, labels=range(8), average="macro", zero_division=0)) == 3 / 8


@pytest.mark.parametrize("seed", range(3))
def test_abaw2_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth, logits = _expr_data(rng)
    keep = (truth != MISSING_EXPR) & (truth != 7)
    ids = logits[:, :7].argmax(1)
    t, p = truth[keep], ids[keep]
    f1 = f1_score(t, p, labels=range(7), average="macro", zero_division=0)
    want = 0.67 * f1 + 0.33 * accuracy_score(t, p)
    assert abaw2_expr_score(truth, logits) == pytest.approx(want, abs=1e-12)
    assert abaw2_expr_score(truth, logits[:, :7]) == pytest.approx(want, abs=1e-12)
    # predicted ids 7 ("Other") are simply wrong under ABAW2
    ids8 = logits.argmax(1)
    t8, p8 = truth[keep], ids8[keep]
    want8 = (0.67 * f1_score(t8, p8, labels=range(7), average="macro", zero_division=0)
             + 0.33 * accuracy_score(t8, p8))
    assert abaw2_expr_score(truth, ids8) == pytest.approx(want8, abs=1e-12)

    au_t, au_p = _au_data(rng)
    keep = au_t[:, 0] != MISSING_AU
    t, d = au_t[keep], au_p[keep] >= 0.4
    f1 = np.mean([f1_score(t[:, k], d[:, k], zero_division=0) for k in range(12)])
    want = 0.5 * f1 + 0.5 * accuracy_score(t.ravel(), d.ravel())
    assert abaw2_au_score(au_t, au_p, threshold=0.4) == pytest.approx(want, abs=1e-12)


def test_p_mtl_matches_hand_computed_reference():
    va_true = np.array([[0.5, 0.1], [-0.2, 0.3], [0.0, -0.4], [MISSING_VA, 0.2], [0.9, 0.8]])
    va_pred = np.array([[0.4, 0.0], [-0.1, 0.5], [0.1, -0.2], [0.7, -0.7], [0.6, 0.6]])
    expr_true = np.array([0, 4, 4, MISSING_EXPR, 1])
    expr_pred = np.array([0, 4, 1, 5, 1])
    au_true = np.zeros((5, 12))
    au_true[:, 0] = [1, 0, 1, 0, 0]
    au_true[:, 11] = [1, 1, 0, 0, 0]
    au_true[2] = MISSING_AU
    au_pred = np.zeros((5, 12))
    au_pred[:, 0] = [0.9, 0.6, 0.0, 0.0, 0.1]   # rows 0,1,3,4: TP, FP, TN, TN -> F1 2/3
    au_pred[:, 11] = [0.7, 0.2, 0.9, 0.0, 0.0]  # TP, FN, TN, TN -> 2/3

    def ccc_ref(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        cov = ((a - a.mean()) * (b - b.mean())).mean()
        return 2 * cov / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)

    rows = [0, 1, 2, 4]
    cv, ca = ccc_ref(va_true[rows, 0], va_pred[rows, 0]), ccc_ref(va_true[rows, 1], va_pred[rows, 1])
    # expr rows 0,1,2,4: truth 0,4,4,1 vs 0,4,1,1: Neutral 1, Anger 2/3, Happiness 2/3, others 0
    f1_expr = (1 + 2 / 3 + 2 / 3) / 8
    f1_au = (2 / 3 + 2 / 3) / 12  # the 10 AUs never present nor predicted score 0
    got = p_mtl(va_true, va_pred, expr_true, expr_pred, au_true, au_pred)
    assert got["ccc_valence"] == pytest.approx(cv, abs=1e-12)
    assert got["ccc_arousal"] == pytest.approx(ca, abs=1e-12)
    assert got["va"] == pytest.approx((cv + ca) / 2, abs=1e-12)
    assert got["expr"] == pytest.approx(f1_expr, abs=1e-12)
    assert got["au"] == pytest.approx(f1_au, abs=1e-12)
    assert got["total"] == pytest.approx((cv + ca) / 2 + f1_expr + f1_au, abs=1e-12)
    assert (got["n_va"], got["n_expr"], got["n_au"]) == (4, 4, 4)
    assert list(got["au_f1_per_au"]) == list(AU_NAMES) and list(got["expr_f1_per_class"]) == list(EXPR_NAMES)
    assert got["au_f1_per_au"]["AU26"] == pytest.approx(2 / 3)
    assert got["expr_f1_per_class"]["Anger"] == pytest.approx(2 / 3)
    assert all(isinstance(got[k], float) for k in ("total", "va", "expr", "au", "ccc_valence", "ccc_arousal"))


def test_masking_really_excludes_rows():
    rng = np.random.default_rng(11)
    va_t, va_p = _va_data(rng)
    ex_t, ex_p = _expr_data(rng)
    au_t, au_p = _au_data(rng)
    before = p_mtl(va_t, va_p, ex_t, ex_p, au_t, au_p)
    va_p2, ex_p2, au_p2 = va_p.copy(), ex_p.copy(), au_p.copy()
    va_p2[(va_t == MISSING_VA).any(1)] = rng.uniform(-1, 1, 2)
    ex_p2[ex_t == MISSING_EXPR] = rng.normal(0, 5, 8)
    au_p2[au_t[:, 0] == MISSING_AU] = rng.random(12)
    after = p_mtl(va_t, va_p2, ex_t, ex_p2, au_t, au_p2)
    assert after == before
    assert abaw2_au_score(au_t, au_p2) == abaw2_au_score(au_t, au_p)
    assert abaw2_expr_score(ex_t, ex_p2) == abaw2_expr_score(ex_t, ex_p)
    # NaN predictions on missing rows are harmless too
    au_p2[au_t[:, 0] == MISSING_AU] = np.nan
    assert au_f1(au_t, au_p2)[0] == au_f1(au_t, au_p)[0]
    # and a changed prediction on a labelled row does change the score
    ex_p2[ex_t != MISSING_EXPR] = 0.0
    assert expr_f1(ex_t, ex_p2)[0] != expr_f1(ex_t, ex_p)[0]


def test_p_mtl_task_without_labels_is_nan_and_left_out_of_total():
    rng = np.random.default_rng(3)
    va_t, va_p = _va_data(rng, n=50)
    ex_t, ex_p = _expr_data(rng, n=50)
    au_t, au_p = _au_data(rng, n=50)
    full = p_mtl(va_t, va_p, ex_t, ex_p, au_t, au_p)
    with pytest.warns(RuntimeWarning, match="expr"):
        got = p_mtl(va_t, va_p, np.full(50, MISSING_EXPR), ex_p, au_t, au_p)
    assert np.isnan(got["expr"]) and got["n_expr"] == 0
    assert all(np.isnan(v) for v in got["expr_f1_per_class"].values())
    assert got["total"] == pytest.approx(full["va"] + full["au"], abs=1e-12)
    with pytest.raises(ValueError, match="any task"):
        p_mtl(np.full((50, 2), MISSING_VA), va_p, np.full(50, MISSING_EXPR), ex_p,
              np.full((50, 12), MISSING_AU), au_p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p_mtl(va_t, va_p, ex_t, ex_p, au_t, au_p)  # no warning when every task is scored
    for fn, args in [(au_f1, (np.full((3, 12), MISSING_AU), np.zeros((3, 12)))),
                     (expr_f1, (np.full(3, MISSING_EXPR), np.zeros(3))),
                     (abaw2_expr_score, (np.array([7, 7, -1]), np.zeros(3)))]:
        with pytest.raises(ValueError, match="no "):
            fn(*args)


def test_tune_au_thresholds_finds_known_optimum_and_beats_half():
    rng = np.random.default_rng(5)
    truth, prob = _au_data(rng, n=600)
    th = tune_au_thresholds(truth, prob)
    assert th.shape == (12,) and set(th) <= set(DEFAULT_THRESHOLD_GRID)
    tuned, per_tuned = au_f1(truth, prob, threshold=th)
    half, per_half = au_f1(truth, prob)
    assert tuned >= half and np.all(per_tuned >= per_half - 1e-12)
    # brute force over the grid agrees, AU by AU
    for k in range(12):
        f1s = [au_f1(truth, prob, threshold=np.full(12, g))[1][k] for g in DEFAULT_THRESHOLD_GRID]
        assert per_tuned[k] == pytest.approx(max(f1s), abs=1e-12)

    # constructed: positives score 0.3, negatives 0.2 -> any threshold in (0.2, 0.3] is perfect,
    # only 0.25 and 0.30 of the grid qualify, 0.30 is closer to 0.5
    n = 40
    truth = np.zeros((n, 12))
    truth[: n // 2] = 1
    prob = np.where(truth == 1, 0.3, 0.2)
    prob[:, 5] = np.where(truth[:, 5] == 1, 0.82, 0.77)  # only 0.8 separates AU10
    th = tune_au_thresholds(truth, prob)
    assert th[5] == pytest.approx(0.8)
    np.testing.assert_allclose(np.delete(th, 5), 0.3)
    assert au_f1(truth, prob, threshold=th)[0] == 1.0
    # a flat F1 (all thresholds tie) keeps 0.5
    truth = np.zeros((10, 12))
    truth[:5] = 1
    assert tune_au_thresholds(truth, np.where(truth == 1, 1.0, 0.0)).tolist() == [0.5] * 12
    # custom grid, missing rows left out
    truth[0] = MISSING_AU
    assert tune_au_thresholds(truth, np.where(truth == 1, 0.9, 0.1), grid=[0.2, 0.95]).tolist() == [0.2] * 12


def test_torch_tensors_give_the_same_results():
    rng = np.random.default_rng(2)
    va_t, va_p = _va_data(rng)
    ex_t, ex_p = _expr_data(rng)
    au_t, au_p = _au_data(rng)
    ref = p_mtl(va_t, va_p, ex_t, ex_p, au_t, au_p)
    tt = [torch.tensor(a) for a in (va_t, va_p, ex_t, ex_p, au_t, au_p)]
    tt[1] = tt[1].requires_grad_()  # predictions straight from a model, with grad
    tt[3] = tt[3].float()
    got = p_mtl(*tt)
    assert got == ref
    assert au_f1(torch.tensor(au_t), torch.tensor(au_p))[0] == au_f1(au_t, au_p)[0]
    assert expr_f1(torch.tensor(ex_t), torch.tensor(ex_p).argmax(1))[0] == expr_f1(ex_t, ex_p)[0]
    assert abaw2_au_score(torch.tensor(au_t), torch.tensor(au_p).half()) == pytest.approx(
        abaw2_au_score(au_t, au_p.astype(np.float16)), abs=1e-12)
    np.testing.assert_array_equal(tune_au_thresholds(torch.tensor(au_t), torch.tensor(au_p)),
                                  tune_au_thresholds(au_t, au_p))
    assert ccc(torch.tensor(va_p[:, 0]).requires_grad_(), va_p[:, 1]) == ccc(va_p[:, 0], va_p[:, 1])


def test_bad_shapes_and_values_raise():
    au = np.zeros((10, 12))
    with pytest.raises(ValueError, match=r"au_true has shape \(10, 11\), expected \(N, 12\)"):
        au_f1(np.zeros((10, 11)), au)
    with pytest.raises(ValueError, match="au_pred has shape"):
        au_f1(au, np.zeros(10))
    with pytest.raises(ValueError, match="rows"):
        au_f1(au, np.zeros((9, 12)))
    with pytest.raises(ValueError, match="sigmoid"):
        au_f1(au, np.full((10, 12), 2.0))
    with pytest.raises(ValueError, match="0, 1 or -1"):
        au_f1(np.full((10, 12), 0.5), au)
    with pytest.raises(ValueError, match="threshold has shape"):
        au_f1(au, au, threshold=np.full(11, 0.5))
    with pytest.raises(ValueError, match=r"expr_pred has shape \(10, 7\)"):
        expr_f1(np.zeros(10), np.zeros((10, 7)))
    with pytest.raises(ValueError, match="class ids"):
        expr_f1(np.zeros(10), np.full(10, 8))
    with pytest.raises(ValueError, match="expr_true"):
        expr_f1(np.full(10, 9), np.zeros(10))
    with pytest.raises(ValueError, match=r"va_true has shape \(10,\)"):
        p_mtl(np.zeros(10), np.zeros((10, 2)), np.zeros(10), np.zeros(10), au, au)
    with pytest.raises(ValueError, match="same number of rows"):
        p_mtl(np.zeros((9, 2)), np.zeros((9, 2)), np.zeros(10), np.zeros(10), au, au)
    with pytest.raises(ValueError, match="NaN"):
        p_mtl(np.zeros((10, 2)), np.full((10, 2), np.nan), np.zeros(10), np.zeros(10), au, au)


def test_do_nothing_scores_are_the_constant_predictors():
    import pandas as pd

    from course_lib.labels import AU_NAMES
    from course_lib.metrics import do_nothing_scores

    rng = np.random.default_rng(4)

    def table(n):
        au = (rng.random((n, 12)) < rng.uniform(0.05, 0.7, 12)).astype(int)
        expr = rng.choice(8, n, p=[0.4, 0.05, 0.05, 0.05, 0.2, 0.1, 0.05, 0.1])
        va = rng.uniform(-1, 1, (n, 2))
        has = rng.random((n, 3)) > 0.25
        va[~has[:, 0]] = -5
        expr[~has[:, 1]] = -1
        au[~has[:, 2]] = -1
        t = pd.DataFrame({"valence": va[:, 0], "arousal": va[:, 1], "expression": expr,
                          **{a: au[:, k] for k, a in enumerate(AU_NAMES)}})
        t["has_va"], t["has_expr"], t["has_au"] = has[:, 0], has[:, 1], has[:, 2]
        return t

    train, val = table(400), table(300)
    scores = do_nothing_scores(train, val)
    assert scores["va"] == pytest.approx(0.0, abs=1e-12)
    majority = int(np.bincount(train.expression[train.has_expr]).argmax())
    labelled = val[val.has_expr]
    want_expr = f1_score(labelled.expression, np.full(len(labelled), majority), average="macro",
                         labels=range(8), zero_division=0)
    assert scores["expr"] == pytest.approx(want_expr)
    rates = val[val.has_au][list(AU_NAMES)].mean().to_numpy()
    assert scores["au"] == pytest.approx(np.mean([always_positive_f1(p) for p in rates]))
