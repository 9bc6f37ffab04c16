"""Executed notebooks as offline HTML pages with an index, opened in headless Chromium."""

from __future__ import annotations

import json

import nbformat
import pytest

from course_lib.tooling.course_map import course_notebooks
from course_lib.tooling.pages import export_pages, math_svg, notebook_page, remote_loads


def test_math_is_drawn_locally():
    svg = math_svg(r"\frac{2 s_{xy}}{s_x^2 + s_y^2}")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<path" in svg
    assert math_svg(r"\notacommand{x}") is None


def test_remote_loads_are_found():
    page = ('<script src="https://cdn.example/a.js"></script><img alt="x" src="//cdn.example/b.png">'
            '<a href="https://colab.research.google.com/x">a link is not a load</a><img src="data:image/png;base64,AA">')
    assert remote_loads(page) == ["//cdn.example/b.png", "https://cdn.example/a.js"]


def test_a_page_loads_nothing_remote(tmp_path):
    """Plotly, a formula and the Colab badge: all drawn from the page itself."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from course_lib.tooling.notebook import configure_plotly

    configure_plotly()
    renderer = pio.renderers["course_notebook"]
    figure = renderer.to_mimebundle(go.Figure(go.Bar(y=[1, 3])).to_dict())
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 00 · T\n\n[![Open In Colab](https://colab.research.google.com/assets/"
                                      "colab-badge.svg)](https://colab.research.google.com/x)\n\n"
                                      "**Idea:** i\n\n$$CCC = \\frac{2 s_{xy}}{s_x^2 + s_y^2}$$ and `$x$` in code"),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output("display_data", data=figure)]),
    ])
    path = tmp_path / "00_t.ipynb"
    nbformat.write(nb, path)
    page = notebook_page(path)
    assert remote_loads(page) == []
    assert 'class="math"' in page and "<code>$x$</code>" in page
    assert "Plotly.newPlot" in page and "https://colab.research.google.com/x" in page


@pytest.fixture(scope="module")
def pages(executed_notebooks, tmp_path_factory):
    for source in course_notebooks():
        executed_notebooks.get(source.stem)  # executes a missing or outdated copy
    out = tmp_path_factory.mktemp("html")
    report = {"machine": "test machine", "runs": [{"name": p.stem, "mode": "smoke", "seconds": 1.0, "ok": True,
                                                   "error": None} for p in course_notebooks()]}
    return export_pages(executed_notebooks.folder, out, report=report), executed_notebooks.folder


def test_every_executed_notebook_is_a_page(pages):
    exported, folder = pages
    assert [p.name for p in exported] == [p.stem for p in course_notebooks()]
    for page in exported:
        text = page.path.read_text()
        assert remote_loads(text) == [], page.name
        assert text.count("plotly.js v") <= 1, f"{page.name}: plotly.js embedded more than once"
        assert page.path.stat().st_size < 25e6, f"{page.name}: {page.path.stat().st_size / 1e6:.0f} MB"
    index = (exported[0].path.parent / "index.html").read_text()
    assert all(f'href="{p.path.name}"' in index for p in exported) and "test machine" in index


def _plotly_outputs(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_pages_render_in_chromium(pages, visit):
    exported, folder = pages
    index = visit((exported[0].path.parent / "index.html").as_uri())
    links = index.page.locator("table a")
    assert links.count() == len(exported)
    links.nth(5).click()  # follow a link like a student: 05, plotly curves and matplotlib figures
    index.page.wait_for_load_state("load")
    assert index.page.url.endswith(exported[5].path.name)
    for page_info in exported:
        page = visit(page_info.path.as_uri())
        plots = _plotly_outputs(folder / f"{page_info.name}.ipynb")
        page.page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {plots}",
                                    timeout=20000)
        drawn = page.page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert drawn == plots, f"{page_info.name}: {drawn} of {plots} plotly figures drawn"
        images = page.page.evaluate("Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt])")
        assert images and all(ok for ok, _ in images), f"{page_info.name}: images not shown {images}"
        assert "Traceback" not in page.page.inner_text("body")
        assert not page.errors, f"{page_info.name}: script errors {page.errors}"
        assert not page.remote, f"{page_info.name}: tried to fetch {page.remote}"
    assert not index.errors and not index.remote
