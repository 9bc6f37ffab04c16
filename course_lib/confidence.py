"""How sure the numbers are: confidence intervals of P_MTL that resample whole videos.

Taught in ``08_evaluation``. Everything works on a predictions table
(:func:`course_lib.evaluate.predictions_table`):

- :func:`bootstrap`: confidence intervals that resample whole **videos**. Frames of one video are
  strongly correlated (the same person, light and episode), so resampling frames pretends there
  is far more independent evidence than there is and gives intervals that are too narrow;
- :func:`bootstrap_difference`: a paired interval of what one model adds over another (the same
  videos drawn for both), as :func:`course_lib.ablation.step_gains` uses it;
- :func:`per_video_scores`: P_MTL and its parts on each video alone;
- :func:`interval_table` / :func:`format_intervals`: intervals as ``estimate [low, high]`` text.

The bootstrap is exact and fast because every term of P_MTL is a function of sums that add up
over videos: CCC needs ``n, sum x, sum y, sum x^2, sum y^2, sum xy``; an F1 needs TP, FP, FN.
Each video's sums are computed once; a resample is a vector of counts per video, and its sums
are one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .evaluate import METRIC_LABELS, METRICS, metric_arrays, scores
from .metrics import N_AU, N_EXPR


# --------------------------------------------------------------------------- bootstrap over videos


def _stats(df: pd.DataFrame, by: str, au_threshold) -> tuple[np.ndarray, dict[str, slice], np.ndarray]:
    """Per group (video): the additive sums every P_MTL term is a function of. ``(G, K)``, layout, groups."""
    a = metric_arrays(df)
    groups, g = np.unique(df[by].to_numpy(), return_inverse=True)
    n_groups = len(groups)
    th = np.asarray(au_threshold, dtype=np.float64)
    th = np.full(N_AU, float(th)) if th.ndim == 0 else th.reshape(N_AU)
    parts: list[np.ndarray] = []
    layout: dict[str, slice] = {}

    def add(name: str, per_row: np.ndarray) -> None:
        per_row = per_row.reshape(len(df), -1).astype(np.float64)
        sums = np.zeros((n_groups, per_row.shape[1]))
        np.add.at(sums, g, per_row)
        start = sum(p.shape[1] for p in parts)
        layout[name] = slice(start, start + per_row.shape[1])
        parts.append(sums)

    w = a["has_va"].astype(np.float64)
    x, y = a["va"] * w[:, None], a["va_pred"] * w[:, None]  # truth and prediction, zero where unlabelled
    add("va_n", w)
    add("va", np.concatenate([x, y, x * x, y * y, x * y], axis=1))  # per dimension (valence, arousal)
    t, p = a["expr"], a["expr_pred"]
    he = a["has_expr"][:, None]
    truth_c, pred_c = (t[:, None] == np.arange(N_EXPR)) & he, (p[:, None] == np.arange(N_EXPR)) & he
    add("expr", np.concatenate([truth_c & pred_c, ~truth_c & pred_c, truth_c & ~pred_c], axis=1))
    ha = a["has_au"][:, None]
    truth_a, pred_a = (a["au"] == 1) & ha, (a["au_pred"] >= th) & ha
    add("au", np.concatenate([truth_a & pred_a, ~truth_a & pred_a, truth_a & ~pred_a], axis=1))
    add("au_n", a["has_au"])
    add("expr_n", a["has_expr"])
    return np.concatenate(parts, axis=1), layout, groups


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _metrics_from_sums(s: np.ndarray, layout: dict[str, slice]) -> dict[str, np.ndarray]:
    """P_MTL and its parts from summed statistics ``(B, K)``, as :func:`course_lib.metrics.p_mtl` computes them."""
    n = s[:, layout["va_n"]][:, 0]
    va = s[:, layout["va"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = va[:, 0:2] / n[:, None], va[:, 2:4] / n[:, None]
        vx = va[:, 4:6] / n[:, None] - mx ** 2
        vy = va[:, 6:8] / n[:, None] - my ** 2
        cov = va[:, 8:10] / n[:, None] - mx * my
        denom = vx + vy + (mx - my) ** 2
        ccc = np.where(np.abs(denom) < 1e-12, 1.0, 2 * cov / denom)
    ccc[n == 0] = np.nan
    e = s[:, layout["expr"]]
    expr = _f1(e[:, :N_EXPR], e[:, N_EXPR:2 * N_EXPR], e[:, 2 * N_EXPR:]).mean(axis=1)
    expr[s[:, layout["expr_n"]][:, 0] == 0] = np.nan
    u = s[:, layout["au"]]
    au = _f1(u[:, :N_AU], u[:, N_AU:2 * N_AU], u[:, 2 * N_AU:]).mean(axis=1)
    au[s[:, layout["au_n"]][:, 0] == 0] = np.nan
    va_term = ccc.mean(axis=1)
    total = np.nansum(np.stack([va_term, expr, au]), axis=0)
    return {"total": total, "va": va_term, "expr": expr, "au": au}


def resample_counts(n_groups: int, n: int, seed: int = 0) -> np.ndarray:
    """``(n, n_groups)``: how often each group (video) is drawn in each of ``n`` bootstrap resamples.

    A resample draws ``n_groups`` videos with replacement; a video drawn twice counts twice.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n, n_groups))
    counts = np.zeros((n, n_groups), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), n_groups), draws.ravel()), 1.0)
    return counts


