"""Progress bars that look right in JupyterLab, on Colab and in headless runs.

Used by every long loop of the course. In a live notebook the bar is a widget
(``tqdm.auto``); under papermill or CI (see :func:`course_lib.config.is_headless`) it is
plain text printed at most every few seconds, so executed notebooks stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from .config import is_headless

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             **kwargs: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar suited to where the code runs.

    Extra keyword arguments go to tqdm (``leave``, ``unit``, ...). Returns the tqdm object,
    so ``bar.set_postfix(loss=...)`` works in both modes.
    """
    if is_headless():
        # lazy: which tqdm depends on where the bar is shown (decided at each call)
        from tqdm import tqdm

        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 80)
    else:
        # lazy: which tqdm depends on where the bar is shown (decided at each call)
        from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, **kwargs)
