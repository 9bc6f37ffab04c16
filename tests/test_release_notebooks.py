"""Every notebook on a folder laid out like the real s-Aff-Wild2 release (``make test-release``).

The copy is made from the smoke-mode SynthAffWild with ``export_release_layout``: real video
names, runs of frames missing, and no metadata, ground truth or audio. Each notebook must finish,
and where a step needs what the release lacks it must say so in one line. Executed copies are kept
in ``build/test-release-notebooks/``. This runs as its own CI step (``.ci/run``) to keep
``make test`` under 20 minutes on 2 cores.
"""

from __future__ import annotations

import os

import nbformat
import pytest

from course_lib.tooling.course_map import course_notebooks
from course_lib.data.release import export_release_layout
from course_lib.data.synth import synthetic_course_data
from course_lib.tooling.execution import execute_notebook

NOTEBOOKS = course_notebooks()
#: The one-line notices each notebook must print on a release copy.
SKIPS = {"01_data": ["the oracle", "the sound track"], "02_backbones_and_features": ["the AU probe"],
         "03_cross_attention": ["the AU regions", "the region ratios"], "04_au_graph": ["the oracle reference"],
         "05_progressive_training": ["the oracle reference"], "06_temporal_modeling": ["the oracle reference"],
         "07_multimodal_audio": ["the sound of"], "08_evaluation": ["the '+ audio' step", "the test score"],
         "09_explanations": ["the AU regions", "the localisation table"]}


@pytest.fixture(scope="module")
def release_copy(test_tmp):
    """A release-layout copy of the smoke data; the notebooks see it as ``COURSE_DATA``."""
    source = synthetic_course_data("smoke", progress_bar=False)  # reused when the smoke notebooks made it
    target = test_tmp / "release" / "s-Aff-Wild2"
    if not target.exists():
        export_release_layout(source, target, seed=11)
        # notebook 07 falls back on SynthAffWild's voices: let it find the smoke set already made
        (target / "synth-smoke").symlink_to(source, target_is_directory=True)
    before = os.environ["COURSE_DATA"]
    os.environ["COURSE_DATA"] = str(target)  # papermill kernels inherit it
    yield target
    os.environ["COURSE_DATA"] = before


@pytest.mark.release
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_release_layout_copy(path, repo, release_copy):
    run = execute_notebook(path, repo / "build" / "test-release-notebooks", mode="smoke", cell_timeout=300)
    assert run.ok, f"{path.name} failed on the release copy at {run.error} (executed copy: {run.output})"
    executed = nbformat.read(run.output, as_version=4)
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.output_type == "stream")
    skipped = [line for line in text.splitlines() if line.startswith("skipped: ")]
    for step in SKIPS.get(path.stem, []):
        assert any(line.startswith(f"skipped: {step}") for line in skipped), f"{path.name}: no notice for {step!r}"
    assert all("lack" in line or "has no" in line for line in skipped)  # each says what is missing


@pytest.mark.release
def test_slides_and_pages_build_from_the_release_run(repo, tmp_path):
    """``make course`` on a real copy also builds the decks and pages: a figure a notebook skipped
    shows its one-line notice instead."""
    from course_lib.tooling.pages import export_pages
    from course_lib.tooling.slides import build_decks

    executed = repo / "build" / "test-release-notebooks"
    decks = build_decks(out_dir=tmp_path / "slides", executed=executed, execute=False)
    assert len(decks) == len(NOTEBOOKS)
    assert 'class="skipped"' in (tmp_path / "slides" / "01_data.html").read_text()
    assert len(export_pages(executed, tmp_path / "html")) == len(NOTEBOOKS)
