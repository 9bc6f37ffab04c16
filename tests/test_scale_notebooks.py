"""Every notebook in full mode at a small scale on a CPU (``make test-scale``, a CI step of its own).

Full mode is what instructors run on Colab GPUs; smoke mode takes other branches. With
``COURSE_SCALE`` (default here 0.05) every full-mode size shrinks towards the smoke size
(:func:`course_lib.config.at_scale`) while full mode's code paths stay: its backbone recipe, its
configurations, its tables. Executed copies are kept in ``build/test-scale-notebooks/``.
"""

from __future__ import annotations

import os

import nbformat
import pytest

from course_lib.tooling.course_map import course_notebooks
from course_lib.tooling.execution import execute_notebook
from course_lib.tooling.runner import write_report

NOTEBOOKS = course_notebooks()
SCALE = os.environ.get("COURSE_SCALE") or "0.05"
RUNS = []  # this module's runs: course_report.json beside the executed copies, for INSTRUCTOR.md's times


@pytest.fixture(scope="module", autouse=True)
def full_mode_at_scale():
    """Force full mode at ``SCALE`` for this module's kernels (they inherit the environment)."""
    before = {k: os.environ.get(k) for k in ("COURSE_SMOKE", "COURSE_SCALE")}
    os.environ.update(COURSE_SMOKE="0", COURSE_SCALE=SCALE)
    yield
    if len(RUNS) == len(NOTEBOOKS):
        write_report(RUNS, RUNS[0].output.parent)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.scale
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_full_mode_at_small_scale(path, repo):
    run = execute_notebook(path, repo / "build" / "test-scale-notebooks", mode="full", cell_timeout=900)
    RUNS.append(run)
    assert run.ok, f"{path.name} failed in full mode at COURSE_SCALE={SCALE}: {run.error} (executed copy: {run.output})"
    executed = nbformat.read(run.output, as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.output_type == "error"]
    if path.stem == "00_welcome_and_setup":
        assert f"full at COURSE_SCALE={float(SCALE):g}" in text  # the environment report says how it ran
