"""The prepared GPU check (``benchmarks/gpu_check.py``) rehearsed on the CPU: ``--dry-run`` runs every
step at tiny scale and writes the report. Part of ``make test-scale`` (a CI step of its own)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.scale
def test_gpu_check_dry_run_runs_every_step_and_writes_one_report(repo, tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=repo, capture_output=True, text=True, timeout=900)
    assert out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["steps"]) == ["pretrain", "notebooks", "quality", "train_speed"]
    failed = {name: step["error"] for name, step in report["steps"].items() if not step["ok"]}
    assert not failed and done.returncode == 0, (failed, done.stdout[-2000:])
    assert report["dry_run"] and report["scale"] == 0.02 and report["seconds"] < report["budget_s"]
    assert report["steps"]["notebooks"]["result"]["00_welcome_and_setup"]["ok"]
    assert report["steps"]["quality"]["result"]["mode"] == "full"
    assert report["steps"]["train_speed"]["result"] is not None
    assert json.loads(done.stdout.strip().splitlines()[-1]) == report  # the last line is the report


def test_gpu_check_refuses_a_machine_without_a_gpu_unless_dry(repo):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--dry-run" in done.stderr
