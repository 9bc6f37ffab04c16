"""course_lib.budgets: one table of what each mode spends, read by every notebook and the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.budgets import BUDGETS, budget, budget_table

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LIBRARY_ROWS = ("data", "course_backbone", "progressive", "explain_heads")


def _code(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_notebook_has_a_row_and_reads_its_own():
    assert set(BUDGETS) == {*LIBRARY_ROWS, *(p.stem for p in NOTEBOOKS)}
    for path in NOTEBOOKS:
        code = _code(path)
        assert re.findall(r'env\.budget\("([^"]+)"\)', code) == [path.stem], path.name
        assert "env.pick(" not in code, f"{path.name}: sizes belong in course_lib/budgets.py"
        used = set(re.findall(r'budget\["([a-z0-9_]+)"\]', code))
        assert used == set(BUDGETS[path.stem]["smoke"]), f"{path.name}: reads {sorted(used)}"


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_a_notebook_row_names_the_same_settings_in_both_modes(name):
    assert set(BUDGETS[name]) == {"smoke", "full"}  # a library row may leave a setting to its dataclass default
    assert set(BUDGETS[name]["smoke"]) == set(BUDGETS[name]["full"])


def test_budget_reads_the_mode_and_shrinks_full_mode_with_course_scale(monkeypatch):
    monkeypatch.delenv("COURSE_SCALE", raising=False)
    assert budget("03_cross_attention", "smoke") == {"epochs": 10, "dim": 64, "depth": 1, "lr": 3e-3, "batch_size": 32}
    assert budget("03_cross_attention", "full")["epochs"] == 30
    monkeypatch.setenv("COURSE_SCALE", "0.5")
    half = budget("03_cross_attention", "full")
    assert half["epochs"] == 15 and half["dim"] == 64 and half["lr"] == 1e-3  # floats are not sizes
    assert budget("08_evaluation", "full")["progressive"] == {}  # full mode keeps the course's own settings
    mine = budget("04_au_graph", "smoke")
    mine["epochs"] = 999
    assert BUDGETS["04_au_graph"]["smoke"]["epochs"] == 6  # a copy: changing it changes nothing else
    with pytest.raises(KeyError, match="no budget named"):
        budget("10_missing", "smoke")
    with pytest.raises(ValueError, match="unknown mode"):
        budget("01_data", "huge")


def test_the_library_reads_its_rows(monkeypatch):
    from course_lib.progressive import progressive_config

    monkeypatch.delenv("COURSE_SCALE", raising=False)
    assert progressive_config("smoke").stage1_epochs == BUDGETS["progressive"]["smoke"]["stage1_epochs"]
    assert progressive_config("full").dim == BUDGETS["progressive"]["full"]["dim"]


def test_the_table_shows_every_setting_in_both_modes():
    table = budget_table(["09_explanations"])
    assert list(table.index.get_level_values("setting")) == ["frames", "ig_steps", "occlusion"]
    assert table.loc[("09_explanations", "frames"), "full"] == "200"
    assert len(budget_table()) == sum(len({*r["smoke"], *r["full"]}) for r in BUDGETS.values())
