"""course_lib.config and setup_notebook: mode, device, seeds, folders, offline detection."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from course_lib import config
from course_lib.config import CourseSetupError, resolve_mode


@pytest.fixture
def no_env(monkeypatch):
    for var in ("COURSE_SMOKE", "CI", "COURSE_OFFLINE", "HF_HUB_OFFLINE", "COURSE_HEADLESS"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("cuda, smoke, want", [
    (False, None, "smoke"), (True, None, "full"), (True, True, "smoke"), (False, False, "full"),
    (False, "auto", "smoke"), (True, "auto", "full"), (True, "smoke", "smoke"), (False, "full", "full"),
])
def test_mode_from_parameter_and_gpu(no_env, cuda, smoke, want):
    no_env.setattr(config, "cuda_available", lambda: cuda)
    assert resolve_mode(smoke) == want


@pytest.mark.parametrize("env_value, want", [("1", "smoke"), ("true", "smoke"), ("0", "full"), ("no", "full")])
def test_environment_overrides_parameter(no_env, env_value, want):
    no_env.setattr(config, "cuda_available", lambda: want == "full")
    no_env.setenv("COURSE_SMOKE", env_value)
    for smoke in (None, True, False, "full", "smoke"):
        assert resolve_mode(smoke) == want


def test_bad_mode_values_explain_themselves(no_env):
    with pytest.raises(CourseSetupError, match="unknown mode 'fast'"):
        resolve_mode("fast")
    no_env.setenv("COURSE_SMOKE", "maybe")
    with pytest.raises(CourseSetupError, match="COURSE_SMOKE"):
        resolve_mode(None)


def test_device_is_cpu_here_and_prefer_wins():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert config.get_device().type == expected
    assert config.get_device("cpu").type == "cpu"


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()

    config.seed_everything(7)
    first = draw()
    config.seed_everything(7)
    assert draw() == first
    config.seed_everything(8)
    assert draw() != first


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "elsewhere"))
    assert config.data_dir() == (tmp_path / "elsewhere").resolve()
    assert not (tmp_path / "elsewhere").exists()
    assert config.data_dir(create=True).is_dir()
    assert config.cache_dir("features") == (tmp_path / "elsewhere" / "cache" / "features").resolve()


def test_default_data_dir_is_found_from_any_cwd(repo, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "COURSE_DATA"}
    out = subprocess.run([sys.executable, "-c", "from course_lib.config import data_dir; print(data_dir())"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(repo / "data")


def test_unwritable_data_dir_is_one_clear_line(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COURSE_DATA", str(blocker / "data"))
    with pytest.raises(CourseSetupError) as info:
        config.data_dir(create=True)
    message = str(info.value)
    assert "\n" not in message and str(blocker / "data") in message and "COURSE_DATA" in message


def test_offline_detection(no_env):
    assert not config.is_offline()
    no_env.setenv("COURSE_OFFLINE", "1")
    assert config.is_offline()
    no_env.delenv("COURSE_OFFLINE")
    no_env.setenv("CI", "true")
    assert config.is_offline() and config.is_headless()


def test_setup_notebook_reports_and_configures(capsys, monkeypatch):
    import plotly.io as pio

    import course_lib

    monkeypatch.setenv("COURSE_SMOKE", "1")
    env = course_lib.setup_notebook(smoke=False, seed=3)
    out = capsys.readouterr().out
    assert env.mode == "smoke" and env.smoke and env.pick(1, 2) == 1
    assert "torch" in out and "mode     smoke" in out and "device" in out
    assert "notebook" in pio.renderers.default  # figures survive headless execution
    assert torch.initial_seed() == 3


def test_progress_is_plain_text_when_headless(monkeypatch):
    from tqdm import tqdm as plain

    from course_lib import progress

    monkeypatch.setenv("COURSE_HEADLESS", "1")
    bar = progress(range(3), desc="x")
    assert type(bar) is plain and list(bar) == [0, 1, 2]


def test_importing_course_lib_first_spares_the_kernel_the_iri_grammars_and_keeps_nbformat_working():
    """course_lib marks rfc3987_syntax absent before jsonschema loads it (3-4 s of grammar
    compilation per notebook); nbformat's validation, which goes through jsonschema, still works."""
    code = ("import sys, course_lib, plotly.io, nbformat\n"
            "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1 + 1')])\n"
            "nbformat.validate(nb)\n"
            "print(sys.modules.get('rfc3987_syntax', 'missing'), 'jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "True"]
    # a process that loaded jsonschema first is left as it is
    code = "import jsonschema, sys, course_lib; print(sys.modules.get('rfc3987_syntax', 'missing') is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_at_scale_shrinks_full_sizes_but_never_below_smoke(monkeypatch):
    from course_lib.config import CourseSetupError, at_scale, course_scale, mode_settings
    from course_lib.budgets import BUDGETS

    COURSE_SIZES = BUDGETS["data"]

    assert at_scale(300, 45, 0.05) == 45 and at_scale(300, 45, 0.5) == 150  # the smoke size is the floor
    assert at_scale(8, 16, 0.05) == 8  # a full value below smoke's stays
    assert at_scale(1e-3, 3e-3, 0.05) == 1e-3 and at_scale(True, False, 0.05) is True
    assert at_scale("resnet18", "lcnet_050", 0.05) == "resnet18"  # the full code path: names are not sizes
    assert at_scale([0, 1, 2], [0], 0.05) == [0] and at_scale((1, 5, 15, 30), (1, 5, 15, 30), 0.05) == (1, 5, 15, 30)
    assert at_scale({"epochs": 15, "output_stride": 16, "lr": 1e-3}, {"epochs": 4, "lr": 3e-3}, 0.05) == \
        {"epochs": 4, "output_stride": 16, "lr": 1e-3}
    for value in (300, [0, 1, 2], {"epochs": 3}):
        assert at_scale(value, 1, 1.0) is value  # scale 1 is full mode itself
    monkeypatch.delenv("COURSE_SCALE", raising=False)
    assert course_scale() == 1.0 and mode_settings(COURSE_SIZES, "full") is COURSE_SIZES["full"]
    monkeypatch.setenv("COURSE_SCALE", "0.05")
    assert course_scale() == 0.05
    assert mode_settings(COURSE_SIZES, "full") == COURSE_SIZES["smoke"]
    assert mode_settings(COURSE_SIZES, "smoke") is COURSE_SIZES["smoke"]
    for bad in ("0", "1.5", "a twentieth"):
        monkeypatch.setenv("COURSE_SCALE", bad)
        with pytest.raises(CourseSetupError, match="COURSE_SCALE"):
            course_scale()
    with pytest.raises(ValueError, match="unknown mode"):
        mode_settings(COURSE_SIZES, "huge")
