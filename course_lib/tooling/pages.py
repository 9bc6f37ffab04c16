"""Executed notebooks as offline web pages, with an index (``make course`` writes ``build/html/``).

A student can read every result of the course without running anything: each executed
notebook is exported with nbconvert's JupyterLab template, minus everything that template
fetches from a CDN (require.js, MathJax, mermaid, the widget manager). Plotly figures carry
plotly.js inside the notebook (see :func:`course_lib.tooling.notebook.configure_plotly`), images are
embedded, and formulas are drawn by matplotlib's mathtext into inline SVG, so a page opens
from disk with no network. The index lists the notebooks with their idea, run time and status.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from jinja2 import DictLoader

from ..config import build_dir
from ..files import atomic_write
from .course_map import notebook_info

#: The JupyterLab template without the parts that load scripts from the internet.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
_COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
#: A local stand-in for Colab's badge image (the link itself stays).
_BADGE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20"><rect width="117" height="20" '
    'rx="3" fill="#555"/><rect x="0" width="20" height="20" rx="3" fill="#f9ab00"/><text x="66" y="14" '
    'fill="#fff" font-family="DejaVu Sans,Arial,sans-serif" font-size="11" text-anchor="middle">'
    'Open in Colab</text></svg>')
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$(?!\$)")


@dataclass(frozen=True)
class Page:
    """One exported notebook."""

    name: str
    title: str
    idea: str
    path: Path


def math_svg(tex: str, fontsize: float = 13.0) -> str | None:
    """A formula drawn by matplotlib's mathtext as an SVG string, or None where mathtext cannot."""
    # lazy: matplotlib takes about 1 s to import, for the formula images only
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.01, 0.01))
    fig.text(0, 0, f"${tex.strip()}$", fontsize=fontsize)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.02, transparent=True)
    except ValueError:  # mathtext does not know a command: leave the TeX as it is
        return None
    return buffer.getvalue().decode("utf-8")


def _math_to_images(markdown: str) -> str:
    def image(tex: str, display: bool) -> str | None:
        svg = math_svg(tex, 15.0 if display else 12.0)
        if svg is None:
            return None
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        style = "display:block;margin:.6em auto" if display else "vertical-align:middle"
        return (f'<img class="math" alt="{html.escape(tex.strip())}" style="{style}" '
                f'src="data:image/svg+xml;base64,{data}">')

    def display(match: re.Match) -> str:
        return image(match.group(1), True) or match.group(0)

    def inline(match: re.Match) -> str:
        return image(match.group(1), False) or match.group(0)

    parts = re.split(r"(```.*?```|`[^`\n]*`)", markdown, flags=re.DOTALL)  # never touch code
    return "".join(p if i % 2 else _INLINE_MATH.sub(inline, _DISPLAY_MATH.sub(display, p))
                   for i, p in enumerate(parts))


def _exporter():
    # lazy: nbconvert (about 4 s) and nbformat (about 3 s) only when pages are written
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"course.html.j2": _TEMPLATE})],
                        template_file="course.html.j2")


def notebook_page(executed: Path | "nbformat.NotebookNode", exporter=None) -> str:  # noqa: F821
    """The offline HTML of one executed notebook (a path, or the notebook already read)."""
    # lazy: nbconvert (about 4 s) and nbformat (about 3 s) only when pages are written
    import nbformat

    nb = nbformat.read(executed, as_version=4) if isinstance(executed, (str, Path)) else copy.deepcopy(executed)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _math_to_images(cell.source)
    nb.metadata.pop("widgets", None)  # widget state is not saved by papermill; nothing to restore
    body, _ = (exporter or _exporter()).from_notebook_node(nb)
    badge = "data:image/svg+xml;base64," + base64.b64encode(_BADGE_SVG.encode()).decode("ascii")
    return body.replace(_COLAB_BADGE, badge)


def remote_loads(page: str) -> list[str]:
    """Addresses a page would fetch from the network (scripts, styles, images, frames)."""
    pattern = r"""<(?:script|img|link|iframe|source|audio|video)\b[^>]*?\b(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    found = re.findall(pattern, page, flags=re.IGNORECASE)
    found += re.findall(r"""@import\s+(?:url\()?["']?((?:https?:)?//[^"')\s]+)""", page)
    return sorted(set(found))


def _inline_code(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _index(pages: list[Page], report: dict | None) -> str:
    runs = {r["name"]: r for r in (report or {}).get("runs", [])}
    rows = []
    for page in pages:
        run = runs.get(page.name)
        timing = f"{run['seconds']:.0f} s ({run['mode']})" if run else ""
        status = ("ok" if run["ok"] else f"failed: {html.escape(run['error'] or '')}") if run else ""
        rows.append(f'<tr><td><a href="{page.path.name}">{html.escape(page.title)}</a></td>'
                    f"<td>{_inline_code(page.idea)}</td><td>{timing}</td><td>{status}</td></tr>")
    machine = ""
    if report and report.get("machine"):
        machine = f"<p class=\"machine\">Executed on {html.escape(report['machine'])}.</p>"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Executed course notebooks</title>"
            "<style>body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em auto;max-width:1100px;color:#1d2731}"
            "h1{color:#2a9d8f}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
            "padding:.45em .6em;text-align:left;vertical-align:top}th{background:#eef1f4}.machine{color:#6c757d}"
            "</style></head><body><h1>Multi-task facial affect analysis: the executed notebooks</h1>"
            "<p>Every page shows a notebook as <code>make course</code> ran it: all figures and numbers were "
            "computed in that run. Slides: <a href=\"../slides/index.html\">../slides/</a>.</p>" + machine
            + "<table><thead><tr><th>notebook</th><th>idea</th><th>run time</th><th>status</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></body></html>\n")


def export_pages(executed_dir: Path | None = None, out_dir: Path | None = None,
                 report: dict | None = None) -> list[Page]:
    """Export every executed ``NN_*.ipynb`` of ``executed_dir`` to ``out_dir`` and write ``index.html``.

    ``report`` (as written by ``make course`` to ``course_report.json``) adds run times to
    the index; by default it is read from ``executed_dir`` when present.
    """
    executed_dir = Path(executed_dir) if executed_dir is not None else build_dir() / "notebooks"
    out_dir = Path(out_dir) if out_dir is not None else build_dir() / "html"
    sources = sorted(executed_dir.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"{executed_dir}: no executed notebooks NN_*.ipynb (run make course)")
    if report is None and (executed_dir / "course_report.json").is_file():
        report = json.loads((executed_dir / "course_report.json").read_text(encoding="utf-8"))
    # lazy: nbconvert (about 4 s) and nbformat (about 3 s) only when pages are written
    import nbformat

    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = _exporter()
    pages = []
    for source in sources:
        nb = nbformat.read(source, as_version=4)
        info = notebook_info(nb, source)
        target = out_dir / f"{source.stem}.html"
        atomic_write(target, notebook_page(nb, exporter))
        pages.append(Page(name=source.stem, title=f"{info.number:02d} · {info.title}", idea=info.idea,
                          path=target))
    atomic_write(out_dir / "index.html", _index(pages, report))
    return pages
