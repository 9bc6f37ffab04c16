"""Build the slide decks in ``slides/*.md`` into self-contained HTML (``make slides``).

A deck is Markdown with slides separated by a line ``---``. Lines after a line ``Note:`` are
speaker notes (press ``n`` while presenting). ``![caption](figure:NAME)`` inserts a figure
drawn by the course's own code (see :data:`FIGURES`), embedded as a PNG.
``![caption](notebook:NN_name/TAG)`` inserts what a notebook computed: the first PNG (or, failing
that, the table) output by the cell tagged ``slide-TAG`` in the *executed* copy of that
notebook (``build/notebooks/``, written by ``make course``); a missing or outdated copy is
executed first. So every result on a slide was measured by the course's code, never typed.
The HTML inlines its style and script: it opens offline, with no CDN. Arrow keys or space
move between slides, ``n`` shows the notes, ``#5`` in the address opens slide 5.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from collections.abc import Callable
from pathlib import Path

import mistune

from .. import diagrams
from ..config import build_dir, repo_root, resolve_mode
from ..diagrams import figure_to_png
from ..files import atomic_write
from .course_map import notebooks_dir
from .execution import execute_notebook

_FIGURE = re.compile(r"!\[([^\]]*)\]\(figure:([a-z_]+)\)")
_NOTEBOOK_FIGURE = re.compile(r"!\[([^\]]*)\]\(notebook:(\d\d_[a-z0-9_]+)/([a-z0-9-]+)\)")
#: Cells whose output a deck may show carry the tag ``slide-NAME``.
TAG_PREFIX = "slide-"


class SlideError(ValueError):
    """A deck refers to something that does not exist (figure, notebook, tagged cell)."""


def _figures() -> dict[str, Callable[[], object]]:
    return {"pipeline_diagram": diagrams.pipeline_diagram, "task_panels": diagrams.task_panels,
            "au_atlas": diagrams.au_atlas}


#: Names usable as ``figure:NAME`` in a deck.
FIGURES = ("pipeline_diagram", "task_panels", "au_atlas")

_STYLE = """
:root { --accent: #2a9d8f; --ink: #1d2731; --muted: #6c757d; }
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; background: #f4f6f8; color: var(--ink);
  font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
.deck { height: 100%; display: flex; align-items: center; justify-content: center; }
section.slide { display: none; width: min(96vw, 170vh); height: min(54vw, 94vh); background: #fff;
  border-top: 8px solid var(--accent); box-shadow: 0 4px 24px rgba(0,0,0,.12);
  padding: 3.2% 4.5%; overflow: hidden; font-size: min(2.1vw, 3.7vh); }
section.slide.active { display: flex; flex-direction: column; }
section.slide.title { justify-content: center; text-align: center; }
section.slide.title h1 { font-size: 2.3em; }
h1 { font-size: 1.7em; margin: 0 0 .4em; color: var(--accent); }
h2 { font-size: 1.35em; margin: 0 0 .5em; color: var(--accent); }
li { margin: .25em 0; }
code { background: #eef1f4; padding: 0 .2em; border-radius: 3px; }
pre { background: #eef1f4; padding: .6em; border-radius: 6px; font-size: .62em; overflow: auto; }
img.figure { max-width: 100%; max-height: 76%; min-height: 0; object-fit: contain; margin: .3em auto; display: block; }
table { border-collapse: collapse; font-size: .85em; } td, th { border-bottom: 1px solid #ddd; padding: .2em .6em; }
.table { overflow: auto; max-width: 100%; max-height: 76%; font-size: .6em; margin: .3em auto; }
.table td, .table th { white-space: nowrap; }
.skipped { font-size: .5em; font-style: italic; max-width: 90%; margin: 1em auto; }
.footer { position: fixed; bottom: 8px; right: 16px; color: var(--muted); font-size: 13px; }
aside.notes { display: none; }
body.show-notes aside.notes.active { display: block; position: fixed; left: 0; right: 0; bottom: 0;
  max-height: 30vh; overflow: auto; background: #1d2731; color: #fff; padding: 10px 20px; font-size: 15px; }
@media print { section.slide { display: block !important; page-break-after: always; box-shadow: none; } }
"""

_SCRIPT = """
(function () {
  var slides = Array.prototype.slice.call(document.querySelectorAll('section.slide'));
  var notes = Array.prototype.slice.call(document.querySelectorAll('aside.notes'));
  var counter = document.getElementById('counter');
  var current = 0;
  function fitTables(slide) {  // shrink a wide or long table until it shows whole, without scrolling
    slide.querySelectorAll('div.table').forEach(function (t) {
      t.style.fontSize = '';
      var size = parseFloat(getComputedStyle(t).fontSize);
      while ((t.scrollWidth > t.clientWidth + 1 || t.scrollHeight > t.clientHeight + 1) && size > 7) {
        size *= 0.94; t.style.fontSize = size + 'px';
      }
    });
  }
  function show(i) {
    current = Math.max(0, Math.min(slides.length - 1, i));
    slides.forEach(function (s, k) { s.classList.toggle('active', k === current); });
    notes.forEach(function (n, k) { n.classList.toggle('active', k === current); });
    fitTables(slides[current]);
    counter.textContent = (current + 1) + ' / ' + slides.length;
    if (location.hash !== '#' + (current + 1)) { history.replaceState(null, '', '#' + (current + 1)); }
  }
  document.addEventListener('keydown', function (e) {
    if (['ArrowRight', 'PageDown', ' ', 'ArrowDown'].indexOf(e.key) >= 0) { show(current + 1); e.preventDefault(); }
    else if (['ArrowLeft', 'PageUp', 'ArrowUp'].indexOf(e.key) >= 0) { show(current - 1); e.preventDefault(); }
    else if (e.key === 'Home') { show(0); } else if (e.key === 'End') { show(slides.length - 1); }
    else if (e.key === 'n') { document.body.classList.toggle('show-notes'); }
  });
  window.addEventListener('resize', function () { fitTables(slides[current]); });
  document.addEventListener('click', function (e) { if (e.target.tagName !== 'A') { show(current + 1); } });
  var start = parseInt((location.hash || '#1').slice(1), 10);
  show(isNaN(start) ? 0 : start - 1);
  document.body.setAttribute('data-ready', 'yes');
})();
"""


def _markdown(text: str) -> str:
    return mistune.html(text)


def _embed_figures(text: str, cache: dict[str, str]) -> str:
    figures = _figures()

    def replace(match: re.Match) -> str:
        caption, name = match.group(1), match.group(2)
        if name not in figures:
            raise SlideError(f"unknown slide figure {name!r}; known: {', '.join(FIGURES)}")
        if name not in cache:
            cache[name] = base64.b64encode(figure_to_png(figures[name]())).decode("ascii")
        return (f'\n<img class="figure" alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{cache[name]}">\n')

    return _FIGURE.sub(replace, text)


def notebook_references(text: str) -> list[tuple[str, str]]:
    """The ``(notebook, tag)`` pairs a deck shows, in order."""
    return [(m.group(2), m.group(3)) for m in _NOTEBOOK_FIGURE.finditer(text)]


def tagged_cell(notebook, name: str, tag: str, source: str = "<deck>"):
    """The one cell of ``notebook`` tagged ``slide-TAG``; a clear error when there is none or several."""
    cells = [c for c in notebook.cells if TAG_PREFIX + tag in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SlideError(f"{source}: notebook {name} has {len(cells)} cells tagged "
                         f"'{TAG_PREFIX}{tag}' (need exactly one)")
    return cells[0]


_PANDAS_STYLE = re.compile(r"<style scoped>.*?</style>", re.S)


def cell_figure_html(cell, caption: str, where: str) -> str:
    """The first PNG of a cell's outputs as an ``<img>``, else its first HTML table, else the one-line
    notice of a step that was skipped because the data lacks what it needs."""
    outputs = cell.get("outputs", [])
    for output in outputs:
        png = output.get("data", {}).get("image/png")
        if png:
            data = png if isinstance(png, str) else "".join(png)
            return (f'\n<img class="figure" alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data.strip()}">\n')
    for output in outputs:
        table = output.get("data", {}).get("text/html")
        table = "".join(table) if isinstance(table, list) else table
        if table and "<table" in table and "<script" not in table:
            table = _PANDAS_STYLE.sub("", table)  # the deck styles tables; its indented CSS would read as code
            return f'\n<div class="table" title="{html.escape(caption)}">{table}</div>\n'
    for output in outputs:  # run on data that lacks what the figure needs (a real-release copy): say so
        text = output.get("text", "")
        text = "".join(text) if isinstance(text, list) else text
        skipped = [line for line in text.splitlines() if line.startswith("skipped: ")]
        if skipped:
            return f'\n<p class="skipped" title="{html.escape(caption)}">{html.escape(skipped[0])}</p>\n'
    raise SlideError(f"{where}: the cell has no PNG or table output (was the notebook executed?)")


class ExecutedNotebooks:
    """Executed copies of the course notebooks, executing (smoke or auto mode) whichever is missing.

    A copy counts when it is newer than its source notebook and finished without error.
    """

    def __init__(self, folder: Path | None = None, *, mode: str = "auto", execute: bool = True):
        self.folder = Path(folder) if folder is not None else build_dir() / "notebooks"
        self.mode, self.execute = mode, execute
        self._loaded: dict[str, object] = {}

    @staticmethod
    def _read_fresh(source: Path, copy: Path):
        """The executed copy, or None when it is missing, older than ``source`` or failed."""
        # lazy: nbformat takes about 3 s to import, only when executed notebooks are read
        import nbformat

        if not copy.is_file() or copy.stat().st_mtime < source.stat().st_mtime:
            return None
        nb = nbformat.read(copy, as_version=4)
        failed = any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
        return None if failed else nb

    def get(self, name: str, source: str = "<deck>"):
        # lazy: nbformat takes about 3 s to import, only when executed notebooks are read
        import nbformat

        if name in self._loaded:
            return self._loaded[name]
        original = notebooks_dir() / f"{name}.ipynb"
        if not original.is_file():
            raise SlideError(f"{source}: no notebook {original}")
        copy = self.folder / original.name
        nb = self._read_fresh(original, copy)
        if nb is None:
            if not self.execute:
                raise SlideError(f"{source}: {copy} is missing or older than {original.name}; run make course")
            mode = resolve_mode(self.mode)
            print(f"  executing {original.name} ({mode}) for its figures ...", flush=True)
            run = execute_notebook(original, self.folder, mode=mode)
            if not run.ok:
                raise SlideError(f"{source}: executing {original.name} failed at {run.error}")
            nb = nbformat.read(copy, as_version=4)
        self._loaded[name] = nb
        return nb


def _embed_notebook_figures(text: str, source: str, notebooks: ExecutedNotebooks | None) -> str:
    def replace(match: re.Match) -> str:
        caption, name, tag = match.groups()
        if notebooks is None:
            raise SlideError(f"{source}: shows notebook:{name}/{tag} but no executed notebooks were given")
        cell = tagged_cell(notebooks.get(name, source), name, tag, source)
        return cell_figure_html(cell, caption, f"{source}: {name}, cell tagged '{TAG_PREFIX}{tag}'")

    return _NOTEBOOK_FIGURE.sub(replace, text)


def parse_deck(text: str, source: str = "<deck>") -> list[tuple[str, str]]:
    """Split a deck into ``(markdown, notes)`` per slide."""
    slides = []
    for number, chunk in enumerate(re.split(r"^---\s*$", text, flags=re.MULTILINE), start=1):
        body, _, notes = chunk.partition("\nNote:")
        if not body.strip():
            raise SlideError(f"{source}: slide {number} is empty")
        slides.append((body.strip(), notes.strip()))
    return slides


def deck_title(text: str, default: str) -> str:
    """A deck's title: its first ``# `` heading."""
    return next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), default)


def render_deck(text: str, source: str = "<deck>", figure_cache: dict[str, str] | None = None,
                notebooks: ExecutedNotebooks | None = None) -> str:
    """The self-contained HTML of one deck."""
    cache = figure_cache if figure_cache is not None else {}
    slides = parse_deck(text, source)
    title = deck_title(slides[0][0], source)
    sections, asides = [], []
    for i, (body, notes) in enumerate(slides):
        cls = "slide title" if i == 0 else "slide"
        body = _embed_notebook_figures(_embed_figures(body, cache), source, notebooks)
        sections.append(f'<section class="{cls}" data-index="{i + 1}">{_markdown(body)}</section>')
        asides.append(f'<aside class="notes">{_markdown(notes or "(no notes)")}</aside>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body data-slide-count=\"{len(slides)}\"><div class=\"deck\">"
        + "\n".join(sections) + "</div>\n" + "\n".join(asides)
        + f'<div class="footer"><span id="counter"></span> · press n for notes</div>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def build_decks(source_dir: Path | None = None, out_dir: Path | None = None, *,
                executed: Path | None = None, mode: str = "auto", execute: bool = True) -> list[Path]:
    """Render every ``NN_*.md`` deck of ``source_dir`` into ``out_dir`` plus an ``index.html``.

    Notebook figures come from the executed copies in ``executed`` (default
    ``build/notebooks/``); missing ones are executed in ``mode`` unless ``execute`` is false.
    """
    source_dir = Path(source_dir) if source_dir is not None else repo_root() / "slides"
    out_dir = Path(out_dir) if out_dir is not None else build_dir() / "slides"
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = ExecutedNotebooks(executed, mode=mode, execute=execute)
    cache: dict[str, str] = {}
    built, titles = [], []
    for deck in sorted(source_dir.glob("[0-9][0-9]_*.md")):
        target = out_dir / f"{deck.stem}.html"
        text = deck.read_text(encoding="utf-8")
        atomic_write(target, render_deck(text, str(deck), cache, notebooks))
        built.append(target)
        titles.append(deck_title(text, deck.stem))
    items = "".join(f'<li><a href="{p.name}">{html.escape(t)}</a></li>' for p, t in zip(built, titles))
    atomic_write(out_dir / "index.html",
                 "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Course slides</title>"
                 f"<style>{_STYLE} body{{padding:2em}}</style></head><body><h1>Course slides</h1>"
                 f"<ul>{items}</ul></body></html>\n")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tooling.slides", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="auto", help="mode for notebooks executed for their figures")
    parser.add_argument("--executed", type=Path, default=None, help="folder of executed notebooks")
    args = parser.parse_args(argv)
    try:
        decks = build_decks(executed=args.executed, mode=args.mode)
    except SlideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for deck in decks:
        print(f"built {deck}")
    print(f"{len(decks)} decks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
