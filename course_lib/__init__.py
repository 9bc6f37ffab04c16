"""course_lib: the tested helpers behind the multi-task facial affect analysis course.

Each module teaches one idea and names the notebook that explains it. Start with
``setup_notebook()``, the first call of every notebook (``00_welcome_and_setup``).
"""

from __future__ import annotations

import sys

# Kernel start-up. plotly imports nbformat, nbformat imports jsonschema, and jsonschema imports
# rfc3987_syntax when it is installed (JupyterLab's jupyter-events pulls it in). That import
# compiles about twenty Earley grammars: 3-4 s on a 2-core CPU in every notebook, for jsonschema's
# "iri" format check, which nothing in a course kernel uses. Marked absent before jsonschema is
# imported, jsonschema leaves that one check out (it guards the import). A process that imported
# jsonschema already keeps it as it is.
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

from . import exercises  # noqa: E402
from .config import CourseSetupError, get_device, resolve_mode, seed_everything  # noqa: E402
from .tooling.notebook import NotebookEnv, setup_notebook  # noqa: E402
from .progress import progress  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CourseSetupError", "NotebookEnv", "exercises", "get_device", "progress", "resolve_mode",
    "seed_everything", "setup_notebook", "__version__",
]