def _resampled_means(sides: Sequence[Sequence[pd.DataFrame]], *, n: int, seed: int, level: float, by: str,
                     au_threshold, mismatch: str) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]], int]:
    """For each side (a list of tables, e.g. several training seeds on the same frames): the mean
    over its tables of every metric on ``n`` resamples, all drawing the same videos for every table
    of every side, and its point estimate. Returns ``(boot per side, point per side, n_groups)``;
    ``mismatch`` ends the error raised when the tables cover different ``by`` values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    stats, groups = [], None
    for dfs in sides:
        side = []
        for df in dfs:
            s, layout, g = _stats(df, by, au_threshold)
            if groups is not None and not np.array_equal(g, groups):
                raise ValueError(f"the tables cover different {by} values: {mismatch}")
            groups = g
            side.append(s)
        stats.append(side)
    counts = resample_counts(len(groups), n, seed)
    boots = []
    for side in stats:
        mean = {m: np.zeros(n) for m in METRICS}
        for s in side:
            for m, v in _metrics_from_sums(counts @ s, layout).items():
                mean[m] += v / len(side)
        boots.append(mean)
    points = [{m: float(np.mean([scores(df, au_threshold)[m] for df in dfs])) for m in METRICS} for dfs in sides]
    return boots, points, len(groups)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when none is)."""
    alpha = (1.0 - level) / 2.0
    v = values[np.isfinite(values)]
    low, high = np.quantile(v, [alpha, 1 - alpha]) if v.size else (np.nan, np.nan)
    return float(low), float(high)


