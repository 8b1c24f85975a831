"""The command line as people expect it: a console script, --version, a top-level help that says
what each stage does, --help without torch, help texts without empty defaults, no dead flags."""
from __future__ import annotations

import shutil
import subprocess
import sys

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
