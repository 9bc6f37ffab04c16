"""Install ``course_lib`` on Google Colab without touching Colab's torch.

The first cell of every notebook runs ``python -m course_lib.tooling.colab`` inside a fresh clone
on Colab. Colab already ships torch, torchvision and most of the scientific stack with a
matching CUDA; reinstalling torch there would download gigabytes and can break the runtime.
So this installs ``course_lib`` itself without dependencies, then only the dependencies
Colab lacks, with torch and torchvision pinned (a pip constraint) to the versions present.
Only the standard library is used here, so it runs before anything else is installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

#: Provided by Colab's own front end; installing them there could break the runtime.
COLAB_PROVIDED = {"jupyterlab", "ipykernel", "nbformat", "nbconvert"}
#: Never installed or upgraded on Colab.
PINNED = ("torch", "torchvision")


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower().replace("_", "-")


def dependencies(pyproject: Path) -> list[str]:
    """The runtime dependencies declared in ``pyproject.toml``."""
    # lazy: Python 3.11+ only; this module must import on any Python to say what is missing
    import tomllib

    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"])


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements whose distribution is not installed, leaving out Colab's own and torch."""
    missing = []
    for req in requirements:
        name = _name(req)
        if name in COLAB_PROVIDED or name in PINNED:
            continue
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def torch_constraints() -> str:
    """A pip constraints file that pins torch and torchvision to what is installed."""
    lines = []
    for name in PINNED:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def install_commands(repo: Path) -> list[list[str]]:
    """The pip commands that install ``course_lib`` from ``repo`` on Colab."""
    repo = Path(repo)
    constraints = Path(tempfile.gettempdir()) / "course-torch-constraints.txt"
    constraints.write_text(torch_constraints(), encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    commands = [pip + ["--no-deps", "-e", str(repo)]]
    missing = missing_requirements(dependencies(repo / "pyproject.toml"))
    if missing:
        commands.append(pip + ["-c", str(constraints), *missing])
    return commands


def main() -> int:
    repo = Path(__file__).resolve().parents[2]
    for command in install_commands(repo):
        print("$", " ".join(command[2:]), flush=True)
        subprocess.run(command, check=True)
    print("course_lib installed; torch left as Colab ships it.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
