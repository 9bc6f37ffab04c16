"""Execute every course notebook with papermill in smoke mode, in order, like ``make course``.

Executed copies are kept in ``build/test-notebooks/`` for inspection; a failure names the
notebook and the cell.
"""

from __future__ import annotations

import nbformat
import pytest

from course_lib.tooling.course_map import course_notebooks
from course_lib.tooling.execution import execute_notebook

NOTEBOOKS = course_notebooks()
CELL_TIMEOUT = 300  # seconds; smoke cells should take a few


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, repo):
    out_dir = repo / "build" / "test-notebooks"
    run = execute_notebook(path, out_dir, mode="smoke", cell_timeout=CELL_TIMEOUT)
    assert run.ok, f"{path.name} failed at {run.error} (executed copy: {run.output})"
    executed = nbformat.read(run.output, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type in ("display_data", "execute_result")
               and ("image/png" in o.data or "application/vnd.plotly.v1+json" in o.data)]
    assert figures, f"{path.name} shows no figure"
    if any("plt.show()" in c.source for c in executed.cells if c.cell_type == "code"):
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert pngs, f"{path.name} draws matplotlib figures but none reached the executed notebook"
    assert any("not attempted yet" in o.get("text", "") or "passed" in o.get("text", "") for o in outputs), \
        f"{path.name}: no exercise checker printed its verdict"
    source = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in source.cells if c.cell_type == "code"), "source notebook modified"
