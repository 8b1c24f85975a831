"""The report package's shape: it never imports a stage, one DASH, and the blocks it lays out are
typed (a Block's kind first, so `block[0]` still names it)."""
from __future__ import annotations

import ast

from conftest import ROOT
from pipeline.report.blocks import Block, FigureFile, Table
from pipeline.report.render import render_markdown
from pipeline.report.rows import DASH


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_report_package_never_imports_a_stage_or_torch():
    for path in (ROOT / "pipeline" / "report").glob("*.py"):
        for name in _imports(path):
            assert "stages" not in name.split("."), f"{path.name} imports {name}"
            assert name.split(".")[0] not in ("torch", "torchvision"), f"{path.name} imports {name}"


def test_dash_defined_once_in_the_report_package():
    defining = [p.name for p in (ROOT / "pipeline" / "report").glob("*.py") if '\nDASH = ' in p.read_text()]
    assert defining == ["rows.py"] and DASH == "—"


def test_blocks_render_to_markdown():
    blocks = [Block("h1", "T"), Block("p", "x | y"), Block("table", Table(["A", "B"], [["1", "a|b"]], "rl")),
              Block("figure", FigureFile("f.png", "cap"))]
    assert blocks[2][0] == "table"
    assert render_markdown(blocks) == ("# T\n\nx | y\n\n| A | B |\n|---:|---|\n| 1 | a\\|b |\n\n"
                                       "![f](figures/f.png)\n\n*cap*\n")


def test_a_pick_still_at_the_edge_of_its_grid_is_flagged_where_its_setting_is_shown():
    from pipeline.report.rows import settings_text

    m = {"stage": "classify", "hyperparameters": {"C": 1e-05}}
    assert settings_text(m) == "C=1e-05"
    assert settings_text({**m, "cv_edge": "low"}) == "C=1e-05 (at the grid's strong end)"
    assert settings_text({**m, "hyperparameters": {"weight_decay": 10.0}, "cv_edge": "low"}) == \
        "wd=10 (at the grid's strong end)"
