"""Execute one notebook headlessly with papermill, and say which cell failed.

Used by ``make course`` (:mod:`course_lib.tooling.runner`), by the slides (which execute a notebook whose
figures they need) and by the notebook tests, so CI runs notebooks exactly as the course does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from ..config import CourseSetupError, Mode

#: Per-cell time limit (seconds) by mode: smoke cells are meant to take seconds.
CELL_TIMEOUT: dict[str, int] = {"smoke": 600, "full": 3600}


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    name: str
    mode: Mode
    seconds: float
    ok: bool
    error: str | None
    output: Path

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"FAILED: {self.error}"


def check_kernel(kernel: str) -> None:
    """Raise a one-line :class:`CourseSetupError` when the Jupyter kernel is not installed."""
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise CourseSetupError(
            f"Jupyter kernel {kernel!r} is not installed: run "
            f"'.venv/bin/python -m ipykernel install --sys-prefix --name {kernel}' "
            "or use the default KERNEL=python3"
        ) from None


def _describe_failure(exc: Exception, source: Path) -> str:
    """Name the cell that failed (its number in the source notebook and first line) and the error."""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = ""
    failed_source = getattr(exc, "source", None)
    if failed_source is not None:
        # lazy: nbformat (about 3 s) and papermill (about 5 s) only when a notebook runs
        import nbformat

        cells = nbformat.read(source, as_version=4).cells
        number = next((i for i, c in enumerate(cells, start=1) if c.source == failed_source), None)
        first = next((ln.strip() for ln in failed_source.splitlines() if ln.strip()), "")
        where = (f"cell {number} of {len(cells)}" if number else "injected parameters cell")
        where += f" ({first[:60]!r}): "
    message = str(evalue).strip().splitlines()[-1] if str(evalue).strip() else ""
    return f"{where}{ename}: {message}"[:300]


def execute_notebook(source: Path, out_dir: Path, *, mode: Mode, kernel: str = "python3",
                     cell_timeout: int | None = None, parameters: dict | None = None) -> NotebookRun:
    """Execute ``source`` with papermill into ``out_dir``; the returned record says how it went.

    The notebook runs in its own folder with ``SMOKE`` injected and ``COURSE_HEADLESS=1``, so
    progress bars print text. A failing cell does not raise: the record names it.
    """
    # lazy: nbformat (about 3 s) and papermill (about 5 s) only when a notebook runs
    import papermill as pm

    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / source.name
    params = {"SMOKE": mode == "smoke", **(parameters or {})}
    os.environ["COURSE_HEADLESS"] = "1"
    start = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(source), str(output), parameters=params, kernel_name=kernel,
            cwd=str(source.parent), execution_timeout=cell_timeout or CELL_TIMEOUT[mode],
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no start-up chatter in the log
        )
    except Exception as exc:  # papermill's error, a cell time-out, a dead kernel
        error = _describe_failure(exc, source)
    return NotebookRun(name=source.stem, mode=mode, seconds=time.perf_counter() - start,
                       ok=error is None, error=error, output=output)
