"""The Colab installer never installs or upgrades torch and leaves Colab's front end alone."""

from __future__ import annotations

import sys
from importlib import metadata

from course_lib.tooling import colab


def test_missing_requirements_skip_installed_torch_and_frontend():
    reqs = ["numpy>=1", "surely-not-a-real-package-xyz>=1", "torch>=2.4", "torchvision", "jupyterlab>=4"]
    assert colab.missing_requirements(reqs) == ["surely-not-a-real-package-xyz>=1"]


def test_install_commands_pin_torch(repo, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["torch>=2.4", "surely-not-a-real-package-xyz"]\n')
    commands = colab.install_commands(tmp_path)
    assert commands[0][:4] == [sys.executable, "-m", "pip", "install"] and "--no-deps" in commands[0]
    second = commands[1]
    assert "torch>=2.4" not in second and "surely-not-a-real-package-xyz" in second
    constraints = second[second.index("-c") + 1]
    assert f"torch=={metadata.version('torch')}" in open(constraints).read()


def test_course_dependencies_parse(repo):
    assert any(d.startswith("timm") for d in colab.dependencies(repo / "pyproject.toml"))


# --- Colab readiness of the notebooks: the setup cell as Colab runs it, and sizes that fit a T4 ---

import subprocess  # noqa: E402
import types  # noqa: E402

import nbformat  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.config import REPO_URL  # noqa: E402
from course_lib.tooling.course_map import course_notebooks  # noqa: E402
from course_lib.memory import T4_USABLE_BYTES, saved_activation_bytes, training_memory  # noqa: E402


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_setup_cell_on_colab_clones_and_installs_without_torch(path, monkeypatch):
    """Run each notebook's first code cell as Colab would (``google.colab`` imported), recording commands."""
    setup = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
    ran = []
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append((cmd, kw.get("cwd"))))
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace: dict = {}
    exec(compile(setup, f"{path.name}, first code cell", "exec"), namespace)
    assert ran[0][0][:2] == ["git", "clone"] and REPO_URL in ran[0][0] and ran[0][0][-1] == "/content/course"
    assert ran[1] == ([sys.executable, "-m", "course_lib.tooling.colab"], "/content/course")
    assert len(ran) == 2 and "torch" not in " ".join(" ".join(cmd) for cmd, _ in ran)
    assert "course_lib" in namespace and sys.path[0] == "/content/course"


def test_saved_activations_are_measured():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU())
    # Linear saves its input (8 x 10 floats), ReLU its output (8 x 20); the weight is not an activation
    assert saved_activation_bytes(model, torch.randn(8, 10)) == (8 * 10 + 8 * 20) * 4
    model[0].weight.requires_grad_(False)
    est = training_memory(model, torch.randn(8, 10))
    assert est.weights == (200 + 20) * 4 and est.gradients == 20 * 4 and est.optimizer == 2 * 20 * 4
    assert est.total == est.weights + est.gradients + est.optimizer + est.activations


def test_full_mode_sizes_fit_a_t4():
    """The full-mode course (what a workshop runs on Colab's free T4) trains within a T4's memory."""
    from course_lib.budgets import BUDGETS
    from course_lib.course_backbone import training_config
    from course_lib.models import MTLConfig, MultiTaskModel
    from course_lib.progressive import progressive_config

    full = BUDGETS["course_backbone"]["full"]
    size = full["image_size"]
    backbone = MultiTaskModel(training_config(full))
    step = training_memory(backbone, torch.rand(full["batch_size"], 3, size, size))
    assert 0.2 * 2**30 < step.total < T4_USABLE_BYTES, f"course backbone, batch {full['batch_size']}: {step}"
    tokens = backbone.backbone(torch.rand(1, 3, size, size))["tokens"]
    n_tokens, token_dim = tokens.shape[1], tokens.shape[2]
    stage = progressive_config("full")
    heads = MultiTaskModel(MTLConfig(token_dim=token_dim, n_tokens=n_tokens, dim=stage.dim, depth=stage.depth))
    step = training_memory(heads, torch.rand(stage.batch_size, n_tokens, token_dim))
    assert step.total < T4_USABLE_BYTES, f"progressive stage model: {step}"
    explain = BUDGETS["explain_heads"]["full"]
    heads = MultiTaskModel(MTLConfig(token_dim=token_dim, n_tokens=n_tokens, dim=explain["dim"],
                                     depth=explain["depth"], heads=explain["heads"]))
    step = training_memory(heads, torch.rand(explain["batch_size"], n_tokens, token_dim))
    assert step.total < T4_USABLE_BYTES, f"explanation heads: {step}"
