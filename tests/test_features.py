"""course_lib.features: resumable feature caching and the datasets over cached features."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib.data import synth
from course_lib.data.abaw import read_mtl_annotations
from course_lib.data.datasets import FrameDataset, SequenceDataset
from course_lib.features import (CachedFeatures, CachedFrameDataset, CachedWindowDataset, describe,
                                 ensure_features, extract_features, feature_key)

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

LABELS = ("va", "expr", "au", "has_va", "has_expr", "has_au")


class Stem(nn.Module):
    """A stand-in backbone: a 28x28 patch conv on 112 px frames, a 4x4 grid of 16-dim tokens.

    Counts the frames it sees and raises on batch ``fail_at`` (1-based) to simulate an interruption.
    """

    def __init__(self, seed: int = 0, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 16, kernel_size=28, stride=28)
        self.fail_at = fail_at
        self.calls = 0
        self.frames = 0

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("interrupted")
        self.frames += len(images)
        tokens = self.conv(images).flatten(2).transpose(1, 2)  # (B, 16, 16)
        return {"tokens": tokens, "pooled": tokens.mean(1)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # seed 1: with seed 0 these sizes hold too few expression episodes for the generator
    return synth.generate_dataset(tmp_path_factory.mktemp("features") / "synth", n_videos=6, frames_per_video=40,
                                  val_fraction=0.34, seed=1, progress_bar=False)


@pytest.fixture(scope="module")
def tables(root):
    return {split: read_mtl_annotations(root / name) for split, name in
            (("train", "training_set_annotations.txt"), ("validation", "validation_set_annotations.txt"))}


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def extract(backbone, table, root, key="k", split="train", **kwargs):
    return extract_features(backbone, table, root, key=key, split=split, device="cpu", progress_bar=False, **kwargs)


# --------------------------------------------------------------------------- keys


def test_feature_key_is_short_safe_and_changes_with_each_input():
    key = feature_key("vit_small/patch16: weights@abc123", "0123456789abcdef", 112)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", key) and len(key) <= 64
    assert key == feature_key("vit_small/patch16: weights@abc123", "0123456789abcdef", 112)
    others = {feature_key("vit_small/patch16: weights@abc124", "0123456789abcdef", 112),
              feature_key("vit_small/patch16: weights@abc123", "0123456789abcdeg", 112),
              feature_key("vit_small/patch16: weights@abc123", "0123456789abcdef", 224)}
    assert len(others) == 3 and key not in others
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", feature_key("../..", "", 1))


# --------------------------------------------------------------------------- extraction


def test_extracted_features_equal_the_backbones_output(root, tables, cache):
    table = tables["train"].sample(frac=1.0, random_state=0)  # any row order is kept
    backbone = Stem()
    backbone.train()
    features = extract(backbone, table, root, batch_size=48)
    assert backbone.training, "the backbone's train/eval mode is restored"
    n = len(table)
    assert features.tokens.shape == (n, 16, 16) and features.pooled.shape == (n, 16)
    assert features.tokens.dtype == np.float16 and isinstance(features.tokens, np.memmap)
    assert not features.tokens.flags.writeable and not features.pooled.flags.writeable
    assert features.images == table["image"].tolist() and len(features) == n
    images = torch.stack([FrameDataset(table, root)[i]["image"] for i in range(n)])
    with torch.no_grad():
        expected = Stem().eval()(images)
    for what in ("tokens", "pooled"):
        got = features.to_tensor(what=what)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected[what], rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(features.to_tensor([5, 2], "pooled"), features.to_tensor(what="pooled")[[5, 2]])
    folder = cache / "features" / "k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"train_{s}" for s in ("tokens.npy", "pooled.npy", "images.txt", "meta.json", "ready"))
    meta = json.loads((folder / "train_meta.json").read_text())
    assert meta["done"] == meta["frames"] == n and meta["dtype"] == "float16" and meta["key"] == "k"
    assert meta["tokens_shape"] == [n, 16, 16] and meta["backbone"] == "Stem" and meta["seconds"] >= 0
    line = describe(features)
    assert "\n" not in line and f"{n} frames" in line and "16 tokens x 16 dims" in line and "MB" in line
    loaded = CachedFeatures.load("k", "train")
    assert np.array_equal(loaded.tokens, features.tokens) and loaded.meta == features.meta


def test_float32_and_resize(root, tables):
    table = tables["validation"].iloc[:10]
    features = extract(Stem(), table, root, dtype=torch.float32, image_size=56)
    assert features.tokens.dtype == np.float32 and features.tokens.shape == (10, 4, 16)
    with pytest.raises(ValueError, match="float16"):
        extract(Stem(), table, root, dtype=torch.float16, image_size=56)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(root, tables, cache):
    table = tables["train"]
    n, batch = len(table), 16
    reference = extract(Stem(), table, root, key="reference", batch_size=batch)

    failing = Stem(fail_at=4)
    with pytest.raises(RuntimeError, match="interrupted"):
        extract(failing, table, root, batch_size=batch)
    meta = json.loads((cache / "features" / "k" / "train_meta.json").read_text())
    assert meta["done"] == 3 * batch and not (cache / "features" / "k" / "train_ready").exists()
    with pytest.raises(FileNotFoundError, match="extract_features"):
        CachedFeatures.load("k", "train")

    resumed = Stem()
    features = extract(resumed, table, root, batch_size=batch)
    assert resumed.frames == n - 3 * batch and resumed.calls == -(-(n - 3 * batch) // batch)
    assert np.array_equal(features.tokens, reference.tokens)
    assert np.array_equal(features.pooled, reference.pooled)
    assert features.meta["done"] == n


def test_an_interruption_before_the_first_chunk_starts_afresh(root, tables):
    table = tables["validation"]
    with pytest.raises(RuntimeError, match="interrupted"):
        extract(Stem(fail_at=1), table, root, split="validation")
    resumed = Stem()
    features = extract(resumed, table, root, split="validation", num_workers=2, batch_size=32)
    assert resumed.frames == len(table)
    assert np.array_equal(features.pooled, extract(Stem(), table, root, key="other", split="validation").pooled)


def test_a_complete_cache_is_reused_without_running_the_backbone(root, tables, cache):
    first = extract(Stem(), tables["validation"], root, split="validation")
    again = Stem()
    second = extract(again, tables["validation"], root, split="validation")
    assert again.calls == 0
    assert np.array_equal(first.tokens, second.tokens)
    (cache / "features" / "k" / "validation_ready").unlink()  # stopped after the last chunk, before the flag
    third = Stem()
    assert np.array_equal(extract(third, tables["validation"], root, split="validation").tokens, first.tokens)
    assert third.calls == 0 and (cache / "features" / "k" / "validation_ready").exists()


def test_a_different_image_list_raises_unless_overwritten(root, tables):
    table = tables["validation"]
    extract(Stem(), table, root, split="validation")
    for other in (table.iloc[::-1], table.iloc[:20]):
        backbone = Stem()
        with pytest.raises(ValueError, match="other frames.*overwrite=True"):
            extract(backbone, other, root, split="validation")
        assert backbone.calls == 0
    rebuilt = extract(Stem(), table.iloc[:20], root, split="validation", overwrite=True)
    assert rebuilt.images == table["image"].iloc[:20].tolist() and rebuilt.tokens.shape[0] == 20


def test_ensure_features_keys_by_both_fingerprints(root, tables, cache):
    backbone = Stem()
    features = ensure_features(backbone, root, backbone_fingerprint="stem-v1", image_size=112, device="cpu",
                               progress_bar=False)
    assert set(features) == {"train", "validation"}
    assert backbone.frames == len(tables["train"]) + len(tables["validation"])
    key = feature_key("stem-v1", synth.dataset_fingerprint(root), 112)
    assert all(f.key == key and f.folder == cache / "features" / key for f in features.values())
    assert features["validation"].images == tables["validation"]["image"].tolist()
    again = Stem()
    ensure_features(again, root, backbone_fingerprint="stem-v1", image_size=112, device="cpu", progress_bar=False)
    assert again.calls == 0


# --------------------------------------------------------------------------- datasets


@pytest.fixture
def features(root, tables):
    return extract(Stem(), tables["train"], root)


def assert_same_items(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_cached_frame_dataset_items(root, tables, features):
    table = tables["train"]
    frames = FrameDataset(table, root)
    data = CachedFrameDataset(features, table, what="both")
    assert len(data) == len(table)
    for i in (0, 7, len(table) - 1):
        item, reference = data[i], frames[i]
        assert item["tokens"].shape == (16, 16) and item["pooled"].shape == (16,)
        assert item["tokens"].dtype == torch.float32
        assert torch.equal(item["tokens"], features.to_tensor([i])[0])
        assert set(item) == {"tokens", "pooled", *LABELS, "index"}
        for k in LABELS:
            assert torch.equal(item[k], reference[k]), k
        assert item["index"] == i
    assert set(CachedFrameDataset(features, table, what="pooled")[0]) == {"pooled", *LABELS, "index"}
    batch = next(iter(DataLoader(CachedFrameDataset(features, table, what="tokens"), batch_size=8)))
    assert batch["tokens"].shape == (8, 16, 16) and batch["au"].shape == (8, 12)
    with pytest.raises(IndexError):
        data[len(table)]


def test_cached_frame_dataset_matches_rows_by_image_name(root, tables, features):
    subset = tables["train"].sample(n=25, random_state=3)  # a subset, shuffled, with its original index
    data = CachedFrameDataset(features, subset, what="pooled")
    frames = FrameDataset(subset, root)
    positions = [features.images.index(name) for name in subset["image"]]
    for i in range(len(subset)):
        assert torch.equal(data[i]["pooled"], features.to_tensor([positions[i]], "pooled")[0])
        for k in LABELS:
            assert torch.equal(data[i][k], frames[i][k])
    with pytest.raises(ValueError, match="not in the cached split"):
        CachedFrameDataset(features, tables["validation"])
    with pytest.raises(ValueError, match="what must be"):
        CachedFrameDataset(features, subset, what="image")


@pytest.mark.parametrize("window,stride,pad", [(1, 1, False), (8, 4, False), (8, 4, True), (16, 16, True),
                                               (50, 10, False), (50, 10, True), (7, 3, True)])
def test_cached_windows_equal_sequence_dataset_windows(root, tables, features, window, stride, pad):
    table = tables["train"].sample(frac=1.0, random_state=window)  # windows follow frame order, not rows
    sequences = SequenceDataset(table, root, window, stride=stride, pad=pad)
    data = CachedWindowDataset(features, table, window, stride=stride, pad=pad, what="both")
    assert len(data) == len(sequences)
    assert np.array_equal(data.rows, sequences.rows) and np.array_equal(data.valid, sequences.valid)
    assert [w.video for w in data.windows] == [w.video for w in sequences.windows]
    for i in sorted({0, len(data) // 2, len(data) - 1}) if len(data) else []:
        item, reference = data[i], sequences[i]
        assert item["pooled"].shape == (window, 16) and item["tokens"].shape == (window, 16, 16)
        for k in (*LABELS, "valid", "indices"):
            assert torch.equal(item[k], reference[k]), k
        positions = features.rows_of(table["image"].iloc[item["indices"].numpy()])
        assert torch.equal(item["pooled"], features.to_tensor(positions, "pooled"))
        assert item["index"] == i


def test_windows_on_a_video_shorter_than_the_window(root, tables, features):
    short = tables["train"].iloc[:10]
    assert len(CachedWindowDataset(features, short, 16)) == 0
    padded = CachedWindowDataset(features, short, 16, pad=True)
    assert len(padded) == 1 and padded[0]["valid"].sum() == 10
    with pytest.raises(ValueError, match=">= 1"):
        CachedWindowDataset(features, short, 0)


def test_preload_and_memmap_give_identical_items(tables, features):
    table = tables["train"].sample(n=60, random_state=5)
    for what in ("tokens", "pooled", "both"):
        ram, disk = CachedFrameDataset(features, table, what, preload=True), \
            CachedFrameDataset(features, table, what, preload=False)
        assert ram._rows.data is not None and disk._rows.data is None
        for i in (0, 13, 59):
            assert_same_items(ram[i], disk[i])
        ram, disk = CachedWindowDataset(features, table, 6, 2, True, what, preload=True), \
            CachedWindowDataset(features, table, 6, 2, True, what, preload=False)
        for i in range(len(ram)):
            assert_same_items(ram[i], disk[i])


def test_preload_by_default_only_what_fits(tables, features, monkeypatch):
    from course_lib import features as features_module

    table = tables["train"].head(20)
    small = CachedFrameDataset(features, table, "both")
    assert small._rows.data is not None  # a small split goes to RAM
    assert small._rows.float32_bytes() == 4 * 20 * (features.n_tokens * features.tokens.shape[2] + features.dim)
    monkeypatch.setattr(features_module, "PRELOAD_LIMIT", small._rows.float32_bytes() - 1)
    big = CachedFrameDataset(features, table, "both")
    assert big._rows.data is None  # one byte over the limit: read from the memmaps
    assert_same_items(big[7], small[7])
    assert CachedWindowDataset(features, table, 4)._rows.data is not None  # pooled only: under the limit


def test_pickling_reopens_the_memmaps(tables, features):
    data = CachedWindowDataset(features, tables["train"], 4, preload=False)
    copy = pickle.loads(pickle.dumps(data))
    assert len(pickle.dumps(features)) < 100_000, "the arrays are not pickled"
    assert isinstance(copy.features.tokens, np.memmap)
    assert_same_items(copy[3], data[3])
