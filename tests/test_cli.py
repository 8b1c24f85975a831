"""The command line as people expect it: a console script, --version, a top-level help that says
what each stage does, --help without torch, help texts without empty defaults, no dead flags."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli
from pipeline import __version__
from pipeline.__main__ import STAGES


def test_top_level_help_lists_every_stage_with_a_line():
    r = cli("--help")
    assert r.returncode == 0
    for stage, (_, what) in STAGES.items():
        assert f"  {stage}" in r.stdout and what in r.stdout
    assert cli().returncode == 2  # no stage: the same help, on stderr, exit 2


def test_version_and_console_script():
    assert cli("--version").stdout.strip() == f"cnncodes {__version__}"
    script = shutil.which("cnncodes", path=str(ROOT / ".venv" / "bin")) or shutil.which("cnncodes")
    if script is None:
        pytest.skip("the package is not installed with its console script here")
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: cnncodes STAGE")


@pytest.mark.parametrize("stage", list(STAGES))
def test_help_imports_no_torch_and_shows_only_meaningful_defaults(stage):
    code = ("import sys; from pipeline.__main__ import main\n"
            f"try:\n    main([{stage!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip().endswith("NO-TORCH"), r.stdout[-300:]
    text = " ".join(r.stdout.split())  # argparse wraps lines
    assert "(default: None)" not in text and "(default: )" not in text and "--no-force" not in text


def test_predict_has_no_flags_that_do_nothing():
    text = cli("predict", "--help").stdout
    # --workers decodes images in worker processes (predict streams through a DataLoader); no seed is drawn
    assert "--seed" not in text and "--workers" in text and "--device" in text


@pytest.mark.parametrize("stage, flag, per_core", [("classify", "jobs", 1), ("audit", "jobs", 1),
                                                    ("features", "workers", 2), ("finetune", "workers", 2),
                                                    ("predict", "workers", 2)])
def test_jobs_and_workers_far_above_the_cores_are_clamped_with_a_line(stage, flag, per_core, capsys, monkeypatch):
    import importlib
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    mod = importlib.import_module(f"pipeline.stages.{stage}")
    need = {"features": dict(data="d"), "finetune": dict(data="d"), "predict": dict(model=Path("m"), images=("x",)),
            "classify": dict(features=Path("f.h5")), "audit": dict(features=Path("f.h5"))}[stage]
    cfg = mod.Config(**need, **{flag: 500})
    assert getattr(cfg, flag) == 2 * per_core
    assert f"--{flag} 500 is more than this machine's 2 cores can use: {2 * per_core}" in capsys.readouterr().err
    assert getattr(mod.Config(**need, **{flag: per_core}), flag) == per_core  # within bounds: as given, silently
    assert capsys.readouterr().err == ""
