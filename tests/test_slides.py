"""Slide decks: one per notebook, self-contained HTML, rendered in headless Chromium.

The decks show figures from the executed notebooks (``build/test-notebooks/``, written by
``test_notebooks.py`` earlier in the run). Title-slide screenshots are kept in
``build/test-slides/`` for a look.
"""

from __future__ import annotations

import io
import re

import nbformat
import pytest

from course_lib.tooling.course_map import course_notebooks
from course_lib.tooling.slides import (FIGURES, SlideError, TAG_PREFIX, build_decks, notebook_references, parse_deck,
                               render_deck)


def _decks(repo):
    return sorted((repo / "slides").glob("[0-9][0-9]_*.md"))


def test_one_deck_per_notebook_with_notes(repo):
    assert [p.stem for p in _decks(repo)] == [p.stem for p in course_notebooks()]
    for deck in _decks(repo):
        slides = parse_deck(deck.read_text(), deck.name)
        assert 5 <= len(slides) <= 14, f"{deck.name}: {len(slides)} slides"
        title = slides[0][0].splitlines()[0]
        number = deck.name[:2]
        assert title.startswith(f"# {number} · "), f"{deck.name}: title slide must start '# {number} · '"
        assert all(notes for _, notes in slides), f"{deck.name}: every slide needs speaker notes"


def test_every_notebook_figure_exists_in_its_notebook(repo):
    """Without executing anything: each ``notebook:NAME/TAG`` names a notebook and exactly one tagged cell."""
    shown = 0
    for deck in _decks(repo):
        text = deck.read_text()
        for name, tag in notebook_references(text):
            path = repo / "notebooks" / f"{name}.ipynb"
            assert path.is_file(), f"{deck.name}: no notebook {name}"
            cells = [c for c in nbformat.read(path, as_version=4).cells
                     if TAG_PREFIX + tag in c.metadata.get("tags", [])]
            assert len(cells) == 1 and cells[0].cell_type == "code", f"{deck.name}: {name} cells tagged {tag}"
            shown += 1
        for name in re.findall(r"\]\(figure:([a-z_]+)\)", text):
            assert name in FIGURES
    assert shown >= 10, "the decks should show what the notebooks measured"


@pytest.fixture(scope="module")
def built_decks(repo, executed_notebooks, tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    return build_decks(repo / "slides", out, executed=executed_notebooks.folder, mode="smoke")


def test_decks_build_self_contained(repo, built_decks):
    sources = _decks(repo)
    assert [p.stem for p in built_decks] == [p.stem for p in sources]
    for deck, source in zip(built_decks, sources):
        page = deck.read_text()
        text = source.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), f"{deck.name} loads something remote"
        assert "<link" not in page and "@import" not in page and "<script src" not in page
        slides = len(parse_deck(text))
        assert f'data-slide-count="{slides}"' in page and page.count('<section class="slide') == slides
        figures = len(re.findall(r"\]\(figure:", text)) + len(notebook_references(text))
        embedded = page.count('<img class="figure"') + page.count('<div class="table"')
        assert embedded == figures, f"{deck.name}: {embedded} of {figures} figures embedded"
        assert page.count("data:image/png;base64,") == page.count('<img class="figure"')
    assert (built_decks[0].parent / "index.html").is_file()


def test_decks_render_in_chromium(repo, built_decks, visit):
    from PIL import Image, ImageStat

    shots = repo / "build" / "test-slides"
    shots.mkdir(parents=True, exist_ok=True)
    for deck in built_decks:
        page = visit(deck.as_uri())
        count = int(page.page.get_attribute("body", "data-slide-count"))
        assert page.page.locator("section.slide").count() == count
        assert page.page.locator("section.slide.active").count() == 1
        title = page.page.locator("section.slide.active").screenshot(path=str(shots / f"{deck.stem}.png"))
        image = Image.open(io.BytesIO(title)).convert("L")
        assert max(ImageStat.Stat(image).stddev) > 10, f"{deck.name}: the title slide looks blank"
        overflowing = []
        for number in range(1, count + 1):
            assert page.page.inner_text("#counter") == f"{number} / {count}"
            if page.page.evaluate("(() => { const s = document.querySelector('section.slide.active');"
                                  " return [s, ...s.querySelectorAll('div.table')].some(e =>"
                                  " e.scrollHeight > e.clientHeight + 2 || e.scrollWidth > e.clientWidth + 2); })()"):
                overflowing.append(number)  # the slide, or a table that would need scrolling to be read
            page.page.keyboard.press("ArrowRight")
        assert not overflowing, f"{deck.name}: slides {overflowing} do not fit the screen"
        page.page.keyboard.press("n")
        assert page.page.locator("aside.notes.active").is_visible(), f"{deck.name}: notes do not show"
        assert not page.errors, f"{deck.name}: script errors {page.errors}"
        assert not page.remote, f"{deck.name}: tried to fetch {page.remote}"


def test_bad_decks_name_the_problem(tmp_path):
    with pytest.raises(SlideError, match="unknown slide figure 'nope'"):
        render_deck("# T\n\n![x](figure:nope)")
    with pytest.raises(SlideError, match="deck.md: slide 2 is empty"):
        parse_deck("# T\n---\n\n---\nthird", "deck.md")
    from course_lib.tooling.slides import ExecutedNotebooks

    with pytest.raises(SlideError, match=r"deck.md: notebook 01_data has 0 cells tagged 'slide-nope'"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
        folder = tmp_path / "executed"
        folder.mkdir()
        nbformat.write(nb, folder / "01_data.ipynb")
        render_deck("# T\n\n![x](notebook:01_data/nope)", "deck.md", notebooks=ExecutedNotebooks(folder))
    with pytest.raises(SlideError, match="missing or older"):
        render_deck("# T\n\n![x](notebook:02_backbones_and_features/x)", "deck.md",
                    notebooks=ExecutedNotebooks(tmp_path / "none", execute=False))


def test_notes_are_split_from_slides():
    slides = parse_deck("# Title\nbody\nNote:\nsay hello\n---\n## Two")
    assert slides == [("# Title\nbody", "say hello"), ("## Two", "")]


def test_a_figure_skipped_on_real_data_shows_its_notice():
    from course_lib.tooling.slides import cell_figure_html

    cell = nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="skipped: the oracle reference. s-Aff-Wild2 has no ground_truth/<video>.npz: ...\n")])
    html_ = cell_figure_html(cell, "oracle", "deck.md")
    assert 'class="skipped"' in html_ and "skipped: the oracle reference" in html_ and "&lt;video&gt;" in html_
    with pytest.raises(SlideError, match="no PNG or table output"):
        cell_figure_html(nbformat.v4.new_code_cell("x"), "oracle", "deck.md")
