"""Checkers for ``08_evaluation``: F1 at a threshold, macro F1 over all classes, video-level bootstrap, and the
capstone (a test submission that beats the course's, scored once)."""

from __future__ import annotations

import numpy as np

from ..evaluate import SubmissionError, score_submission
from . import Mismatch, NotAttempted, call_answer, exercise


def _f1(truth: np.ndarray, decision: np.ndarray) -> float:
    tp = float(np.sum(truth & decision))
    denom = 2 * tp + float(np.sum(~truth & decision)) + float(np.sum(truth & ~decision))
    return 2 * tp / denom if denom else 0.0


@exercise("08.f1_at", "Binary F1 of one AU at a threshold")
def check_f1_at(fn) -> str:
    rng = np.random.default_rng()
    cases = []
    for _ in range(4):
        n = int(rng.integers(20, 60))
        truth = rng.random(n) < 0.3
        prob = np.round(rng.random(n), 1)  # many probabilities exactly on the threshold
        cases.append((truth, prob, 0.5))
    cases.append((np.zeros(10, bool), np.full(10, 0.2), 0.5))  # no positives, none predicted
    cases.append((np.array([True, False, True]), np.array([0.9, 0.9, 0.1]), 0.9))
    for truth, prob, th in cases:
        got = call_answer(fn, truth.astype(int).copy(), prob.copy(), th)
        want = _f1(truth, prob >= th)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Mismatch(f"return one number, the F1; got {got!r}") from None
        if np.isclose(got, want):
            continue
        if not truth.any() and not (prob >= th).any():
            raise Mismatch(f"with no positives in the truth and none predicted, return 0 (as the challenge's "
                           f"scripts and sklearn's zero_division=0 do); you returned {got}.")
        if np.isclose(got, _f1(truth, prob > th)):
            raise Mismatch("a probability exactly at the threshold counts as present: use >=, not >.")
        if np.isclose(got, float(np.mean(truth == (prob >= th)))):
            raise Mismatch("that is the accuracy; F1 = 2 TP / (2 TP + FP + FN) ignores the true negatives.")
        raise Mismatch(f"expected F1 {want:.4f} at threshold {th}, got {got:.4f}.")
    return "Right: F1 = 2 TP / (2 TP + FP + FN) on the decisions prob >= threshold, 0 when that is 0 / 0."


@exercise("08.macro_f1", "Macro F1 over all 8 expression classes")
def check_macro_f1(fn) -> str:
    rng = np.random.default_rng()
    for present in (8, 5, 3):
        classes = rng.choice(8, size=present, replace=False)
        truth = rng.choice(classes, size=60)
        pred = np.where(rng.random(60) < 0.6, truth, rng.choice(classes, size=60))
        got = call_answer(fn, truth.copy(), pred.copy())
        per_class = [_f1(truth == c, pred == c) for c in range(8)]
        want = float(np.mean(per_class))
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Mismatch(f"return one number, the macro F1; got {got!r}") from None
        if np.isclose(got, want):
            continue
        seen = sorted(set(truth) | set(pred))
        if np.isclose(got, float(np.mean([per_class[c] for c in seen]))):
            raise Mismatch("average over all 8 classes, also those absent from these frames (their F1 is 0): the "
                           "challenge fixes the classes, so a class the data lacks still costs its eighth.")
        if np.isclose(got, float(np.mean(truth == pred))):
            raise Mismatch("that is the accuracy; macro F1 is the mean of the 8 one-vs-rest F1 scores.")
        raise Mismatch(f"expected macro F1 {want:.4f}, got {got:.4f} ({present} classes present).")
    return "Right: the mean of 8 one-vs-rest F1 scores; an absent class scores 0 and still counts."


@exercise("08.video_bootstrap", "One bootstrap resample of whole videos")
def check_video_bootstrap(fn) -> str:
    rng = np.random.default_rng()
    sizes = rng.integers(3, 9, size=7)
    names = np.array([f"video{i}" for i in range(len(sizes))])
    videos = np.repeat(names, sizes)
    order = rng.permutation(len(videos))  # frames of a video need not be contiguous
    videos = videos[order]
    draws_seen = []
    for trial in range(40):
        got = call_answer(fn, videos.copy(), np.random.default_rng(trial))
        try:
            rows = np.asarray(got, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise Mismatch(f"return an array of row indices into `videos`; got {type(got).__name__}") from None
        if rows.size and (rows.min() < 0 or rows.max() >= len(videos)):
            raise Mismatch("return row positions 0 .. len(videos) - 1, not video names or frame numbers.")
        counts = np.bincount(rows, minlength=len(videos))
        draws = {}
        for name in names:
            own = counts[videos == name]
            if len(set(own.tolist())) != 1:
                raise Mismatch(f"the frames of {name} appear different numbers of times ({sorted(set(own))}): "
                               "draw whole videos and take all their frames, not single frames.")
            draws[name] = int(own[0])
        if sum(draws.values()) != len(names):
            raise Mismatch(f"a resample draws as many videos as there are ({len(names)}); yours drew "
                           f"{sum(draws.values())}.")
        draws_seen.append(tuple(draws.values()))
    if all(d == (1,) * len(names) for d in draws_seen):
        raise Mismatch("every video appears exactly once in every resample: draw the videos with replacement "
                       "(some twice, some not at all), otherwise there is no spread to measure.")
    return ("Right: whole videos drawn with replacement. Each resample keeps the correlation inside a video, so the "
            "interval reflects how many independent videos the score rests on.")


@exercise("08.capstone", "Beat the course's test score, every choice made on validation")
def check_capstone(answer) -> str:
    """``answer``: ``dict(submission=<your test predictions file>, root=<the data>, to_beat=<the course's test
    P_MTL>)``, or a function returning it; ``submission=None`` means not attempted yet."""
    if callable(answer):
        answer = call_answer(answer)
    if not isinstance(answer, dict) or not {"submission", "root", "to_beat"} <= set(answer):
        raise Mismatch("give dict(submission=..., root=..., to_beat=...): your file, the data folder and the "
                       "course's test P_MTL.")
    if answer["submission"] is None:
        raise NotAttempted
    try:
        got = score_submission(answer["submission"], answer["root"])
    except SubmissionError as error:
        raise Mismatch(f"the organisers would reject this file: {error}") from None
    except FileNotFoundError as error:
        raise Mismatch(str(error)) from None
    mine, theirs = float(got["total"]), float(answer["to_beat"])
    parts = f"VA {got['va']:.3f}, EXPR {got['expr']:.3f}, AU {got['au']:.3f}"
    if mine <= theirs:
        raise Mismatch(f"test P_MTL {mine:.3f} ({parts}) does not beat the course's {theirs:.3f}. Do not tune on "
                       "this number (each look makes the test set a little more a validation set): go back to "
                       "validation, change one thing, and submit again only when validation says it helps.")
    return (f"test P_MTL {mine:.3f} ({parts}) beats the course's {theirs:.3f} by {mine - theirs:+.3f}. Report it "
            "once, next to the validation score that chose it.")
