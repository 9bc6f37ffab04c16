"""course_lib.models.temporal: stitching windows, temporal encoders, feature windows, a short fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from course_lib.data import abaw
from course_lib.labels import AU_NAMES
from course_lib.losses import MultiTaskLoss
from course_lib.models import (WINDOWS, FeatureWindowDataset, TemporalEncoder, TemporalModel, per_task_predictions,
                               stitch_windows, tcn_receptive_field)
from course_lib.train import TrainConfig, fit, predict, score

KINDS = ("none", "tcn", "gru", "transformer")


def make_table(lengths, labels=None, seed=0):
    """A table of videos v0, v1, ... with ``lengths`` frames; random labels unless given (a DataFrame)."""
    rng = np.random.default_rng(seed)
    video = np.concatenate([[f"v{i}"] * n for i, n in enumerate(lengths)])
    frame = np.concatenate([np.arange(1, n + 1) for n in lengths])
    n = len(video)
    if labels is None:
        labels = pd.DataFrame({"valence": rng.uniform(-1, 1, n), "arousal": rng.uniform(-1, 1, n),
                               "expression": rng.integers(0, 8, n),
                               **{au: rng.integers(0, 2, n) for au in AU_NAMES}})
    image = [f"{v}/{f:05d}.jpg" for v, f in zip(video, frame)]
    return abaw.make_table(image, video, frame, labels)


# --------------------------------------------------------------------------- stitching


def test_stitch_averages_overlaps_and_skips_padding():
    rows = np.array([[0, 1, 2], [1, 2, 3], [3, 4, 4]])
    valid = np.array([[True, True, True], [True, True, True], [True, True, False]])
    values = np.array([[[1.0, 10], [2, 20], [3, 30]],
                       [[4, 40], [5, 50], [6, 60]],
                       [[7, 70], [8, 80], [1000, 1000]]])  # the padding value must not count
    per_row, covered = stitch_windows(rows, valid, values, n_rows=6)
    want = np.array([[1, 10], [(2 + 4) / 2, (20 + 40) / 2], [(3 + 5) / 2, (30 + 50) / 2],
                     [(6 + 7) / 2, (60 + 70) / 2], [8, 80], [np.nan, np.nan]])
    np.testing.assert_allclose(per_row, want)
    assert per_row.dtype == np.float64 and per_row.shape == (6, 2)
    assert covered.tolist() == [True, True, True, True, True, False]
    # without n_rows: R = rows.max() + 1; 2-D values give one value per row
    flat, covered = stitch_windows(rows, valid, values[..., 0])
    np.testing.assert_allclose(flat, want[:5, 0])
    assert covered.all()


def test_stitch_row_that_is_only_padding_is_nan_and_bad_input_raises():
    per_row, covered = stitch_windows(np.array([[0, 1, 1]]), np.array([[True, False, False]]), np.ones((1, 3, 1)))
    assert covered.tolist() == [True, False] and np.isnan(per_row[1]).all()
    with pytest.raises(ValueError, match="rows must lie"):
        stitch_windows(np.array([[0, 5]]), np.ones((1, 2), bool), np.ones((1, 2, 1)), n_rows=3)
    with pytest.raises(ValueError, match="expected rows"):
        stitch_windows(np.zeros((2, 3), int), np.ones((2, 4), bool), np.ones((2, 3, 1)))


def test_predict_stitches_windows_to_one_prediction_per_frame():
    table = make_table([13, 4, 9])
    features = torch.randn(len(table), 6)
    torch.manual_seed(0)
    model = TemporalModel(6, "none", dim=16).eval()
    windows = FeatureWindowDataset(features, table, window=5, stride=2, pad=True)
    got = predict(model, DataLoader(windows, batch_size=4), input_key="features")
    np.testing.assert_array_equal(got["index"], np.arange(len(table)))  # every frame exactly once, in row order
    with torch.no_grad():
        per_frame = model(features)
    np.testing.assert_allclose(got["au_pred"], torch.sigmoid(per_frame["au"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(got["expr_pred"], per_frame["expr"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["va_pred"], per_frame["va"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["expr"], table["expression"].to_numpy())
    np.testing.assert_array_equal(got["au"], table[list(AU_NAMES)].to_numpy())
    np.testing.assert_allclose(got["va"], table[["valence", "arousal"]].to_numpy())
    assert got["has_au"].dtype == bool and got["has_au"].all()
    # a temporal model with padding information covers every frame too
    got = predict(TemporalModel(6, "transformer", dim=16).eval(), DataLoader(windows, batch_size=4),
                  input_key=("features", "valid"))
    assert got["index"].tolist() == list(range(len(table))) and np.isfinite(got["va_pred"]).all()


def test_per_task_predictions_takes_each_task_from_its_model():
    def fake(index, value):
        n = len(index)
        return {"au_pred": np.full((n, 12), value), "expr_pred": np.full((n, 8), value), "va_pred": np.full((n, 2), value),
                "va": np.tile(np.asarray(index, float)[:, None], 2), "expr": np.asarray(index), "au": np.zeros((n, 12)),
                "has_va": np.ones(n, bool), "has_expr": np.ones(n, bool), "has_au": np.ones(n, bool),
                "index": np.asarray(index)}

    combined = per_task_predictions({"au": fake([3, 1, 2, 0], 1.0), "expr": fake([0, 1, 2, 3, 4], 2.0),
                                     "va": fake([2, 0, 1], 3.0)})
    assert combined["index"].tolist() == [0, 1, 2]
    assert (combined["au_pred"] == 1).all() and (combined["expr_pred"] == 2).all() and (combined["va_pred"] == 3).all()
    assert combined["expr"].tolist() == [0, 1, 2] and combined["va"][:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="missing"):
        per_task_predictions({"au": fake([0], 1.0)})
    assert WINDOWS == {"au": 1, "expr": 5, "va": 30}


# --------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_and_model_shapes(kind):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 10)
    assert TemporalEncoder(kind, 10, dim=16, layers=2).eval()(x).shape == (3, 7, 16)
    out = TemporalModel(10, kind, dim=16).eval()(x, return_features=True)
    assert out["au"].shape == (3, 7, 12) and out["expr"].shape == (3, 7, 8) and out["va"].shape == (3, 7, 2)
    assert out["features"].shape == (3, 7, 16) and out["va"].abs().max() <= 1
    single = TemporalModel(10, kind, dim=16).eval()(x[:, 0])
    assert single["au"].shape == (3, 12) and single["va"].shape == (3, 2)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="'tcn', 'gru', 'transformer'"):
        TemporalEncoder("lstm", 4)


def _changed_frames(encoder, x, t, valid=None):
    """Frames whose output changes when input frame ``t`` of window 0 changes."""
    y = x.clone()
    y[0, t] += 3.0
    with torch.no_grad():
        diff = (encoder(y, valid) - encoder(x, valid))[0].abs().amax(-1)
    return set(torch.nonzero(diff > 1e-6).flatten().tolist())


def test_none_mixes_no_time_and_the_others_do():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 5)
    assert _changed_frames(TemporalEncoder("none", 5, dim=8, layers=3).eval(), x, 6) == {6}
    for kind in ("gru", "transformer"):
        assert _changed_frames(TemporalEncoder(kind, 5, dim=8).eval(), x, 6) == set(range(12)), kind


@pytest.mark.parametrize("kernel_size, layers", [(3, 2), (5, 2), (3, 3)])
def test_tcn_receptive_field(kernel_size, layers):
    torch.manual_seed(0)
    encoder = TemporalEncoder("tcn", 4, dim=8, layers=layers, kernel_size=kernel_size).eval()
    field = tcn_receptive_field(kernel_size, layers)
    assert encoder.receptive_field == field == 1 + (kernel_size - 1) * (2 ** layers - 1)
    half = (field - 1) // 2
    x = torch.randn(1, 40, 4)
    t = 20
    assert _changed_frames(encoder, x, t) == set(range(t - half, t + half + 1))  # centred: half on each side
    with pytest.raises(ValueError, match="odd"):
        TemporalEncoder("tcn", 4, kernel_size=4)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_frames_do_not_change_valid_outputs(kind):
    torch.manual_seed(0)
    encoder = TemporalEncoder(kind, 6, dim=8, layers=2).eval()
    x = torch.randn(3, 9, 6)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[0, 5:] = False
    valid[2, 2:] = False
    y = x.clone()
    y[~valid] = torch.randn(int((~valid).sum()), 6) * 10
    with torch.no_grad():
        a, b = encoder(x, valid), encoder(y, valid)
        alone = encoder(x[:1, :5])  # the valid frames of window 0 on their own
    torch.testing.assert_close(a[valid], b[valid])
    torch.testing.assert_close(a[0, :5], alone[0], atol=1e-5, rtol=1e-5)
    if kind == "transformer":  # without the key padding mask, padding would leak into valid frames
        with torch.no_grad():
            assert not torch.allclose(encoder(x)[0, :5], encoder(y)[0, :5])


def test_gru_needs_padding_at_the_end():
    valid = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="padding at the end"):
        TemporalEncoder("gru", 4, dim=8)(torch.randn(1, 3, 4), valid)


# --------------------------------------------------------------------------- data


def test_feature_window_dataset_items_and_length_check():
    table = make_table([10, 3])
    features = np.arange(len(table) * 4, dtype=np.float64).reshape(-1, 4)
    ds = FeatureWindowDataset(features, table, window=4, stride=3, pad=True)
    assert ds.dim == 4 and len(ds) == 4 + 1  # video 0: starts 0, 3, 6 and padded 9; video 1: padded 0
    item = ds[3]
    assert item["features"].dtype == torch.float32 and item["features"].shape == (4, 4)
    assert item["indices"].tolist() == [9, 9, 9, 9] and item["valid"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(item["features"].numpy(), features[[9, 9, 9, 9]])
    assert item["au"].shape == (4, 12) and item["va"].shape == (4, 2) and item["expr"].shape == (4,)
    assert item["has_va"].tolist() == [True, False, False, False] and item["index"] == 3
    assert FeatureWindowDataset(torch.from_numpy(features), table, window=4).rows.tolist() == \
        FeatureWindowDataset(features, table, window=4).rows.tolist()
    with pytest.raises(ValueError, match="10 rows but the table has 13"):
        FeatureWindowDataset(features[:10], table, window=4)


# --------------------------------------------------------------------------- learning


def smoothed_task(lengths, dim=8, half=2, seed=0):
    """Features that are noise per frame, labels that depend on their mean over +-half neighbouring frames."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(sum(lengths), dim)).astype(np.float32)
    s = np.zeros_like(x)
    start = 0
    for n in lengths:
        for t in range(n):
            s[start + t] = x[start + max(0, t - half): start + min(n, t + half + 1)].mean(0)
        start += n
    s = s / s.std(0)
    labels = pd.DataFrame({"valence": np.tanh(s[:, 0]), "arousal": np.tanh(s[:, 1]),
                           "expression": s.argmax(1), **{au: (s[:, k % dim] > 0).astype(int)
                                                         for k, au in enumerate(AU_NAMES)}})
    return x, make_table(lengths, labels)


