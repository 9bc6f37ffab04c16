"""course_lib.evaluate, .confidence and .ablation: predictions tables, scores, video-level bootstrap, submissions,
the ablation runner."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest

from course_lib import ablation, confidence
from course_lib import evaluate as ev
from course_lib.labels import AU_NAMES
from course_lib.metrics import do_nothing_scores, p_mtl


def fake_table(n_videos=6, frames=50, seed=0, missing=True):
    """An annotation table with random labels (some missing) in the layout of read_mtl_annotations."""
    rng = np.random.default_rng(seed)
    n = n_videos * frames
    video = np.repeat([f"v{i}" for i in range(n_videos)], frames)
    frame = np.tile(np.arange(1, frames + 1), n_videos)
    t = pd.DataFrame({"image": [f"{v}/{f:05d}.jpg" for v, f in zip(video, frame)], "video": video, "frame": frame,
                      "valence": rng.uniform(-1, 1, n), "arousal": rng.uniform(-1, 1, n),
                      "expression": rng.integers(0, 8, n)})
    for a in AU_NAMES:
        t[a] = rng.integers(0, 2, n)
    rate = 0.2 if missing else 0.0
    t["has_va"], t["has_expr"], t["has_au"] = (rng.random(n) >= rate for _ in range(3))
    t.loc[~t.has_va, ["valence", "arousal"]] = -5.0
    t.loc[~t.has_expr, "expression"] = -1
    t.loc[~t.has_au, list(AU_NAMES)] = -1
    return t


def fake_predictions(table, seed=0, shuffle=True):
    """predict()-style output for ``table``, informative but noisy, rows in a shuffled order."""
    rng = np.random.default_rng(seed)
    n = len(table)
    index = rng.permutation(n) if shuffle else np.arange(n)
    rows = table.iloc[index]
    va_true = np.where(rows[["has_va"]].to_numpy(), rows[["valence", "arousal"]].to_numpy(), 0.0)
    au_true = np.where(rows[["has_au"]].to_numpy(), rows[list(AU_NAMES)].to_numpy(), 0)
    expr = rng.normal(size=(n, 8))
    expr[np.arange(n), np.clip(rows["expression"].to_numpy(), 0, 7)] += 1.0
    return {"index": index, "va_pred": np.clip(0.6 * va_true + rng.normal(0, 0.4, (n, 2)), -1, 1),
            "expr_pred": expr, "au_pred": np.clip(0.3 * au_true + 0.7 * rng.random((n, 12)), 0, 1),
            "va": rows[["valence", "arousal"]].to_numpy(np.float32), "expr": rows["expression"].to_numpy(),
            "au": rows[list(AU_NAMES)].to_numpy(), "has_va": rows.has_va.to_numpy(),
            "has_expr": rows.has_expr.to_numpy(), "has_au": rows.has_au.to_numpy()}


def width(ci, metric="total"):
    return ci.loc[metric, "high"] - ci.loc[metric, "low"]


# --------------------------------------------------------------------------- predictions table and scores


def test_predictions_table_aligns_a_shuffled_index():
    table = fake_table()
    pred = fake_predictions(table)
    df = ev.predictions_table(pred, table)
    assert list(df.index) == list(range(len(table))) and df["image"].tolist() == table["image"].tolist()
    for k in (0, 17, len(table) - 1):  # the k-th prediction lands on its table row
        row = df.loc[pred["index"][k]]
        assert row["pred_valence"] == pred["va_pred"][k, 0] and row["prob_AU12"] == pred["au_pred"][k, 6]
        assert row["pred_expression"] == np.argmax(pred["expr_pred"][k])
    np.testing.assert_allclose(df[list(ev.EXPR_PROB_COLUMNS)].sum(axis=1), 1.0)
    assert {"has_va", "has_expr", "has_au", *AU_NAMES, "valence", "expression"} <= set(df.columns)


def test_predictions_table_catches_predictions_of_another_order():
    table = fake_table()
    pred = fake_predictions(table)
    pred["index"] = np.sort(pred["index"])  # labels no longer match the rows they claim
    with pytest.raises(ValueError, match="labels of the predictions differ from the table at table row"):
        ev.predictions_table(pred, table)
    pred = fake_predictions(table)
    pred["index"] = pred["index"] + 1
    with pytest.raises(ValueError, match="another table"):
        ev.predictions_table(pred, table)


def test_scores_equal_p_mtl_with_one_or_twelve_thresholds():
    table = fake_table()
    pred = fake_predictions(table)
    df = ev.predictions_table(pred, table)
    order = np.argsort(pred["index"])
    for th in (0.5, np.linspace(0.2, 0.8, 12)):
        want = p_mtl(table[["valence", "arousal"]].to_numpy(), pred["va_pred"][order], table["expression"].to_numpy(),
                     pred["expr_pred"][order], table[list(AU_NAMES)].to_numpy(), pred["au_pred"][order],
                     au_threshold=th)
        got = ev.scores(df, au_threshold=th)
        for key in ("total", "va", "expr", "au", "n_va", "n_expr", "n_au"):
            assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_thresholds_tuned_on_one_split_and_applied_to_another():
    tune, held = (ev.predictions_table(fake_predictions(fake_table(seed=s), seed=s), fake_table(seed=s))
                  for s in (1, 2))
    report = ev.threshold_report(tune, held)
    assert report["thresholds"].str.contains("optimistic").tolist() == [False, False, True]
    assert report["AU F1"].iloc[0] == pytest.approx(ev.scores(held)["au"])
    assert report["AU F1"].iloc[1] == pytest.approx(ev.scores(held, au_threshold=ev.tuned_thresholds(tune))["au"])
    assert report["AU F1"].iloc[2] >= report["AU F1"].iloc[1] - 1e-12  # tuned on itself is never worse


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_contains_the_estimate_and_is_fast():
    table = fake_table(n_videos=6, frames=50)
    df = ev.predictions_table(fake_predictions(table), table)
    tick = time.perf_counter()
    ci = confidence.bootstrap(df, n=1000, seed=0)
    assert time.perf_counter() - tick < 3.0
    point = ev.scores(df)
    for m in ev.METRICS:
        assert ci.loc[m, "estimate"] == pytest.approx(point[m])
        assert ci.loc[m, "low"] <= ci.loc[m, "estimate"] <= ci.loc[m, "high"]
    assert ci.attrs["groups"] == 6 and ci.attrs["by"] == "video"
    again = confidence.bootstrap(df, n=1000, seed=0)
    pd.testing.assert_frame_equal(ci, again)  # seeded: reproducible


def test_bootstrap_sums_reproduce_p_mtl_on_every_resample():
    table = fake_table(n_videos=5, frames=20, seed=3)
    df = ev.predictions_table(fake_predictions(table, seed=3), table)
    stats, layout, groups = confidence._stats(df, "video", 0.5)
    counts = confidence.resample_counts(len(groups), 5, seed=1)
    fast = confidence._metrics_from_sums(counts @ stats, layout)
    for b in range(5):  # the same resample, scored the slow way on concatenated copies of videos
        parts = [df[df.video == g] for g, c in zip(groups, counts[b]) for _ in range(int(c))]
        slow = ev.scores(pd.concat(parts))
        for m in ev.METRICS:
            assert fast[m][b] == pytest.approx(slow[m], abs=1e-9)


def test_bootstrap_is_narrower_with_more_videos():
    small = fake_table(n_videos=4, frames=40, seed=5)
    large = fake_table(n_videos=40, frames=40, seed=5)
    w_small = width(confidence.bootstrap(ev.predictions_table(fake_predictions(small, seed=5), small), n=400))
    w_large = width(confidence.bootstrap(ev.predictions_table(fake_predictions(large, seed=5), large), n=400))
    assert w_large < 0.6 * w_small


def copies_of_one_video(n_copies=6, frames=40):
    one = fake_table(n_videos=1, frames=frames, seed=7, missing=False)
    pred = fake_predictions(one, seed=7, shuffle=False)
    df = ev.predictions_table(pred, one)
    copies = []
    for i in range(n_copies):
        c = df.copy()
        c["video"] = f"copy{i}"
        c["image"] = [f"copy{i}/{f:05d}.jpg" for f in c.frame]
        copies.append(c)
    return pd.concat(copies, ignore_index=True)


def test_bootstrap_of_identical_videos_is_a_point_but_frame_resampling_is_not():
    df = copies_of_one_video()
    by_video = confidence.bootstrap(df, n=300)
    for m in ev.METRICS:  # every resample draws 6 copies of the same video: the same score
        assert width(by_video, m) == pytest.approx(0.0, abs=1e-9)
        assert by_video.loc[m, "estimate"] == pytest.approx(by_video.loc[m, "low"], abs=1e-9)
    by_frame = confidence.bootstrap(df, n=300, by="image")  # frames are resampled: a spread appears
    assert width(by_frame) > 0.05


def test_per_video_scores_match_scoring_each_video_alone():
    table = fake_table(n_videos=3, frames=30)
    df = ev.predictions_table(fake_predictions(table), table)
    per = confidence.per_video_scores(df).set_index("video")
    for v in ("v0", "v2"):
        assert per.loc[v, "P_MTL"] == pytest.approx(ev.scores(df[df.video == v])["total"])
    assert per["frames"].sum() == len(df)


# --------------------------------------------------------------------------- submission


def test_submission_round_trip(tmp_path):
    table = fake_table(n_videos=2, frames=10)
    df = ev.predictions_table(fake_predictions(table), table)
    th = np.linspace(0.3, 0.7, 12)
    path = ev.write_submission(df, tmp_path / "sub" / "predictions.txt", au_threshold=th)
    lines = path.read_text().splitlines()
    assert lines[0] == "image,valence,arousal,expression,aus" and len(lines) == len(df) + 1
    assert all(len(line.split(",")) == 16 for line in lines[1:])
    back = ev.read_submission(path, images=table["image"])
    assert back["image"].tolist() == df["image"].tolist()
    np.testing.assert_allclose(back[["valence", "arousal"]], df[["pred_valence", "pred_arousal"]], atol=1e-5)
    assert (back["expression"].to_numpy() == df["pred_expression"].to_numpy()).all()
    assert (back[list(AU_NAMES)].to_numpy() == (df[list(ev.AU_PROB_COLUMNS)].to_numpy() >= th)).all()
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))  # written atomically, nothing left over


@pytest.mark.parametrize("edit, line, message", [
    (lambda ls: ["image,valence,arousal,expression,AU1"] + ls[1:], 1, "header"),
    (lambda ls: ls[:3] + [ls[3].rsplit(",", 1)[0]] + ls[4:], 4, "expected 16 fields"),
    (lambda ls: ls[:2] + [ls[2].replace(ls[2].split(",")[1], "1.5", 1)] + ls[3:], 3, "valence '1.5' is outside"),
    (lambda ls: ls[:2] + [",".join(ls[2].split(",")[:3] + ["8"] + ls[2].split(",")[4:])] + ls[3:], 3,
     "expression '8'"),
    (lambda ls: ls[:5] + [ls[5][:-1] + "2"] + ls[6:], 6, "AU26 is '2'"),
    (lambda ls: ls + [ls[1]], 12, "already on line 2"),
    (lambda ls: ls[:2] + ["v0/1.png" + ls[2][ls[2].index(","):]] + ls[3:], 3, "not <video>/<digits>.jpg"),
])
def test_submission_errors_name_file_and_line(tmp_path, edit, line, message):
    table = fake_table(n_videos=1, frames=10)
    path = ev.write_submission(ev.predictions_table(fake_predictions(table), table), tmp_path / "p.txt")
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(ev.SubmissionError, match=message) as info:
        ev.read_submission(path)
    assert info.value.line == line and str(path) in str(info.value) and f"line {line}" in str(info.value)


def test_submission_must_cover_the_test_list(tmp_path):
    table = fake_table(n_videos=1, frames=5)
    path = ev.write_submission(ev.predictions_table(fake_predictions(table), table), tmp_path / "p.txt")
    with pytest.raises(ev.SubmissionError, match="1 listed images have no prediction"):
        ev.read_submission(path, images=[*table["image"], "v9/00001.jpg"])
    with pytest.raises(ev.SubmissionError, match="not in the test list") as info:
        ev.read_submission(path, images=table["image"][1:])
    assert info.value.line == 2


# --------------------------------------------------------------------------- the ablation runner

TINY = dict(dim=16, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, temporal_dim=16, batch_size=32,
            windows={"au": 1, "expr": 3, "va": 6})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from course_lib.course_backbone import course_features
    from course_lib.data import synth
    from course_lib.data.abaw import TEST_LIST, read_mtl_annotations, write_test_list

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("evaluate")
    os.environ["COURSE_CACHE"] = str(base / "cache")
    try:
        root = synth.generate_dataset(base / "data", n_videos=8, frames_per_video=24, seed=3, audio=True,
                                      progress_bar=False)
        # the test list names the validation frames: every model must then predict them as it did on validation
        val_images = read_mtl_annotations(root / "validation_set_annotations.txt")["image"].tolist()
        write_test_list(val_images, root / TEST_LIST)
        _, feats = course_features(root, "smoke", device="cpu", progress_bar=False, test=True)
        result = ablation.run_ablation(root, "smoke", feats=feats, budget=TINY, device="cpu", n_boot=200, test=True)
    finally:
        del os.environ["COURSE_CACHE"]
    return root, feats, result


def test_paired_difference_sees_a_gain_that_per_row_intervals_cannot():
    table = fake_table(n_videos=12, frames=40, seed=11, missing=False)
    rng = np.random.default_rng(11)
    hard = np.repeat(rng.uniform(0.2, 0.9, 12), 40)  # some videos are much harder: both models suffer alike
    base = fake_predictions(table, seed=11, shuffle=False)
    truth = np.where(table[["has_va"]].to_numpy(), table[["valence", "arousal"]].to_numpy(), 0.0)
    noise = rng.normal(0, 1, (len(table), 2))
    before, after = dict(base), dict(base)
    before["va_pred"] = np.clip(hard[:, None] * truth + 0.50 * noise, -1, 1)
    after["va_pred"] = np.clip(hard[:, None] * truth + 0.40 * noise, -1, 1)  # the same noise, a bit less of it
    a, b = ev.predictions_table(before, table), ev.predictions_table(after, table)
    rows = confidence.bootstrap(a, n=500), confidence.bootstrap(b, n=500)
    assert rows[1].loc["va", "low"] < rows[0].loc["va", "high"]  # the two rows' intervals overlap
    d = confidence.bootstrap_difference([a], [b], n=500)
    assert d.loc["va", "difference"] == pytest.approx(ev.scores(b)["va"] - ev.scores(a)["va"])
    assert 0 < d.loc["va", "low"] <= d.loc["va", "difference"] <= d.loc["va", "high"]  # paired: clearly a gain
    assert d.loc["va", "share_above_0"] == 1.0
    same = confidence.bootstrap_difference([a], [a], n=200)
    assert (same[["difference", "low", "high"]].abs().to_numpy() < 1e-12).all()
    other = fake_table(n_videos=5, frames=40, seed=12)
    with pytest.raises(ValueError, match="cannot be paired"):
        confidence.bootstrap_difference([a], [ev.predictions_table(fake_predictions(other, seed=12), other)])


def test_ablation_table_has_every_configuration_with_intervals(tiny):
    from course_lib import baselines
    from course_lib.data import synth
    from course_lib.data.abaw import read_mtl_annotations

    root, _, result = tiny
    table = result.table
    assert table["configuration"].tolist() == [*ablation.ABLATION_STEPS, ablation.SEED003_ROW, "floor: do nothing",
                                               "reference: HOG + linear", "reference: reading each frame",
                                               "reference: oracle"]
    for label in ev.METRIC_LABELS.values():
        assert (table[f"{label} low"] <= table[label] + 1e-9).all()
        assert (table[label] <= table[f"{label} high"] + 1e-9).all()
    assert table["P_MTL"].between(-1, 3).all()
    train = read_mtl_annotations(root / "training_set_annotations.txt")
    val = read_mtl_annotations(root / "validation_set_annotations.txt")
    rows = table.set_index("configuration")
    assert rows.loc["floor: do nothing", "P_MTL"] == pytest.approx(do_nothing_scores(train, val)["total"])
    assert rows.loc["reference: oracle", "P_MTL"] == pytest.approx(synth.oracle_scores(root)["total"])
    assert rows.loc["reference: HOG + linear", "P_MTL"] == pytest.approx(baselines.hog_baseline(root, train, val)["total"])
    assert rows.loc["reference: reading each frame", "P_MTL"] == pytest.approx(
        baselines.reading_ceiling(root, train, val)["total"])
    for name, dfs in result.predictions.items():  # every validation frame predicted, once per seed
        assert len(dfs) == 1 and len(dfs[0]) == len(val), name
        assert len(result.extra["train_predictions"][name][0]) == len(train), name
    assert result.per_seed["seconds"].gt(0).all()
    text = confidence.format_intervals(table)
    assert text["P_MTL"].str.match(r"^-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]$").all()
    gains = ablation.step_gains(result, n_boot=200)
    assert gains["step"].tolist() == list(ablation.ABLATION_STEPS)[1:]
    for _, row in gains.iterrows():  # each step's gain is the difference of the two rows' P_MTL
        assert row["P_MTL gain"] == pytest.approx(rows.loc[row["step"], "P_MTL"] - rows.loc[row["over"], "P_MTL"])
        assert row["P_MTL low"] - 1e-9 <= row["P_MTL gain"] <= row["P_MTL high"] + 1e-9
    assert set(gains["verdict"]) <= {"helps", "hurts", "no clear effect"}


def test_ablation_seed003_row_is_the_multimodal_recipe_and_needs_audio(tiny):
    from course_lib.data.abaw import read_mtl_annotations
    from course_lib.multimodal import audiovisual_windows, train_audiovisual
    from course_lib.progressive import progressive_config

    root, feats, result = tiny
    train = read_mtl_annotations(root / "training_set_annotations.txt")
    val = read_mtl_annotations(root / "validation_set_annotations.txt")
    config = progressive_config("smoke", **TINY)
    run = train_audiovisual(audiovisual_windows(root, feats, train, val), train, seed=0,
                            epochs=config.stage1_epochs + config.stage2_epochs + config.stage3_epochs,
                            lr=config.stage1_lr, dim=config.dim, device="cpu")
    ours = result.predictions[ablation.SEED003_ROW][0]
    theirs = ev.predictions_table(run["predictions"], val)
    np.testing.assert_allclose(ours[list(ev.PRED_COLUMNS)].to_numpy(float),
                               theirs[list(ev.PRED_COLUMNS)].to_numpy(float), atol=1e-6)
    assert ablation.SEED003_ROW not in ablation.step_gains(result, n_boot=50)["step"].tolist()  # beside the chain


def test_ablation_temporal_row_is_run_progressive_stage3(tiny):
    from course_lib.data.abaw import read_mtl_annotations
    from course_lib.progressive import progressive_config, run_progressive

    root, feats, result = tiny
    config = progressive_config("smoke", **TINY, gcn=True, seed=0)
    reference = run_progressive(root, "smoke", config=config, feats=feats, device="cpu", progress_bar=False)
    ours = result.predictions["+ temporal"][0]
    theirs = ev.predictions_table(reference.predictions["stage3"],
                                  read_mtl_annotations(root / "validation_set_annotations.txt"))
    np.testing.assert_allclose(ours[list(ev.PRED_COLUMNS)].to_numpy(float),
                               theirs[list(ev.PRED_COLUMNS)].to_numpy(float), atol=1e-6)


def test_ablation_predicts_the_test_list_with_every_trained_model(tiny):
    root, feats, result = tiny
    tests = result.extra["test_predictions"]
    assert set(tests) == set(result.predictions)  # every configuration, the 003 row included
    for name, dfs in result.predictions.items():  # the test list is the validation frames here
        mine = tests[name][0]
        assert not mine[["has_va", "has_expr", "has_au"]].to_numpy().any(), name  # no labels reach the models
        np.testing.assert_allclose(mine[list(ev.PRED_COLUMNS)].to_numpy(float),
                                   dfs[0][list(ev.PRED_COLUMNS)].to_numpy(float), atol=1e-5, err_msg=name)
    without = {k: v for k, v in feats.items() if k != "test"}
    with pytest.raises(ValueError, match="test split's features"):
        ablation.run_ablation(root, "smoke", feats=without, budget=TINY, device="cpu", test=True)


def test_label_test_scores_the_test_list_against_the_kept_labels(tmp_path):
    from course_lib.data import synth
    from course_lib.data.abaw import TEST_LABELS, TEST_LIST, read_mtl_annotations, read_test_list

    root = synth.generate_dataset(tmp_path / "data", n_videos=10, frames_per_video=40, seed=5, test_videos=3,
                                  progress_bar=False)
    listed, truth = read_test_list(root / TEST_LIST), read_mtl_annotations(root / TEST_LABELS)
    assert listed.image.tolist() == truth.image.tolist() and not listed.has_va.any()
    people = set(listed.video)
    assert people.isdisjoint(read_mtl_annotations(root / "training_set_annotations.txt").video)
    assert people.isdisjoint(read_mtl_annotations(root / "validation_set_annotations.txt").video)
    clean = synth.clean_labels(root, listed)  # the truth as predictions: the oracle's test score
    n = len(listed)
    perfect = {"index": np.arange(n)[::-1].copy(), "va_pred": clean["va"][::-1],
               "expr_pred": np.eye(8)[clean["expr"]][::-1] * 10, "au_pred": clean["au"][::-1].astype(float)}
    labelled = ev.label_test(ev.predictions_table(perfect, listed), root)
    assert labelled.has_va.all() and labelled.image.tolist() == listed.image.tolist()
    assert ev.scores(labelled)["total"] == pytest.approx(synth.oracle_scores(root, "test")["total"])
    with pytest.raises(ValueError, match="distinct frames"):
        ev.label_test(ev.predictions_table(perfect, listed).iloc[1:], root)
    (root / TEST_LABELS).unlink()
    with pytest.raises(FileNotFoundError, match="organisers score"):
        ev.label_test(ev.predictions_table(perfect, listed), root)


def test_interval_table_shows_each_tables_bootstrap_as_text():
    a_table, b_table = fake_table(n_videos=6, seed=3), fake_table(n_videos=5, seed=4)
    a = ev.predictions_table(fake_predictions(a_table, seed=3), a_table)
    b = ev.predictions_table(fake_predictions(b_table, seed=4), b_table)
    shown = confidence.interval_table({"validation": a, "test": b}, n=200, seed=1, au_threshold=0.4)
    assert shown.index.tolist() == ["validation", "test"] and shown.columns.tolist() == list(ev.METRIC_LABELS.values())
    ci = confidence.bootstrap(b, n=200, seed=1, au_threshold=0.4)
    assert shown.loc["test", "P_MTL"] == (f"{ci.loc['total', 'estimate']:.3f} [{ci.loc['total', 'low']:.3f}, "
                                          f"{ci.loc['total', 'high']:.3f}]")
    assert ci.loc["total", "estimate"] == pytest.approx(ev.scores(b, au_threshold=0.4)["total"])
