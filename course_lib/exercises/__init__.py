"""Exercise checkers: one per exercise, run on fresh inputs, never printing the solution.

Every notebook ends with exercises. A student writes a function or a value and calls
``check("00.ccc", my_ccc)``; the checker compares it with the reference on inputs it makes
up there and then, and prints friendly feedback: passed, or what differs plus a hint. An
untouched stub (one that raises ``NotImplementedError`` or is ``None``/``...``) is reported
as "not attempted yet", so a notebook still runs top to bottom in CI.

The checkers live in one module per notebook (``nb00.py``, ...) and register themselves
with :func:`exercise`. The tests feed each one a correct and a typical wrong answer.
"""

from __future__ import annotations

import importlib
import numpy as np
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from ..config import seeded

Status = Literal["passed", "failed", "not attempted"]

_ICON = {"passed": "✅", "failed": "❌", "not attempted": "⏳"}


@dataclass(frozen=True)
class Feedback:
    """The verdict of a checker."""

    key: str
    status: Status
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        status = "not attempted yet" if self.status == "not attempted" else self.status
        return f"{_ICON[self.status]} Exercise {self.key}: {status}. {self.message}".rstrip()


class NotAttempted(Exception):
    """Raised inside a checker when the answer is still the stub."""


class Mismatch(AssertionError):
    """Raised inside a checker when the answer is wrong; its message is the hint shown."""


@dataclass(frozen=True)
class Exercise:
    """A registered exercise: its key (``"NN.name"``), title and checking function."""

    key: str
    title: str
    check: Callable[[Any], str]


_REGISTRY: dict[str, Exercise] = {}


def exercise(key: str, title: str) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    """Register a checking function. It receives the answer, raises :class:`Mismatch` with a
    hint when the answer is wrong, and returns a short message of praise when it is right."""

    def register(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key!r} registered twice")
        _REGISTRY[key] = Exercise(key=key, title=title, check=fn)
        return fn

    return register


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("nb"):
            importlib.import_module(f"{__name__}.{info.name}")


def registry() -> dict[str, Exercise]:
    """All exercises of the course, by key."""
    _load_all()
    return dict(_REGISTRY)


@contextmanager
def private_torch_rng() -> Iterator[None]:
    """Fresh random weights and inputs for a PyTorch checker, without touching the notebook's own
    torch random state: the global generator is forked, reseeded at random inside, and restored."""
    with seeded(int(np.random.default_rng().integers(1 << 30))):
        yield


def call_answer(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the student's function; a stub's ``NotImplementedError`` means "not attempted"."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise NotAttempted from None
    except Mismatch:
        raise
    except Exception as exc:  # the student's code broke: say how, without a traceback
        raise Mismatch(f"your code raised {type(exc).__name__}: {exc}") from None


def grade(key: str, answer: Any) -> Feedback:
    """Check ``answer`` for exercise ``key`` and return the verdict without printing it."""
    exercises = registry()
    if key not in exercises:
        known = ", ".join(sorted(exercises))
        raise KeyError(f"no exercise {key!r}; known: {known}")
    if answer is None or answer is Ellipsis:
        return Feedback(key, "not attempted", "Replace the stub with your answer, then run the cell again.")
    try:
        praise = exercises[key].check(answer)
    except NotAttempted:
        return Feedback(key, "not attempted", "Replace the stub with your answer, then run the cell again.")
    except Mismatch as exc:
        return Feedback(key, "failed", str(exc))
    return Feedback(key, "passed", praise)


def check(key: str, answer: Any) -> Feedback:
    """Check ``answer`` for exercise ``key``, print friendly feedback and return it."""
    feedback = grade(key, answer)
    print(feedback)
    return feedback


__all__ = ["Exercise", "Feedback", "Mismatch", "NotAttempted", "call_answer", "check", "exercise",
           "grade", "private_torch_rng", "registry"]
