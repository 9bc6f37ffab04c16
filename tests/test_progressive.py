"""course_lib.progressive (stages 1-3) and the training command line, on a tiny SynthAffWild."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from course_lib.data import synth
from course_lib.data.abaw import read_mtl_annotations
from course_lib.features import CachedFrameDataset
from course_lib.models import MTLConfig, build_model
from course_lib.progressive import FusionModel, progressive_config, run_progressive, stage_features, task_loss
from course_lib.progressive import read_run_config

TINY = dict(dim=16, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, temporal_dim=16, batch_size=32,
            windows={"au": 1, "expr": 3, "va": 6})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from course_lib.course_backbone import course_features

    base = tmp_path_factory.mktemp("progressive")
    os.environ["COURSE_CACHE"] = str(base / "cache")
    try:
        root = synth.generate_dataset(base / "data", n_videos=6, frames_per_video=30, seed=2, progress_bar=False)
        cb, feats = course_features(root, "smoke", device="cpu", progress_bar=False)
    finally:
        del os.environ["COURSE_CACHE"]
    return root, feats


def test_task_loss_trains_one_task_only():
    import pandas as pd

    from course_lib.labels import AU_NAMES
    rows = pd.DataFrame({"image": [f"v/{i:05d}.jpg" for i in range(1, 9)], "video": "v", "frame": range(1, 9),
                         "valence": 0.1, "arousal": 0.2, "expression": range(8),
                         **{a: [0, 1] * 4 for a in AU_NAMES}, "has_va": True, "has_expr": True, "has_au": True})
    assert task_loss(rows, "expr").weights == {"au": 0.0, "expr": 1.0, "va": 0.0}
    assert task_loss(rows).weights == {"au": 1.0, "expr": 1.0, "va": 1.0}
    with pytest.raises(ValueError, match="unknown task 'pain'"):
        task_loss(rows, "pain")


def test_fusion_model_starts_exactly_at_the_stage1_outputs(tiny):
    root, feats = tiny
    train = read_mtl_annotations(root / "training_set_annotations.txt")
    torch.manual_seed(0)
    models = {t: build_model(MTLConfig(token_dim=feats["train"].dim, n_tokens=feats["train"].n_tokens, dim=16),
                             train).eval() for t in ("au", "expr", "va")}
    fusion = FusionModel(models).eval()
    tokens = CachedFrameDataset(feats["train"], train)[0]["tokens"][None].repeat(3, 1, 1)
    with torch.no_grad():
        out = fusion(tokens, return_features=True)
        for t in ("au", "expr", "va"):
            torch.testing.assert_close(out[t], models[t](tokens)[t], atol=2e-3, rtol=0)
    assert out["features"].shape == (3, fusion.feature_dim) == (3, 4 * 16 + 22)
    with pytest.raises(ValueError, match="missing \\['va'\\]"):
        FusionModel({t: models[t] for t in ("au", "expr")})


def test_three_stages_are_scored_and_checkpointed(tiny, tmp_path):
    root, feats = tiny
    seen = []
    result = run_progressive(root, "smoke", config=progressive_config("smoke", **TINY), feats=feats, device="cpu",
                             out_dir=tmp_path, progress_bar=False, on_stage=lambda s, r: seen.append(s))
    table = result.scores
    assert list(table.stage.unique()) == ["stage 1: separate", "stage 2: joint + fusion", "stage 3: temporal"]
    assert len(table) == len(seen) == 3 + 1 + 1 + 3 + 1
    assert table.P_MTL.between(-1, 3).all() and table.P_MTL.notna().all()
    assert set(result.predictions) == {"stage1", "stage2", "stage3"}
    n_val = len(read_mtl_annotations(root / "validation_set_annotations.txt"))
    for stage, pred in result.predictions.items():  # every validation frame predicted exactly once
        assert sorted(pred["index"].tolist()) == list(range(n_val)), stage
    inputs = result.extra["stage3_inputs"]  # the stage-2 model's features, as stage 3 read them
    val_loader = DataLoader(CachedFrameDataset(feats["validation"], read_mtl_annotations(
        root / "validation_set_annotations.txt"), what="tokens"), batch_size=64)
    torch.testing.assert_close(inputs["validation"], stage_features(result.models["stage2"], val_loader, "cpu"))
    assert len(inputs["train"]) == result.extra["train_frames"]
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == sorted(["stage1_au.pt", "stage1_expr.pt", "stage1_va.pt", "stage2_joint.pt",
                            "stage3_au.pt", "stage3_expr.pt", "stage3_va.pt"])
    again = run_progressive(root, "smoke", config=progressive_config("smoke", **TINY), feats=feats, device="cpu",
                            out_dir=tmp_path, progress_bar=False, stages=("stage1",))
    np.testing.assert_allclose(again.scores.P_MTL.to_numpy(), table.P_MTL.to_numpy()[:4])  # reused checkpoints
    assert "stage3_inputs" not in again.extra
    with pytest.raises(ValueError, match="prefix"):
        run_progressive(root, "smoke", feats=feats, stages=("stage2",))


def test_run_config_is_checked_with_file_and_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data: smoke\nstages: [stage1, stage2]\nprogressive:\n  stage1_epochs: 2\n")
    run = read_run_config(good)
    assert run["mode"] == "smoke" and run["stages"] == ["stage1", "stage2"] and run["out"] == "build/runs/good"
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: smoke\nepochs: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line 2: unknown setting 'epochs'"):
        read_run_config(bad)
    bad.write_text("data: smoke\nprogressive:\n  stage1_epoch: 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line 3: unknown progressive setting 'stage1_epoch'"):
        read_run_config(bad)
    bad.write_text("stages: [stage2]\n")
    with pytest.raises(ValueError, match=r"line 1: stages must be a prefix"):
        read_run_config(bad)
    bad.write_text("data: [smoke\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line \d+: not valid YAML"):
        read_run_config(bad)


def test_shipped_configs_are_valid(repo):
    for path in sorted((repo / "configs").glob("*.yaml")):
        assert read_run_config(path)["stages"] == ["stage1", "stage2", "stage3"], path.name


def _cli(args, env_extra, cwd, nproc=None):
    env = {**os.environ, **env_extra}
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "course_lib.progressive", *args]
    else:
        cmd = [sys.executable, "-m", "course_lib.progressive", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("nproc", [None, 2], ids=["one-process", "torchrun-2-gloo"])
def test_command_line_runs_a_stage(tiny, tmp_path, repo, nproc):
    root, _ = tiny
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {root}\nmode: smoke\nstages: [stage1]\nout: {tmp_path / 'out'}\ndevice: cpu\n"
                      f"progressive: {json.dumps(TINY)}\n")
    env = {"COURSE_CACHE": str(root.parent / "cache"), "OMP_NUM_THREADS": "1"}
    done = _cli(["--config", str(config)], env, repo, nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage 1: separate" in done.stdout and f"{'2' if nproc else '1'} process(es)" in done.stdout
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [r["model"] for r in saved["scores"]] == ["au model", "expr model", "va model", "each task from its model"]
    bad = _cli(["--config", str(tmp_path / "missing.yaml")], env, repo)
    assert bad.returncode == 2 and "missing.yaml: no such run configuration" in bad.stderr


def test_command_line_trains_every_stage_on_a_release_layout_copy(tiny, tmp_path, repo):
    from course_lib.data.release import export_release_layout

    root, _ = tiny
    copy = export_release_layout(root, tmp_path / "s-Aff-Wild2", seed=5)  # no metadata, truth or audio; gaps
    assert sum(copy.dropped.values()) > 0
    config = tmp_path / "release.yaml"
    config.write_text(f"data: {copy.root}\nmode: smoke\nout: {tmp_path / 'out'}\ndevice: cpu\n"
                      f"progressive: {json.dumps(TINY)}\n")
    done = _cli(["--config", str(config)], {"COURSE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    stages = {r["stage"] for r in saved["scores"]}
    assert len(stages) == 3, stages  # stage 3 windows the frames without joining them across the gaps
    assert all(np.isfinite(r["P_MTL"]) for r in saved["scores"])
