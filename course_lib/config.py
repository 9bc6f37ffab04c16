"""Where things live and how the course runs: mode, device, seeds, folders, offline.

Taught in ``00_welcome_and_setup``. Every notebook calls :func:`course_lib.setup_notebook`,
which uses the helpers here; ``make course`` and the tests use them too, so a notebook, the
command line and CI agree on the mode, the data folder and whether the network may be used.

Environment variables (all optional):

``COURSE_SMOKE``    ``1`` forces smoke mode, ``0`` forces full mode (overrides ``SMOKE``).
``COURSE_SCALE``    a share in (0, 1]: full mode's code paths with every size shrunk to it
                    (never below the smoke size), e.g. ``0.05`` on a CPU; default 1.
``COURSE_DATA``     the data folder (default: ``data/`` at the repository root).
``COURSE_CACHE``    the artifact cache (default: ``<data>/cache``): checkpoints, features.
``COURSE_OFFLINE``  ``1``: never try to download weights (also implied by ``CI``).
``COURSE_HEADLESS`` ``1``: running under papermill/CI; progress bars print plain text.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

Mode = Literal["smoke", "full"]
T = TypeVar("T")
MODES: tuple[str, ...] = ("smoke", "full")

#: Where the course lives on GitHub: Colab badges and the Colab set-up cell use it.
REPO_SLUG = "affect-course/multitask-affect-course"
REPO_URL = f"https://github.com/{REPO_SLUG}"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class CourseSetupError(RuntimeError):
    """A problem with the set-up that the user can fix; its message says how, in one line."""


def _env_flag(name: str) -> bool | None:
    """Read a yes/no environment variable; ``None`` when unset or empty."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise CourseSetupError(f"environment variable {name}={raw!r} is not a yes/no value: use 1 or 0")


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU."""
    # lazy: torch (2-3 s) only when asked: `import course_lib` and the set-up errors stay fast
    import torch

    return torch.cuda.is_available()


def resolve_mode(smoke: bool | str | None = None) -> Mode:
    """Decide between ``"smoke"`` and ``"full"``.

    ``smoke`` is the notebook's ``SMOKE`` parameter: ``True``/``False`` or ``None`` for
    automatic (full on a CUDA GPU, smoke otherwise). The strings ``"smoke"``, ``"full"``
    and ``"auto"`` are accepted too. ``COURSE_SMOKE`` in the environment overrides all.
    """
    if isinstance(smoke, str):
        choice = smoke.strip().lower()
        if choice not in (*MODES, "auto"):
            raise CourseSetupError(f"unknown mode {smoke!r}: use 'auto', 'smoke' or 'full'")
        smoke = None if choice == "auto" else choice == "smoke"
    forced = _env_flag("COURSE_SMOKE")
    if forced is not None:
        return "smoke" if forced else "full"
    if smoke is None:
        return "full" if cuda_available() else "smoke"
    return "smoke" if smoke else "full"


def course_scale() -> float:
    """``COURSE_SCALE`` as a number in (0, 1] (1 when unset); a bad value raises a one-line error."""
    raw = os.environ.get("COURSE_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise CourseSetupError(f"COURSE_SCALE={raw!r} is not a number: use a share in (0, 1], e.g. 0.05") from None
    if not 0 < value <= 1:
        raise CourseSetupError(f"COURSE_SCALE={raw!r} is outside (0, 1]: 1 runs full mode at full size")
    return value


def at_scale(full: T, smoke: Any, scale: float | None = None) -> T:
    """A full-mode setting shrunk to ``scale`` (default :func:`course_scale`), never below the smoke setting.

    Integers become ``round(full * scale)``, kept between the smaller of ``smoke`` and ``full`` and
    ``full``; lists and tuples keep as many leading items; dicts go key by key (a key that smoke
    lacks keeps its full value); floats, booleans, strings and everything else stay as in full mode.
    At scale 1 this is ``full`` itself. ``Env.pick`` and the per-mode tables of the library use it,
    so that ``COURSE_SCALE=0.05`` runs full mode's code paths at about smoke mode's size.
    """
    scale = course_scale() if scale is None else float(scale)
    if scale >= 1:
        return full
    if isinstance(full, bool) or not isinstance(full, (int, list, tuple, dict)):
        return full
    if isinstance(full, int):
        low = min(smoke, full) if isinstance(smoke, int) and not isinstance(smoke, bool) else min(1, full)
        return max(low, min(full, int(round(full * scale))))  # type: ignore[return-value]
    if isinstance(full, dict):
        smoke = smoke if isinstance(smoke, dict) else {}
        return {k: (at_scale(v, smoke[k], scale) if k in smoke else v) for k, v in full.items()}  # type: ignore
    keep = len(smoke) if isinstance(smoke, (list, tuple)) else 1
    n = max(min(keep, len(full)), int(round(len(full) * scale)))
    return full[:n]  # type: ignore[return-value]


def mode_settings(table: dict[str, T], mode: str) -> T:
    """``table[mode]`` of a per-mode table (``{"smoke": ..., "full": ...}``), full mode at :func:`course_scale`."""
    if mode not in table:
        raise ValueError(f"unknown mode {mode!r}: use one of {sorted(table)}")
    return at_scale(table["full"], table["smoke"]) if mode == "full" else table[mode]


def get_device(prefer: str | None = None) -> "torch.device":  # noqa: F821
    """The best device here: CUDA, then Apple's MPS, then the CPU (or ``prefer`` if given)."""
    # lazy: torch (2-3 s) only when asked: `import course_lib` and the set-up errors stay fast
    import torch

    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (all devices) so that a run can be repeated.

    With ``deterministic=True`` torch is also asked for deterministic kernels, which is
    slower on a GPU and unnecessary on the CPU.
    """
    # lazy: torch (2-3 s) only when asked: `import course_lib` and the set-up errors stay fast
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return seed


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's random stream seeded to ``seed``, then give the caller's stream back.

    Library code draws initial weights, dropout masks and random re-initialisations inside
    ``with seeded(seed):``, so its result depends on the ``seed`` it was given and nothing else,
    and the notebook's own stream (set by :func:`seed_everything`) is left as it was. The CPU
    generator is restored, and every CUDA generator where a GPU is present.
    """
    # lazy: torch (2-3 s) only when asked: `import course_lib` and the set-up errors stay fast
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def repo_root(start: Path | str | None = None) -> Path:
    """The repository root, found upwards from ``start`` (default: this package's folder).

    It is the first folder holding both ``pyproject.toml`` and ``course_lib/``, so the
    notebooks find it from ``notebooks/``, the tests from ``tests/`` and Colab from
    ``/content/course``.
    """
    here = Path(start) if start is not None else Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "course_lib").is_dir():
            return folder
    raise CourseSetupError(f"no course repository (pyproject.toml + course_lib/) above {here}")


