"""The shape of ``course_lib`` (ARCHITECTURE.md): no import circles, small modules, no private reach.

Imports inside functions count: a circle hidden in a function is still a circle, and it is what
makes a module impossible to read, test or move on its own.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_lib"
#: The most lines a module of the package may have.
MAX_LINES = 500
#: Beside the ML core: the course tooling (``tooling/``, ``exercises/``) and the figures and memory
#: estimates the notebooks show. They may use the core, never the reverse.
BESIDE_THE_CORE = ("tooling", "exercises", "curves", "diagrams", "memory")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported course_lib module, imported name or '', line) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "course_lib"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "course_lib":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in MODULES else (module, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _, _ in _imports(name, path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_counting_imports_inside_functions():
    cycles = _cycles(_graph())
    assert not cycles, f"import circles in course_lib: {cycles}"


def test_the_package_parts_import_what_they_should():
    graph = _graph()
    # the ML core never reaches into the course tooling (ARCHITECTURE.md)
    tooling = {m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in BESIDE_THE_CORE}
    assert {"course_lib.tooling.runner", "course_lib.exercises.nb03", "course_lib.curves"} <= tooling
    for name in graph:
        if name not in tooling and name != "course_lib":
            assert not graph[name] & tooling, f"{name} imports course tooling {graph[name] & tooling}"
    assert not {"course_lib.progressive", "course_lib.recipes"} & graph["course_lib.train"]  # the loop knows no recipe


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_short(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (at most {MAX_LINES}): split it along its ideas"


def test_no_private_names_imported_across_modules():
    reach = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}.{imported}"
             for name, path in MODULES.items() for module, imported, line in _imports(name, path)
             if imported.startswith("_") and not imported.startswith("__") and module != name]
    assert not reach, "private names used across modules:\n" + "\n".join(reach)


def test_notebooks_use_no_private_names_of_the_package():
    pattern = re.compile(r"from course_lib[\w.]* import [^\n]*\b_[a-z]\w*|\b(?:ev|explain|synth|abaw|train)\._[a-z]\w*")
    hits = []
    for path in sorted((PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            source = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            hits += [f"{path.name} cell {i}: {m.group(0)}" for m in pattern.finditer(source)]
    assert not hits, "notebooks reach private names:\n" + "\n".join(hits)


def test_library_code_never_reseeds_the_global_generators():
    """Seeds are passed in; random numbers are drawn inside ``config.seeded(seed)``, which gives the caller's
    stream back. Only ``config`` (``seed_everything``, the notebooks' own call, and ``seeded``) sets a seed."""
    pattern = re.compile(r"(?<![\w)]\.)\b(?:torch\.manual_seed|torch\.cuda\.manual_seed(?:_all)?|np\.random\.seed|"
                         r"random\.seed)\(|(?<!Generator\(\))\.manual_seed\(")
    hits = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
            for name, path in MODULES.items() if name != "course_lib.config"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
            if pattern.search(line)]
    assert not hits, "global reseeding in library code:\n" + "\n".join(hits)
    assert pattern.search("torch.manual_seed(0)") and pattern.search("np.random.seed(1)")
    assert not pattern.search("g = torch.Generator().manual_seed(seed)")


def test_the_course_tooling_lives_in_its_own_subpackage():
    flat = {path.stem for path in PACKAGE.glob("*.py")}
    assert not flat & {"notebook", "execution", "runner", "slides", "pages", "course_map", "colab"}
    assert {path.stem for path in (PACKAGE / "tooling").glob("*.py")} >= {"notebook", "runner", "slides", "colab"}


def test_every_import_inside_a_function_says_why():
    """An import sits inside a function only where it keeps start-up light, and a comment says so."""
    silent = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            inner = sorted({sub.lineno for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))})
            firsts = [n for n in inner if n - 1 not in inner]  # the first line of each run of imports
            silent += [f"{path.relative_to(PACKAGE.parent)}:{n}: {lines[n - 1].strip()}" for n in firsts
                       if "#" not in lines[n - 1] and not lines[n - 2].strip().startswith("#")]
    assert not silent, "imports inside functions without a reason:\n" + "\n".join(sorted(set(silent)))