def test_a_temporal_model_learns_what_needs_time_and_the_per_frame_one_cannot(one_thread):
    x_train, train = smoothed_task([64] * 8, seed=0)
    x_val, val = smoothed_task([64] * 3, seed=1)
    train_set = FeatureWindowDataset(x_train, train, window=16, stride=4, pad=True)
    val_loader = DataLoader(FeatureWindowDataset(x_val, val, window=16, stride=8, pad=True), batch_size=64)
    scores = {}
    for kind in ("none", "tcn"):
        torch.manual_seed(0)
        model = TemporalModel(8, kind, dim=32, dropout=0.0)
        loader = DataLoader(train_set, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
        result = fit(model, loader, val_loader, config=TrainConfig(epochs=25, lr=3e-3), loss_fn=MultiTaskLoss(),
                     input_key=("features", "valid"), device="cpu", progress_bar=False)
        assert len(result.history) == 25 and np.isfinite(result.history.loss).all()
        scores[kind] = score(predict(model, val_loader, input_key=("features", "valid")))
    assert scores["tcn"]["va"] > scores["none"]["va"] + 0.3, scores
    assert scores["tcn"]["total"] > scores["none"]["total"] + 0.5, {k: s["total"] for k, s in scores.items()}


def test_causal_tcn_block_never_sees_the_future_and_centred_does():
    import torch.nn.functional as F

    from course_lib.models.temporal import TCNBlock

    torch.manual_seed(0)
    x = torch.randn(2, 12, 8)
    for causal in (True, False):
        block = TCNBlock(8, kernel_size=3, dilation=2, dropout=0.0, causal=causal).eval()
        later = x.clone()
        later[:, 7:] = torch.randn(2, 5, 8)  # change frames 7.. only
        with torch.no_grad():
            a, b = block(x), block(later)
        same_past = torch.allclose(a[:, :7], b[:, :7])
        assert same_past == causal  # causal: frames 0..6 unchanged; centred: frames 5, 6 look ahead
        assert a.shape == x.shape
    block = TCNBlock(8, kernel_size=3, dilation=2, dropout=0.0, causal=True)
    h = torch.randn(2, 8, 12)
    want = F.conv1d(F.pad(h, (4, 0)), block.conv.weight, block.conv.bias, dilation=2)
    torch.testing.assert_close(block.convolve(h), want)


def test_causal_tcn_encoder_looks_back_only_and_other_kinds_refuse():
    from course_lib.models.temporal import TemporalEncoder, TemporalModel

    torch.manual_seed(0)
    enc = TemporalEncoder("tcn", 8, 8, layers=3, dropout=0.0, causal=True).eval()
    x = torch.randn(1, 16, 8)
    later = x.clone()
    later[:, 10:] = torch.randn(1, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[:, :10], enc(later)[:, :10])
        assert not torch.allclose(enc(x)[:, 10:], enc(later)[:, 10:])
    assert TemporalModel(8, kind="tcn", dim=8, causal=True)(x)["au"].shape == (1, 16, 12)
    with pytest.raises(ValueError, match="causal"):
        TemporalEncoder("gru", 8, 8, causal=True)
