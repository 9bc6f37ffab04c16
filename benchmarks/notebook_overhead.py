"""How much of a headless notebook run is fixed overhead rather than the lesson's own work?

Every notebook pays for a kernel start, ``import course_lib`` (torch, timm, plotly) and
``setup_notebook()`` before its first line of teaching. CI executes every notebook, so this
fixed cost times the number of notebooks is a floor under ``make test``. This script measures,
in one run and on this machine:

  bare      executing a notebook holding only the setup cells (kernel + imports + setup)
  lesson    executing each course notebook in smoke mode

and prints the overhead share bare / lesson per notebook. Last line: one JSON object.

    .venv/bin/python benchmarks/notebook_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import nbformat

from course_lib.tooling.course_map import course_notebooks
from course_lib.tooling.execution import execute_notebook


def bare_notebook(source: Path, target: Path) -> Path:
    """A copy of ``source`` with only its first three code cells (setup, parameters, setup_notebook)."""
    nb = nbformat.read(source, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"][:3]
    nb.cells = code
    nbformat.write(nb, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    notebooks = course_notebooks()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for source in notebooks:
            bare_src = bare_notebook(source, tmp / f"bare_{source.name}")
            bare, lesson = [], []
            for _ in range(args.repeats):
                run = execute_notebook(bare_src, tmp / "out", mode="smoke")
                assert run.ok, run.error
                bare.append(run.seconds)
                run = execute_notebook(source, tmp / "out", mode="smoke")
                assert run.ok, run.error
                lesson.append(run.seconds)
            b, l = statistics.median(bare), statistics.median(lesson)
            results[source.stem] = {"bare_s": round(b, 2), "lesson_s": round(l, 2), "overhead_share": round(b / l, 3)}
            print(f"{source.stem:<32} bare {b:6.2f} s   lesson {l:6.2f} s   overhead share {b / l:.0%}")
    total_bare = sum(r["bare_s"] for r in results.values())
    total = sum(r["lesson_s"] for r in results.values())
    summary = {"notebooks": results, "total_bare_s": round(total_bare, 2), "total_lesson_s": round(total, 2),
               "overhead_share": round(total_bare / total, 3), "repeats": args.repeats}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
