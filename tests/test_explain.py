"""Explanations (course_lib.explain, .localization, .randomization): the output wrapper, every attribution method, the
localisation ratio, the randomisation test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import explain, localization, randomization
from course_lib.labels import AU_NAMES
from course_lib.models import MTLConfig, MultiTaskModel

SIZE = 64  # a 4 x 4 token grid with lcnet_050 cut at stride 16


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = MTLConfig(backbone="lcnet_050", image_size=SIZE, backbone_kwargs={"token_stride": 16}, dim=16, depth=1,
                       heads=2, gcn=False, dropout=0.1)
    return MultiTaskModel(config).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("head, targets", [("au", [*AU_NAMES[::5], 6, 11]), ("expr", ["Neutral", "Happiness", 7]),
                                           ("va", ["valence", "arousal", 0])])
def test_target_output_picks_the_right_output(model, images, head, targets):
    with torch.no_grad():
        reference = model(images)[head]
        for target in targets:
            index = target if isinstance(target, int) else explain.TARGETS[head].index(target)
            got = explain.TargetOutput(model, head, target)(images)
            assert got.shape == (len(images),)
            torch.testing.assert_close(got, reference[:, index])
            if head != "va":
                prob = explain.TargetOutput(model, head, target, probability=True)(images)
                want = torch.sigmoid(reference) if head == "au" else reference.softmax(-1)
                torch.testing.assert_close(prob, want[:, index])


@pytest.mark.parametrize("head, target", [("pose", "AU1"), ("au", "AU3"), ("au", 12), ("au", -1), ("expr", "Joy"),
                                          ("expr", 8), ("va", "dominance"), ("va", 2), ("au", True)])
def test_unknown_head_or_target_is_a_clear_error(model, head, target):
    with pytest.raises(ValueError, match="unknown|out of range"):
        explain.TargetOutput(model, head, target)


def test_probability_is_not_for_va_and_methods_are_checked(model, images):
    with pytest.raises(ValueError, match="probability"):
        explain.TargetOutput(model, "va", "valence", probability=True)
    with pytest.raises(ValueError, match="unknown method"):
        explain.attribute(model, images, "au", "AU1", "lime")
    with pytest.raises(ValueError, match="one per image"):
        explain.attribute(model, images, "au", ["AU1", "AU2", "AU4"], "saliency")


@pytest.mark.parametrize("method", explain.METHODS)
def test_every_method_gives_one_map_per_image(model, images, method):
    maps = explain.attribute(model, images, "au", ["AU12", "AU1"], method, n_steps=4, nt_samples=2, n_samples=4,
                             window=16, stride=16)
    assert maps.shape == (len(images), SIZE, SIZE)
    assert torch.isfinite(maps).all() and (maps >= 0).all()  # "positive" part (attention is never negative)
    assert not maps.requires_grad


@pytest.mark.parametrize("head, target", [("expr", "Happiness"), ("va", "arousal")])
def test_other_heads_can_be_explained(model, images, head, target):
    for method in ("saliency", "grad_cam", "attention"):
        assert explain.attribute(model, images, head, target, method).shape == (len(images), SIZE, SIZE)


def test_gradients_reach_the_pixels_of_a_frozen_backbone(model, images):
    assert model.backbone.frozen
    maps = explain.attribute(model, images, "au", "AU6", "saliency")
    assert maps.abs().sum() > 0
    assert model.backbone.frozen and not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.training


def test_integrated_gradients_is_complete(model, images):
    maps, delta = explain.attribute(model, images, "au", "AU12", "integrated_gradients", sign="signed",
                                    baseline="black", n_steps=64, return_delta=True)
    f = explain.TargetOutput(model, "au", "AU12")
    with torch.no_grad():
        gap = f(images) - f(torch.zeros_like(images))
    torch.testing.assert_close(maps.sum((1, 2)), gap, atol=2e-2 * float(gap.abs().max()) + 1e-3, rtol=0)
    assert delta.abs().max() < 2e-2 * float(gap.abs().max()) + 1e-3


def test_signs_and_baselines(model, images):
    signed = explain.attribute(model, images, "au", "AU4", "integrated_gradients", sign="signed", n_steps=4)
    positive = explain.attribute(model, images, "au", "AU4", "integrated_gradients", sign="positive", n_steps=4)
    absolute = explain.attribute(model, images, "au", "AU4", "integrated_gradients", sign="absolute", n_steps=4)
    torch.testing.assert_close(positive, signed.clamp(min=0))
    torch.testing.assert_close(absolute, signed.abs())
    for kind in ("black", "gray", "blur", 0.25):
        assert explain.baseline_images(images, kind).shape == images.shape
    with pytest.raises(ValueError, match="baseline"):
        explain.baseline_images(images, "noise")


def test_grad_cam_layer_outputs_the_token_map(model):
    layer = explain.find_feature_layer(model)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(torch.rand(1, 3, SIZE, SIZE))
    handle.remove()
    assert tuple(seen[-1][1:]) == (model.backbone.num_features, *model.backbone.grid_size)


def test_localization_ratio_is_one_at_chance_and_above_inside():
    region = np.zeros((10, 10), dtype=bool)
    region[2:4, 3:8] = True  # 10 % of the image
    assert localization.localization_ratio(np.ones((10, 10)), region) == pytest.approx(1.0)
    inside = np.where(region, 1.0, 0.0)
    assert localization.localization_ratio(inside, region) == pytest.approx(10.0)
    mostly = np.where(region, 3.0, 0.1)
    assert 1.0 < localization.localization_ratio(mostly, region) < 10.0
    assert localization.localization_ratio(np.where(region, 0.0, 1.0), region) == 0.0
    # negative attribution is ignored: adding it anywhere changes nothing
    noisy = inside - 5 * np.where(region, 0.0, 1.0)
    assert localization.localization_ratio(noisy, region) == pytest.approx(10.0)
    assert localization.localization_ratio(torch.as_tensor(inside), torch.as_tensor(region)) == pytest.approx(10.0)
    assert math.isnan(localization.localization_ratio(-np.ones((10, 10)), region))
    with pytest.raises(ValueError, match="empty"):
        localization.localization_ratio(np.ones((10, 10)), np.zeros((10, 10), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        localization.localization_ratio(np.ones((10, 10)), np.ones((5, 5), dtype=bool))


def test_randomisation_sanity_check(model, images):
    copies = randomization.randomized_copies(model, "cascading")
    names = [n for n, _ in copies]
    assert names[0] == "heads" and names[-1].startswith("backbone.") and len(names) == len(set(names))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    last = copies[-1][1]
    changed = [k for k, v in last.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("heads.") for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the original must stay intact"
    (name, full), = randomization.randomized_copies(model, "full")
    assert name == "everything"
    table, maps = randomization.sanity_check(model, images, "au", "AU12", ("saliency",), mode="full")
    assert list(table.index) == ["trained", "everything"]
    assert table.loc["trained", "saliency"] == pytest.approx(1.0)
    assert table.loc["everything", "saliency"] < 0.99
    assert maps["everything"]["saliency"].shape == (len(images), SIZE, SIZE)


def test_rank_correlation():
    a = np.arange(20.0)
    assert randomization.rank_correlation(a, a ** 3) == pytest.approx(1.0)
    assert randomization.rank_correlation(a, -a) == pytest.approx(-1.0)


def test_localization_scores_on_synthetic_frames(tmp_path_factory, model):
    from course_lib.data import abaw, synth

    root = synth.generate_dataset(tmp_path_factory.mktemp("explain") / "data", n_videos=6, frames_per_video=30,
                                  image_size=SIZE, seed=4, progress_bar=False)
    table = abaw.read_mtl_annotations(root / "training_set_annotations.txt")
    scores = localization.localization_scores(model, root, table, ["saliency", "attention"], max_frames=6,
                                         progress_bar=False)
    assert list(scores.index) == list(AU_NAMES) and list(scores.columns) == ["saliency", "attention"]
    assert np.isfinite(scores.to_numpy()).any()
    pairs = localization.localization_scores(model, root, table, ["saliency"], max_frames=6, per_pair=True,
                                        progress_bar=False)
    assert set(pairs.columns) >= {"image", "au", "method", "ratio", "region_share"}
    assert (pairs["region_share"] > 0).all()


def test_frames_drawn_per_au_first_then_at_random():
    rng = np.random.default_rng(5)
    active = rng.random((400, 12)) < np.linspace(0.01, 0.4, 12)  # AU k active with rate 1 % .. 40 %
    rows = np.flatnonzero(active.any(1))
    plain = localization._sample_frames(active, 80, seed=3)
    assert np.array_equal(plain, np.sort(np.random.default_rng(3).choice(rows, size=80, replace=False)))
    drawn = localization._sample_frames(active, 80, seed=3, min_per_au=8)
    assert len(drawn) == len(set(drawn)) == 80 and set(drawn) <= set(rows)
    per_au = active[drawn].sum(0)
    assert (per_au >= np.minimum(8, active.sum(0))).all()  # the rarest AU gets all of its frames where it has < 8
    assert active[:, 0].sum() < 8 and per_au[0] == active[:, 0].sum() > active[plain].sum(0)[0]
    assert np.array_equal(localization._sample_frames(active, None, seed=3, min_per_au=8), rows)
