"""The one call at the top of every notebook: :func:`setup_notebook`.

Taught in ``00_welcome_and_setup``. It resolves the mode, seeds everything, picks the
device, prints a short environment report, makes plotly figures survive headless execution,
and, on Colab without a GPU, says how to get one.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..budgets import budget
from ..config import (Mode, at_scale, course_scale, data_dir, get_device, is_headless, is_offline, on_colab,
                     resolve_mode, seed_everything)


@dataclass
class NotebookEnv:
    """What a notebook needs to know about where it runs (returned by :func:`setup_notebook`)."""

    mode: Mode
    seed: int
    device: "torch.device"  # noqa: F821
    gpu_name: str | None
    gpu_memory_gb: float | None
    data: Path
    offline: bool
    headless: bool
    colab: bool
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def smoke(self) -> bool:
        """True in smoke mode (tiny sizes, CPU-friendly)."""
        return self.mode == "smoke"

    def budget(self, name: str) -> dict[str, Any]:
        """What notebook (or library row) ``name`` spends in this mode: its row of
        :data:`course_lib.budgets.BUDGETS`, full mode shrunk by ``COURSE_SCALE`` when that is set."""
        return budget(name, self.mode)

    def pick(self, smoke, full):
        """``smoke`` in smoke mode, ``full`` in full mode, for your own experiments:
        ``N = env.pick(200, 20_000)`` (the course's own sizes live in :mod:`course_lib.budgets`).
        Full mode's value is shrunk by ``COURSE_SCALE`` like the budgets' (:func:`course_lib.config.at_scale`)."""
        return smoke if self.smoke else at_scale(full, smoke)

    def report(self) -> str:
        """The environment report as text, one fact per line."""
        gpu = "none"
        if self.gpu_name:
            gpu = f"{self.gpu_name} ({self.gpu_memory_gb:.1f} GB)"
        scale = f" at COURSE_SCALE={course_scale():g}" if self.mode == "full" and course_scale() < 1 else ""
        lines = [
            f"python   {self.versions['python']} on {platform.system()} ({platform.machine()})",
            f"torch    {self.versions['torch']}   timm {self.versions.get('timm', '?')}",
            f"device   {self.device}   GPU: {gpu}",
            f"mode     {self.mode}{scale}   seed {self.seed}   offline: {'yes' if self.offline else 'no'}",
            f"data     {self.data}",
        ]
        if self.colab:
            lines.append("where    Google Colab")
        return "\n".join(lines)


_CDN_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>')


def _offline_notebook_renderer():
    """plotly's ``notebook`` renderer without the MathJax script it loads from a CDN in every figure."""
    # lazy: `import course_lib` (every first cell) stays light; plotly loads at set-up
    from plotly.io._base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = _CDN_SCRIPT.sub("", bundle["text/html"])
            return bundle

    return OfflineNotebookRenderer()



def configure_plotly() -> str:
    """Choose a plotly renderer that shows figures live *and* in executed notebooks.

    ``plotly_mimetype`` renders in JupyterLab; ``course_notebook`` (plotly's ``notebook``
    renderer minus its MathJax CDN script) embeds plotly.js in the output, so a notebook
    executed by papermill shows its figures when opened or exported to HTML, with no
    network (see :mod:`course_lib.tooling.pages`). Colab keeps its own ``colab`` renderer.
    """
    # lazy: `import course_lib` (every first cell) stays light; plotly loads at set-up
    import plotly.io as pio

    if "course_notebook" not in pio.renderers:
        pio.renderers["course_notebook"] = _offline_notebook_renderer()
    if on_colab():
        pio.renderers.default = "colab"
    else:
        pio.renderers.default = "plotly_mimetype+course_notebook"
    pio.templates.default = "plotly_white"
    return pio.renderers.default


def plotly_bundle(fig) -> dict:
    """A plotly figure's mime bundle for the default renderers, to display (and update) by display id.

    What ``fig.show()`` builds: renderers still waiting are activated once (the ``notebook``
    renderer sends plotly.js then). ``fig._repr_mimebundle_()`` would re-activate them on every
    call and embed plotly.js (several MB) in the output each time.
    """
    # lazy: `import course_lib` (every first cell) stays light; plotly loads at set-up
    import plotly.io as pio

    return pio.renderers._build_mime_bundle(fig.to_dict())


def _versions() -> dict[str, str]:
    # lazy: `import course_lib` (every first cell) stays light; torch loads at set-up
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:  # the installed version, without importing timm (and torchvision): seconds a notebook may not need
        out["timm"] = version("timm")
    except PackageNotFoundError:  # pragma: no cover - timm is a dependency
        out["timm"] = "missing"
    return out


def configure_matplotlib() -> bool:
    """Draw matplotlib figures inline in a notebook kernel, whatever ``MPLBACKEND`` says.

    A kernel started with ``MPLBACKEND=Agg`` in its environment (CI, test runners, some
    servers) would otherwise draw every figure into nothing, and the executed notebook would
    lack them. Returns whether a kernel was found.
    """
    try:
        # lazy: `import course_lib` stays light outside a kernel
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the course
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    shell.run_line_magic("matplotlib", "inline")
    return True


def setup_notebook(smoke: bool | None = None, seed: int = 0, *, quiet: bool = False) -> NotebookEnv:
    """Prepare a notebook: mode, seeds, device, plotly, and a printed environment report.

    ``smoke`` is the notebook's ``SMOKE`` parameter (``None``: smoke unless a CUDA GPU is
    present; ``COURSE_SMOKE`` in the environment overrides it).
    """
    # lazy: `import course_lib` (every first cell) stays light; torch loads at set-up
    import torch

    mode = resolve_mode(smoke)
    seed_everything(seed)
    device = get_device()
    gpu_name = gpu_mem = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu_name, gpu_mem = props.name, props.total_memory / 1024**3
    configure_plotly()
    configure_matplotlib()
    warnings.filterwarnings("ignore", message=".*IProgress not found.*")
    env = NotebookEnv(
        mode=mode, seed=seed, device=device, gpu_name=gpu_name, gpu_memory_gb=gpu_mem,
        data=data_dir(), offline=is_offline(), headless=is_headless(), colab=on_colab(),
        versions=_versions(),
    )
    if not quiet:
        print(env.report())
        if env.colab and device.type != "cuda":
            print("No GPU: on Colab choose Runtime > Change runtime type > T4 GPU, then "
                  "Runtime > Run all. Smoke mode works without one, only slower and smaller.")
        elif mode == "full" and device.type != "cuda":
            print("Full mode without a CUDA GPU: expect long run times (smoke mode is meant "
                  "for the CPU).")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.stdout.flush()
    return env
