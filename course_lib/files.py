"""Writing a file so that an interruption never leaves half of it (used across ``course_lib``).

Data generation (``01``), feature caches (``02``), checkpoints (``05``), audio caches (``07``)
and submission files (``08``) all write through :func:`atomic_write`: the bytes go to a
temporary file in the same folder, which is then renamed over the target in one step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, newlines untouched) to ``path`` atomically; returns the path.

    The folder is created if needed; the file gets mode 0644. ``durable=True`` also flushes
    the bytes to disk (``fsync``) before the rename, for files worth the extra wait.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_write"]
