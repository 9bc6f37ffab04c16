"""The course map: which notebooks exist, their titles and one-line ideas.

Shown in ``00_welcome_and_setup`` and the README. Nothing is typed twice: the map is read
from the notebooks themselves. Each notebook's first markdown cell starts with a heading
``# NN · Title`` and holds a line ``**Idea:** ...``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import repo_root

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_([a-z0-9_]+)\.ipynb$")
_TITLE = re.compile(r"^#\s+(\d{2})\s*·\s*(.+?)\s*$", re.MULTILINE)
_IDEA = re.compile(r"^\*\*Idea:\*\*\s*(.+?)\s*(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)  # one paragraph


@dataclass(frozen=True)
class NotebookInfo:
    number: int
    name: str
    title: str
    idea: str
    path: Path


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def course_notebooks(folder: Path | None = None) -> list[Path]:
    """The course notebooks ``NN_topic.ipynb`` of ``folder``, in course order."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def read_notebook_info(path: Path) -> NotebookInfo:
    """Title and idea of one notebook, from its first markdown cell.

    In an executed copy, the error cell papermill puts on top of a failed notebook is skipped.
    """
    path = Path(path)
    return notebook_info(json.loads(path.read_text(encoding="utf-8")), path)


def notebook_info(nb: dict, path: Path) -> NotebookInfo:
    """Title and idea from a notebook already read (a dict or nbformat node) that lives at ``path``."""
    path = Path(path)
    first_md = next((c for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
                     and "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])), None)
    if first_md is None:
        raise ValueError(f"{path}: no markdown cell; the first one must hold '# NN · Title'")
    text = "".join(first_md["source"]) if isinstance(first_md["source"], list) else first_md["source"]
    title, idea = _TITLE.search(text), _IDEA.search(text)
    if title is None:
        raise ValueError(f"{path}: first markdown cell lacks a '# NN · Title' heading")
    if idea is None:
        raise ValueError(f"{path}: first markdown cell lacks an '**Idea:** ...' line")
    return NotebookInfo(number=int(title.group(1)), name=path.stem, title=title.group(2),
                        idea=" ".join(idea.group(1).split()), path=path)


def course_map(folder: Path | None = None) -> "pandas.DataFrame":  # noqa: F821
    """A table of the notebooks present: number, notebook, title, idea."""
    rows = [read_notebook_info(p) for p in course_notebooks(folder)]
    return pd.DataFrame(
        {"#": [f"{r.number:02d}" for r in rows], "notebook": [r.name for r in rows],
         "title": [r.title for r in rows], "idea": [r.idea for r in rows]}
    )


def course_map_markdown(folder: Path | None = None) -> str:
    """The course map as a Markdown table (the README's copy is checked against it)."""
    table = course_map(folder)
    lines = ["| # | notebook | idea |", "| --- | --- | --- |"]
    for _, row in table.iterrows():
        lines.append(f"| {row['#']} | [{row['title']}](notebooks/{row['notebook']}.ipynb) | {row['idea']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(course_map_markdown())