def _writable_folder(path: Path, what: str, hint: str) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CourseSetupError(f"the {what} {path} is not writable ({reason}): {hint}") from None
    return path


def data_dir(create: bool = False) -> Path:
    """The data folder: ``$COURSE_DATA`` or ``data/`` at the repository root.

    With ``create=True`` it is created and checked to be writable; a folder that cannot be
    written raises :class:`CourseSetupError` with a one-line fix.
    """
    raw = os.environ.get("COURSE_DATA", "").strip()
    path = Path(raw).expanduser() if raw else repo_root() / "data"
    path = path.resolve()
    if create:
        _writable_folder(path, "data folder", "set COURSE_DATA to a folder you can write to")
    return path


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The artifact cache (checkpoints, cached features): ``$COURSE_CACHE`` or ``<data>/cache``."""
    raw = os.environ.get("COURSE_CACHE", "").strip()
    base = Path(raw).expanduser().resolve() if raw else data_dir() / "cache"
    path = base.joinpath(*parts)
    if create:
        _writable_folder(path, "cache folder", "set COURSE_CACHE to a folder you can write to")
    return path


def build_dir() -> Path:
    """Where ``make course`` writes executed notebooks and slides (git-ignored)."""
    return repo_root() / "build"


def on_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def is_ci() -> bool:
    """True on a CI runner (``CI`` set to a true value, as GitHub Actions and our .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def is_offline() -> bool:
    """True when nothing may be downloaded: on CI, with ``COURSE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``."""
    if is_ci():
        return True
    return bool(_env_flag("COURSE_OFFLINE")) or bool(_env_flag("HF_HUB_OFFLINE"))


def is_headless() -> bool:
    """True when notebooks run without a person watching (papermill via the course runner, CI)."""
    return bool(_env_flag("COURSE_HEADLESS")) or is_ci()
