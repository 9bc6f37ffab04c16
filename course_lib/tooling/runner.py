"""Run the whole course headlessly: data, every notebook with papermill, slides, pages, a table.

This is ``make course`` (``python -m course_lib.tooling.runner``); the notebook tests call
:func:`course_lib.tooling.execution.execute_notebook` too, so CI runs notebooks exactly as the course does. Executed
copies go to ``build/notebooks/`` with ``course_report.json`` (times, machine); the slides to
``build/slides/``; the executed notebooks as offline web pages to ``build/html/``. The
sources are never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from ..config import CourseSetupError, Mode, build_dir, course_scale, data_dir, resolve_mode
from ..data.synth import ensure_course_data
from ..files import atomic_write
from .course_map import course_notebooks, notebooks_dir
from .execution import NotebookRun, check_kernel, execute_notebook
from .pages import export_pages
from .slides import build_decks

def prepare_course_data(mode: Mode) -> Path:
    """Generate (or reuse) the data the notebooks need: SynthAffWild for ``mode``, or a real copy."""
    data_dir(create=True)  # a one-line error for an unwritable folder, before any work
    start = time.perf_counter()
    root = ensure_course_data(mode, audio=True)
    print(f"data: {root} ready ({time.perf_counter() - start:.1f} s)", flush=True)
    return root


def format_table(runs: list[NotebookRun]) -> str:
    """The summary table printed by ``make course``: notebook, mode, seconds, status."""
    width = max([len("notebook")] + [len(r.name) for r in runs])
    lines = [f"{'notebook':<{width}}  {'mode':<5}  {'seconds':>8}  status",
             f"{'-' * width}  -----  --------  ------"]
    for r in runs:
        lines.append(f"{r.name:<{width}}  {r.mode:<5}  {r.seconds:>8.1f}  {r.status}")
    total = sum(r.seconds for r in runs)
    failed = sum(not r.ok for r in runs)
    lines.append(f"{len(runs)} notebooks, {failed} failed, {total:.1f} s in all")
    return "\n".join(lines)


def machine_description() -> str:
    """One line naming the machine a run used: accelerator or CPU cores, and torch."""
    # lazy: torch (2-3 s) only for the report line: `--help` and set-up errors answer at once
    import torch

    if torch.cuda.is_available():
        where = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        where = f"CPU only, {os.cpu_count()} cores ({platform.machine()})"
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def write_report(runs: list[NotebookRun], out_dir: Path) -> Path:
    """``course_report.json`` beside the executed notebooks: each run and the machine."""

    report = {"date": date.today().isoformat(), "machine": machine_description(),
              **({"scale": course_scale()} if course_scale() < 1 else {}),
              "runs": [{"name": r.name, "mode": r.mode, "seconds": round(r.seconds, 1), "ok": r.ok,
                        "error": r.error} for r in runs]}
    path = Path(out_dir) / "course_report.json"
    atomic_write(path, json.dumps(report, indent=2) + "\n")
    return path


TIMES_START = "<!-- times: written by python -m course_lib.tooling.runner --record-times FILE; do not edit by hand -->"
TIMES_END = "<!-- /times -->"


def times_markdown(report: dict) -> str:
    """The per-notebook run times of a ``course_report.json`` as a Markdown table."""
    runs = report["runs"]
    how = f"in full mode at `COURSE_SCALE={report['scale']:g}`" if report.get("scale") else "by `make course`"
    lines = [f"Measured {how} on {report['date']}: {report['machine']}.", "",
             "| notebook | mode | seconds | status |", "| --- | --- | ---: | --- |"]
    lines += [f"| {r['name']} | {r['mode']} | {r['seconds']:.0f} | {'ok' if r['ok'] else 'FAILED'} |" for r in runs]
    lines.append(f"| all {len(runs)} | | {sum(r['seconds'] for r in runs):.0f} | |")
    return "\n".join(lines)


def record_times(target: Path, reports: list[Path]) -> None:
    """Write the tables of ``reports`` between the times markers of ``target`` (the instructor guide)."""
    text = Path(target).read_text(encoding="utf-8")
    if TIMES_START not in text or TIMES_END not in text:
        raise CourseSetupError(f"{target}: no block between '{TIMES_START}' and '{TIMES_END}'")
    tables = []
    for report in reports:
        if not Path(report).is_file():
            raise CourseSetupError(f"{report}: no such report; run make course first")
        tables.append(times_markdown(json.loads(Path(report).read_text(encoding="utf-8"))))
    head, rest = text.split(TIMES_START, 1)
    _, tail = rest.split(TIMES_END, 1)
    atomic_write(Path(target), head + TIMES_START + "\n" + "\n\n".join(tables) + "\n" + TIMES_END + tail)


def run_course(mode: str = "auto", *, notebooks: Path | None = None, out_dir: Path | None = None,
               kernel: str = "python3", slides: bool = True, pages: bool = True,
               only: str | None = None, html_dir: Path | None = None) -> list[NotebookRun]:
    """Generate data, execute the notebooks in order, build slides and pages; return the runs."""
    resolved = resolve_mode(mode)
    check_kernel(kernel)
    sources = course_notebooks(notebooks or notebooks_dir())
    if only:
        sources = [p for p in sources if only in p.name]
    if not sources:
        raise CourseSetupError(f"no notebooks NN_*.ipynb in {notebooks or notebooks_dir()}"
                               + (f" matching {only!r}" if only else ""))
    data = prepare_course_data(resolved)
    out_dir = Path(out_dir) if out_dir is not None else build_dir() / "notebooks"
    print(f"course: {len(sources)} notebooks, mode {resolved}, data in {data}, "
          f"executed copies in {out_dir}", flush=True)
    runs = []
    for source in sources:
        print(f"  running {source.name} ...", flush=True)
        run = execute_notebook(source, out_dir, mode=resolved, kernel=kernel)
        print(f"  {run.name}: {run.status} ({run.seconds:.1f} s)", flush=True)
        runs.append(run)
    if only:  # a partial run: no report, slides or pages built from a part of the course
        return runs
    write_report(runs, out_dir)
    if slides:
        start = time.perf_counter()
        decks = build_decks(executed=out_dir, mode=resolved)
        print(f"slides: {len(decks)} decks in {build_dir() / 'slides'} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    if pages:
        start = time.perf_counter()
        html_dir = Path(html_dir) if html_dir is not None else build_dir() / "html"
        exported = export_pages(out_dir, html_dir)
        print(f"pages: {len(exported)} notebooks as HTML in {html_dir} "
              f"(open index.html; {time.perf_counter() - start:.1f} s)", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tooling.runner", description=__doc__)
    parser.add_argument("--mode", default="auto", help="auto (full on a CUDA GPU), smoke or full")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--notebooks", type=Path, default=None, help="folder of NN_*.ipynb")
    parser.add_argument("--out", type=Path, default=None, help="folder for executed copies")
    parser.add_argument("--only", default=None, help="run only notebooks whose name contains this")
    parser.add_argument("--no-slides", action="store_true", help="skip building the slides")
    parser.add_argument("--no-pages", action="store_true", help="skip exporting the notebooks to HTML")
    parser.add_argument("--html", type=Path, default=None, help="folder for the HTML pages (build/html)")
    parser.add_argument("--record-times", type=Path, default=None, metavar="FILE",
                        help="write the run times of the reports given by --report (default: the last "
                             "make course) into FILE's times block, then stop")
    parser.add_argument("--report", type=Path, action="append", default=None,
                        help="course_report.json to record (repeatable)")
    args = parser.parse_args(argv)
    if args.record_times is not None:
        try:
            record_times(args.record_times, args.report or [build_dir() / "notebooks" / "course_report.json"])
        except CourseSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"recorded run times in {args.record_times}")
        return 0
    try:
        runs = run_course(args.mode, notebooks=args.notebooks, out_dir=args.out, kernel=args.kernel,
                          slides=not args.no_slides, pages=not args.no_pages, only=args.only, html_dir=args.html)
    except CourseSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_table(runs))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
