"""The Colab installer never installs or upgrades torch and leaves Colab's front end alone."""

from __future__ import annotations

import sys
from importlib import metadata

from course_lib import colab


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
