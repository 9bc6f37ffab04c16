"""Build the slide decks in ``slides/*.md`` into self-contained HTML (``make slides``).

A deck is Markdown with slides separated by a line ``---``. Lines after a line ``Note:`` are
speaker notes (press ``n`` while presenting). ``![caption](figure:NAME)`` inserts a figure
drawn by the course's own code (see :data:`FIGURES`), embedded as a PNG. The HTML inlines
its style and script: it opens offline, with no CDN. Arrow keys or space move between
slides, ``n`` shows the notes, ``#5`` in the address opens slide 5.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

from .config import build_dir, repo_root

_FIGURE = re.compile(r"!\[([^\]]*)\]\(figure:([a-z_]+)\)")


def _figures() -> dict[str, Callable[[], object]]:
    from . import diagrams

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
img.figure { max-width: 100%; max-height: 62%; object-fit: contain; margin: .3em auto; display: block; }
table { border-collapse: collapse; font-size: .85em; } td, th { border-bottom: 1px solid #ddd; padding: .2em .6em; }
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
  function show(i) {
    current = Math.max(0, Math.min(slides.length - 1, i));
    slides.forEach(function (s, k) { s.classList.toggle('active', k === current); });
    notes.forEach(function (n, k) { n.classList.toggle('active', k === current); });
    counter.textContent = (current + 1) + ' / ' + slides.length;
    if (location.hash !== '#' + (current + 1)) { history.replaceState(null, '', '#' + (current + 1)); }
  }
  document.addEventListener('keydown', function (e) {
    if (['ArrowRight', 'PageDown', ' ', 'ArrowDown'].indexOf(e.key) >= 0) { show(current + 1); e.preventDefault(); }
    else if (['ArrowLeft', 'PageUp', 'ArrowUp'].indexOf(e.key) >= 0) { show(current - 1); e.preventDefault(); }
    else if (e.key === 'Home') { show(0); } else if (e.key === 'End') { show(slides.length - 1); }
    else if (e.key === 'n') { document.body.classList.toggle('show-notes'); }
  });
  document.addEventListener('click', function (e) { if (e.target.tagName !== 'A') { show(current + 1); } });
  var start = parseInt((location.hash || '#1').slice(1), 10);
  show(isNaN(start) ? 0 : start - 1);
  document.body.setAttribute('data-ready', 'yes');
})();
"""


def _markdown(text: str) -> str:
    import mistune

    return mistune.html(text)


def _embed_figures(text: str, cache: dict[str, str]) -> str:
    from .diagrams import figure_to_png

    figures = _figures()

    def replace(match: re.Match) -> str:
        caption, name = match.group(1), match.group(2)
        if name not in figures:
            raise ValueError(f"unknown slide figure {name!r}; known: {', '.join(FIGURES)}")
        if name not in cache:
            cache[name] = base64.b64encode(figure_to_png(figures[name]())).decode("ascii")
        return (f'\n<img class="figure" alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{cache[name]}">\n')

    return _FIGURE.sub(replace, text)


def parse_deck(text: str, source: str = "<deck>") -> list[tuple[str, str]]:
    """Split a deck into ``(markdown, notes)`` per slide."""
    slides = []
    for number, chunk in enumerate(re.split(r"^---\s*$", text, flags=re.MULTILINE), start=1):
        body, _, notes = chunk.partition("\nNote:")
        if not body.strip():
            raise ValueError(f"{source}: slide {number} is empty")
        slides.append((body.strip(), notes.strip()))
    return slides


def render_deck(text: str, source: str = "<deck>", figure_cache: dict[str, str] | None = None) -> str:
    """The self-contained HTML of one deck."""
    cache = figure_cache if figure_cache is not None else {}
    slides = parse_deck(text, source)
    title = next((ln[2:].strip() for ln in slides[0][0].splitlines() if ln.startswith("# ")), source)
    sections, asides = [], []
    for i, (body, notes) in enumerate(slides):
        cls = "slide title" if i == 0 else "slide"
        sections.append(f'<section class="{cls}" data-index="{i + 1}">'
                        f"{_markdown(_embed_figures(body, cache))}</section>")
        asides.append(f'<aside class="notes">{_markdown(notes or "(no notes)")}</aside>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body data-slide-count=\"{len(slides)}\"><div class=\"deck\">"
        + "\n".join(sections) + "</div>\n" + "\n".join(asides)
        + f'<div class="footer"><span id="counter"></span> · press n for notes</div>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def build_decks(source_dir: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    """Render every ``NN_*.md`` deck of ``source_dir`` into ``out_dir`` plus an ``index.html``."""
    source_dir = Path(source_dir) if source_dir is not None else repo_root() / "slides"
    out_dir = Path(out_dir) if out_dir is not None else build_dir() / "slides"
    out_dir.mkdir(parents=True, exist_ok=True)
    cache: dict[str, str] = {}
    built = []
    for deck in sorted(source_dir.glob("[0-9][0-9]_*.md")):
        target = out_dir / f"{deck.stem}.html"
        page = render_deck(deck.read_text(encoding="utf-8"), str(deck), cache)
        tmp = target.with_suffix(".html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
        built.append(target)
    items = "".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in built)
    (out_dir / "index.html").write_text(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Course slides</title>"
        f"<style>{_STYLE} body{{padding:2em}}</style></head><body><h1>Course slides</h1>"
        f"<ul>{items}</ul></body></html>\n", encoding="utf-8")
    return built


def main() -> int:
    decks = build_decks()
    for deck in decks:
        print(f"built {deck}")
    print(f"{len(decks)} decks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
