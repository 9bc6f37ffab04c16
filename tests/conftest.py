"""Test set-up: keep Jupyter, matplotlib, HF and torch out of ~, and never use the network.

The variables are set at import time, before any test or papermill kernel starts, so the
kernels that execute the notebooks inherit them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="course-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)

for _var, _sub in {
    "MPLCONFIGDIR": "mpl", "IPYTHONDIR": "ipython", "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data", "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "HF_HOME": "hf", "TORCH_HOME": "torch", "COURSE_DATA": "data",
}.items():
    os.environ[_var] = str(_TMP / _sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COURSE_OFFLINE"] = "1"
os.environ["COURSE_SMOKE"] = "1"  # notebooks always run in smoke mode under test
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def test_tmp() -> Path:
    """A temporary folder shared by the whole session (data, caches)."""
    return _TMP


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: tiny models train several times faster on one thread when
    other work shares the 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