def bootstrap_many(dfs: Sequence[pd.DataFrame], *, n: int, seed: int, level: float, by: str,
                    au_threshold: float | Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Intervals of the mean over ``dfs`` (e.g. several training seeds on the same frames), each
    resample drawing the same videos for every df: :func:`bootstrap`'s table for several tables."""
    (boot,), (point,), n_groups = _resampled_means([dfs], n=n, seed=seed, level=level, by=by,
                                                   au_threshold=au_threshold, mismatch="bootstrap them separately")
    rows = {m: dict(zip(("estimate", "low", "high"), (point[m], *_interval(boot[m], level)))) for m in METRICS}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    out.attrs.update(n=n, level=level, by=by, groups=n_groups)
    return out


def bootstrap_difference(before: Sequence[pd.DataFrame], after: Sequence[pd.DataFrame], n: int = 1000,
                         seed: int = 0, level: float = 0.95, *, by: str = "video",
                         au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """Paired interval of ``mean(after) - mean(before)`` for P_MTL and its parts.

    Each resample draws the same videos for both sides (and every seed's table on each side), so
    what the two have in common (which videos are hard) cancels: a component "helps" when the
    interval of its gain lies above 0, which two overlapping per-row intervals cannot tell.
    """
    boots, points, n_groups = _resampled_means([before, after], n=n, seed=seed, level=level, by=by,
                                               au_threshold=au_threshold, mismatch="they cannot be paired")
    rows = {}
    for m in METRICS:
        d = boots[1][m] - boots[0][m]
        finite = d[np.isfinite(d)]
        low, high = _interval(d, level)
        rows[m] = {"difference": points[1][m] - points[0][m], "low": low, "high": high,
                   "share_above_0": float((finite > 0).mean()) if finite.size else np.nan}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    out.attrs.update(n=n, level=level, by=by, groups=n_groups)
    return out


def bootstrap(df: pd.DataFrame, n: int = 1000, seed: int = 0, level: float = 0.95, *, by: str = "video",
              au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """Percentile bootstrap intervals of P_MTL and its three parts, resampling whole videos.

    Each of ``n`` resamples draws as many videos as ``df`` has, with replacement, and scores all
    their frames. Returns a DataFrame indexed by ``total, va, expr, au`` with ``estimate`` (the
    score of ``df`` itself), ``low`` and ``high`` (the ``level`` interval); ``attrs`` record ``n``,
    ``level``, ``by`` and the number of groups. ``by="image"`` resamples single frames, which is
    only right if frames were independent (they are not: notebook 08 shows how much too narrow
    that interval is). A resample without a labelled frame for a task is left out of that
    task's interval.
    """
    return bootstrap_many([df], n=n, seed=seed, level=level, by=by, au_threshold=au_threshold)


def per_video_scores(df: pd.DataFrame, au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """P_MTL and its parts computed on each video alone (NaN where a video has no label of a task).

    Per-video scores are noisy (a short video may show two expressions) but show which people,
    poses or conditions the model fails on.
    """
    s, layout, groups = _stats(df, "video", au_threshold)
    m = _metrics_from_sums(s, layout)
    frames = df.groupby("video").size().reindex(groups).to_numpy()
    return pd.DataFrame({"video": groups, "frames": frames, **{METRIC_LABELS[k]: v for k, v in m.items()}})


# --------------------------------------------------------------------------- interval tables


def interval_columns(ci: pd.DataFrame) -> dict[str, float]:
    """A bootstrap's estimate and bounds as table columns: ``P_MTL``, ``P_MTL low``, ``P_MTL high``, ... per metric."""
    columns: dict[str, float] = {}
    for m in METRICS:
        label = METRIC_LABELS[m]
        columns[label], columns[f"{label} low"], columns[f"{label} high"] = ci.loc[m, ["estimate", "low", "high"]]
    return columns


def format_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The ablation table with each metric as ``estimate [low, high]`` text, for display."""
    out = table[["configuration"]].copy()
    for label in METRIC_LABELS.values():
        out[label] = [f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                      for e, lo, hi in zip(table[label], table[f"{label} low"], table[f"{label} high"])]
    if "seconds" in table:
        out["seconds"] = table["seconds"].round(1)
    return out


def interval_table(tables: dict[str, pd.DataFrame], n: int = 1000, seed: int = 0, level: float = 0.95, *,
                   au_threshold: float | Sequence[float] | np.ndarray = 0.5, digits: int = 3) -> pd.DataFrame:
    """P_MTL and its parts of each predictions table as ``estimate [low, high]`` text (:func:`bootstrap`
    over videos), one row per name: for showing a few models or splits side by side (``08_evaluation``)."""
    rows = [{"configuration": name,
             **interval_columns(bootstrap(df, n=n, seed=seed, level=level, au_threshold=au_threshold))}
            for name, df in tables.items()]
    return format_intervals(pd.DataFrame(rows), digits).set_index("configuration").rename_axis(None)


__all__ = ["bootstrap", "bootstrap_difference", "bootstrap_many", "format_intervals", "interval_columns",
           "interval_table", "per_video_scores", "resample_counts"]
