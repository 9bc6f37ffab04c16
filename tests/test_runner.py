"""``make course`` / ``course_lib.tooling.runner``: the table, failures named by cell, one-line set-up errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib.tooling.execution import NotebookRun
from course_lib.tooling.runner import format_table


def _run(args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "course_lib.tooling.runner", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=300)


def _assert_one_line_error(result, *needles):
    assert result.returncode == 2, result
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_mode_is_one_line():
    _assert_one_line_error(_run(["--mode", "fast", "--no-slides"]), "unknown mode 'fast'")


def test_missing_kernel_is_one_line():
    _assert_one_line_error(_run(["--kernel", "no-such-kernel", "--no-slides"]), "no-such-kernel", "not installed")


def test_unwritable_data_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run(["--mode", "smoke", "--no-slides"], env={"COURSE_DATA": str(blocker / "data")})
    _assert_one_line_error(result, "not writable", "COURSE_DATA")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_rejects_unknown_mode_in_one_line(repo):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "course", "MODE=turbo"], cwd=repo, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown MODE 'turbo'" in lines[0], lines


def _notebook(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell("SMOKE = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells.insert(1, params)
    nbformat.write(nb, path)


def test_runner_executes_in_order_and_names_the_failing_cell(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "00_fine.ipynb", [new_markdown_cell("# 00 · Fine\n\n**Idea:** works"),
                                      new_code_cell("assert SMOKE is True\nprint('ran in smoke mode')")])
    _notebook(src / "01_broken.ipynb", [new_markdown_cell("# 01 · Broken\n\n**Idea:** fails"),
                                        new_code_cell("x = 1"),
                                        new_code_cell("# the bad cell\nraise ValueError('label out of range')")])
    out = tmp_path / "executed"
    result = _run(["--mode", "smoke", "--notebooks", str(src), "--out", str(out), "--no-slides",
                   "--html", str(tmp_path / "html")])
    assert result.returncode == 1, result.stderr
    assert "notebook " in result.stdout, result.stdout + result.stderr
    table = result.stdout[result.stdout.index("notebook "):]
    assert table.index("00_fine") < table.index("01_broken")
    fine_row = next(ln for ln in table.splitlines() if ln.startswith("00_fine"))
    assert fine_row.split()[1:2] == ["smoke"] and fine_row.rstrip().endswith("ok")
    broken_row = next(ln for ln in table.splitlines() if ln.startswith("01_broken"))
    assert "cell 4 of 4" in broken_row and "# the bad cell" in broken_row
    assert "ValueError: label out of range" in broken_row
    assert "2 notebooks, 1 failed" in table
    executed = nbformat.read(out / "00_fine.ipynb", as_version=4)
    assert any("ran in smoke mode" in o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert not any(c.get("outputs") for c in nbformat.read(src / "00_fine.ipynb", as_version=4).cells
                   if c.cell_type == "code"), "the source notebook must stay untouched"
    report = json.loads((out / "course_report.json").read_text())
    assert [(r["name"], r["ok"]) for r in report["runs"]] == [("00_fine", True), ("01_broken", False)]
    index = (tmp_path / "html" / "index.html").read_text()
    assert index.index("00 · Fine") < index.index("01 · Broken") and "failed: cell 4 of 4" in index
    assert "ran in smoke mode" in (tmp_path / "html" / "00_fine.html").read_text()


def test_format_table_columns(tmp_path):
    runs = [NotebookRun("00_a", "smoke", 1.25, True, None, tmp_path),
            NotebookRun("01_b", "full", 10.0, False, "cell 3 of 9: KeyError: 'x'", tmp_path)]
    lines = format_table(runs).splitlines()
    assert lines[0].split() == ["notebook", "mode", "seconds", "status"]
    assert lines[2].split() == ["00_a", "smoke", "1.2", "ok"] or lines[2].split() == ["00_a", "smoke", "1.3", "ok"]
    assert "FAILED: cell 3 of 9" in lines[3]
    assert lines[-1] == "2 notebooks, 1 failed, 11.2 s in all"


def test_record_times_fills_the_instructor_guide(tmp_path):
    from course_lib.tooling.runner import TIMES_END, TIMES_START, record_times

    report = {"date": "2026-11-22", "machine": "CPU only, 2 cores", "runs": [
        {"name": "00_a", "mode": "smoke", "seconds": 11.6, "ok": True, "error": None},
        {"name": "01_b", "mode": "smoke", "seconds": 20.2, "ok": False, "error": "cell 3"}]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    guide = tmp_path / "guide.md"
    guide.write_text(f"intro\n{TIMES_START}\nold\n{TIMES_END}\nrest\n")
    record_times(guide, [tmp_path / "r.json"])
    text = guide.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{TIMES_END}\nrest\n") and "old" not in text
    assert "| 00_a | smoke | 12 | ok |" in text and "| 01_b | smoke | 20 | FAILED |" in text
    assert "| all 2 | | 32 | |" in text and "CPU only, 2 cores" in text
    with pytest.raises(Exception, match="no block"):
        record_times(tmp_path / "r.json", [tmp_path / "r.json"])
    scaled = {**report, "scale": 0.05}
    (tmp_path / "s.json").write_text(json.dumps(scaled))
    record_times(guide, [tmp_path / "r.json", tmp_path / "s.json"])
    text = guide.read_text()
    assert "Measured by `make course` on 2026-11-22" in text and "Measured in full mode at `COURSE_SCALE=0.05`" in text


def test_report_records_the_scale_of_a_scaled_run(tmp_path, monkeypatch):
    from course_lib.tooling.runner import write_report

    runs = [NotebookRun("00_a", "full", 1.0, True, None, tmp_path)]
    monkeypatch.setenv("COURSE_SCALE", "0.05")
    assert json.loads(write_report(runs, tmp_path).read_text())["scale"] == 0.05
    monkeypatch.delenv("COURSE_SCALE")
    assert "scale" not in json.loads(write_report(runs, tmp_path).read_text())


def test_instructor_guide_records_every_notebook(repo):
    """The guide's run-time table was written by --record-times from a run of the whole course."""
    import re

    from course_lib.tooling.course_map import course_notebooks
    from course_lib.tooling.runner import TIMES_END, TIMES_START

    text = (repo / "slides" / "INSTRUCTOR.md").read_text()
    block = text.split(TIMES_START, 1)[1].split(TIMES_END, 1)[0]
    names = re.findall(r"^\| (\d\d_[a-z0-9_]+) \| (smoke|full) \| \d+ \| ok \|$", block, re.MULTILINE)
    smoke = [n for n, mode in names if mode == "smoke"]
    assert smoke == [p.stem for p in course_notebooks()], "record a complete smoke run of make course"
