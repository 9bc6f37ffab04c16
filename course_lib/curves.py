"""Training curves: a history table as a figure, and a figure that redraws while a model trains.

Taught in ``03_cross_attention`` (reading a history) and ``05_progressive_training`` (live curves
while :func:`course_lib.train.fit` runs, interrupted and resumed).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .tooling.notebook import plotly_bundle


def plot_history(history: pd.DataFrame, title: str = "training") -> go.Figure:
    """A plotly figure: training loss per epoch and, when present, validation P_MTL and its parts."""
    has_val = "val_total" in history
    fig = make_subplots(rows=1, cols=2 if has_val else 1,
                        subplot_titles=("training loss", "validation P_MTL") if has_val else ("training loss",))
    fig.add_trace(go.Scatter(x=history.epoch, y=history.loss, name="loss", mode="lines+markers"), row=1, col=1)
    for key in ("loss_au", "loss_expr", "loss_va"):
        if key in history:
            fig.add_trace(go.Scatter(x=history.epoch, y=history[key], name=key, mode="lines", line=dict(dash="dot")),
                          row=1, col=1)
    if has_val:
        for key, color in (("val_total", "#1d2731"), ("val_va", "#457b9d"), ("val_expr", "#e76f51"),
                           ("val_au", "#2a9d8f")):
            fig.add_trace(go.Scatter(x=history.epoch, y=history[key], name=key, mode="lines+markers",
                                     line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=340, title=title)
    return fig


class LiveCurves:
    """Training curves that redraw after every epoch: pass ``on_epoch=LiveCurves(...)`` to
    :func:`course_lib.train.fit`.

    In JupyterLab and Colab the figure updates in place while training runs; an executed
    notebook (papermill) keeps the last state. Outside IPython it does nothing.
    """

    def __init__(self, title: str = "training") -> None:
        self.title = title
        self.rows: list[dict[str, Any]] = []
        self._handle = None

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        try:
            # lazy: IPython only inside a kernel (the tests draw curves without one)
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with the course
            return
        if get_ipython() is None:
            return
        # A plotly figure displays itself (``_ipython_display_``), which ignores display ids and would
        # add one figure per epoch; its mime bundle can be displayed, and later replaced, in place.
        bundle = plotly_bundle(plot_history(pd.DataFrame(self.rows), self.title))
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
