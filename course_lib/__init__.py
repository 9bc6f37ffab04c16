"""course_lib: the tested helpers behind the multi-task facial affect analysis course.

Each module teaches one idea and names the notebook that explains it. Start with
``setup_notebook()``, the first call of every notebook (``00_welcome_and_setup``).
"""

from __future__ import annotations

from . import exercises
from .config import CourseSetupError, get_device, resolve_mode, seed_everything
from .notebook import NotebookEnv, setup_notebook
from .progress import progress

__version__ = "0.1.0"

__all__ = [
    "CourseSetupError", "NotebookEnv", "exercises", "get_device", "progress", "resolve_mode",
    "seed_everything", "setup_notebook", "__version__",
]
