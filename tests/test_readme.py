"""The README is the contract: its commands exist and its course map matches the notebooks."""

from __future__ import annotations

import re

from course_lib.tooling.course_map import course_map_markdown


def test_two_commands_at_the_top(repo):
    readme = (repo / "README.md").read_text()
    top = readme[: readme.index("## Course map")]
    assert "make course" in top and "make test" in top
    makefile = (repo / "Makefile").read_text()
    for target in ("course", "test", "lab", "slides"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_ci_runs_the_readme_test_command(repo):
    ci = (repo / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert "HF_HUB_OFFLINE=1" in ci


def test_course_map_is_current(repo):
    readme = (repo / "README.md").read_text()
    assert course_map_markdown() in readme, "regenerate with: .venv/bin/python -m course_lib.tooling.course_map"


def test_generated_files_are_ignored(repo):
    ignored = (repo / ".gitignore").read_text().split()
    for pattern in (".venv/", "build/", "data/*", "!data/README.md"):
        assert pattern in ignored
