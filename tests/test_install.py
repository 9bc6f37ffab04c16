"""One source of truth for dependencies, and an environment where torch, torchvision and timm work."""

from __future__ import annotations

import tomllib
from importlib import metadata

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet


def _pyproject(repo):
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]


def test_environment_yml_only_installs_this_repo(repo):
    env = yaml.safe_load((repo / "environment.yml").read_text())
    deps = env["dependencies"]
    plain = [d for d in deps if isinstance(d, str)]
    pip = [d for d in deps if isinstance(d, dict)]
    assert sorted(d.split("=")[0] for d in plain) == ["pip", "python"], plain
    assert pip == [{"pip": ["-e .[dev]"]}], "environment.yml must pip-install this repo and nothing else"
    python = next(d for d in plain if d.startswith("python")).split("=")[1]
    assert SpecifierSet(_pyproject(repo)["requires-python"]).contains(python + ".0")


def test_pyproject_declares_the_course_stack(repo):
    project = _pyproject(repo)
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    for needed in ("jupyterlab", "torch", "torchvision", "timm", "captum", "ipywidgets", "plotly", "numpy",
                   "pandas", "papermill", "scikit-learn", "tqdm"):
        assert needed in names, needed
    dev = {Requirement(r).name.lower() for r in project["optional-dependencies"]["dev"]}
    assert {"pytest", "pytest-timeout"} <= dev
    torch_req = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    assert "==" not in str(torch_req.specifier), "do not pin torch to one build (see README)"


def test_installed_versions_satisfy_pyproject(repo):
    project = _pyproject(repo)
    for raw in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(raw)
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} does not satisfy {req}"


def test_torch_torchvision_timm_work_together():
    import timm
    import torch
    import torchvision

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # a compiled torchvision operator, not just an import
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 512)
