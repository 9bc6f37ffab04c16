"""Notebook hygiene: what every committed notebook must look like (see COURSE_DESIGN.md)."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from course_lib import exercises
from course_lib.config import REPO_SLUG
from course_lib.tooling.course_map import NOTEBOOK_PATTERN, course_notebooks, read_notebook_info

NOTEBOOKS = course_notebooks()


def _nb(path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks_and_numbering_is_contiguous(repo):
    assert NOTEBOOKS, "no notebooks found"
    numbers = [int(NOTEBOOK_PATTERN.match(p.name).group(1)) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))), f"numbering must be 00, 01, ... without gaps: {numbers}"
    strays = [p.name for p in (repo / "notebooks").glob("*.ipynb") if not NOTEBOOK_PATTERN.match(p.name)]
    assert not strays, f"notebooks not named NN_topic.ipynb: {strays}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_valid_stripped_python3(path):
    nb = _nb(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_defining_smoke(path):
    tagged = [c for c in _nb(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
    names = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert "SMOKE" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_title_idea_and_colab_badge(path):
    info = read_notebook_info(path)
    assert f"{info.number:02d}_" == path.name[:3], "the title's number must match the file name"
    first_md = next(c for c in _nb(path).cells if c.cell_type == "markdown").source
    badge = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{path.name}"
    assert f"({badge})" in first_md and "colab-badge.svg" in first_md


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_works_on_colab_without_touching_torch(path):
    cells = _nb(path).cells
    code = [c for c in cells if c.cell_type == "code"]
    setup = code[0].source
    assert '"google.colab" in sys.modules' in setup and "course_lib.tooling.colab" in setup
    assert "import course_lib" in setup
    assert "parameters" in code[1].metadata.get("tags", []), "the parameters cell follows the setup cell"
    assert re.search(r"setup_notebook\(smoke=SMOKE", code[2].source), "third code cell calls setup_notebook"
    for cell in code:
        assert not re.search(r"pip[^\n]*install[^\n]*\btorch\b", cell.source), "never reinstall torch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_are_checked(path):
    nb = _nb(path)
    text = "\n".join(c.source for c in nb.cells)
    assert re.search(r"^## Exercises", text, re.MULTILINE), f"{path.name} has no '## Exercises' section"
    used = set(re.findall(r'exercises\.check\("([^"]+)"', text))
    prefix = path.name[:2] + "."
    registered = {k for k in exercises.registry() if k.startswith(prefix)}
    assert used, f"{path.name} calls no checker"
    assert used == registered, f"{path.name}: checkers used {sorted(used)} vs registered {sorted(registered)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_that_train_ask_colab_for_a_gpu(path):
    """From 02 on every notebook trains or runs a backbone: Colab should open it on a (T4) GPU runtime."""
    number = int(NOTEBOOK_PATTERN.match(path.name).group(1))
    meta = _nb(path).metadata
    if number >= 2:
        assert meta.get("accelerator") == "GPU", f"{path.name}: metadata lacks accelerator: GPU"
        assert meta.get("colab", {}).get("gpuType") == "T4", f"{path.name}: metadata lacks colab.gpuType T4"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_sections_are_slides_for_rise(path):
    """Presenting a notebook live (RISE in JupyterLab): the title and every ``##`` section start a slide."""
    for cell in _nb(path).cells:
        starts = cell.cell_type == "markdown" and re.match(r"#{1,2} ", cell.source)
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        assert (kind == "slide") == bool(starts), f"{path.name}: {cell.source[:40]!r} slide_type {kind}"
