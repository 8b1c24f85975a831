"""The report's "How to reproduce" commands run as printed, from the project folder, and make the
same rows again: the user's paths are kept as given (a data folder outside the project is never
rewritten to the project's default `data/...`, which would download)."""
from __future__ import annotations

import json
import re
import shutil
import sys
import subprocess

from conftest import ROOT, cli, make_folder


def _rows(runs) -> dict[str, tuple]:
    """method -> (val accuracy, its predictions) of every run under `runs`."""
    out = {}
    for f in sorted(runs.rglob("metrics.json")):
        m = json.loads(f.read_text())
        out[m["method"]] = (m["val"]["accuracy"], [(p["path"], p["pred"]) for p in m["predictions"]])
    return out


def test_printed_reproduce_commands_run_as_printed_and_make_the_same_rows(tmp_path):
    data = make_folder(tmp_path / "photos data" / "data", n_train=6, n_val=4)  # a space, and a folder named data
    feats, runs, rep = tmp_path / "codes" / "f.h5", tmp_path / "runs", tmp_path / "report"
    small = ("--resize", "40", "--crop", "32", "--workers", "0", "--device", "cpu")
    for args in (("features", "--data", data, "--weights", "none", "--out", feats, *small),
                 ("classify", "--features", feats, "--head", "softmax", "--out", runs, "--label-curve", "off",
                  "--folds", "2"),
                 ("finetune", "--data", data, "--weights", "none", "--epochs", "1", "--batch-size", "4", "--out", runs,
                  *small),
                 ("report", "--runs", runs, "--out", rep)):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
    md = (rep / "report.md").read_text()
    printed = re.findall(r"`(cnncodes (?:features|classify|finetune) [^`]+)`", md.split("## How to reproduce")[1])
    assert {c.split()[1] for c in printed} == {"features", "classify", "finetune"}
    assert all(str(data) in c for c in printed if " --data " in c)  # as given, not data/...
    before = _rows(runs)
    shutil.rmtree(runs)
    shutil.rmtree(feats.parent)
    for line in printed:
        words = line.split(" ", 1)[1]  # `cnncodes` is `python -m pipeline`; the rest is run by a shell, as printed
        r = subprocess.run(f"{sys.executable} -m pipeline {words}", shell=True, cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, (line, r.stderr[-2000:])
    again = _rows(runs)
    assert again.keys() == before.keys() and len(again) == 2
    for method, (acc, preds) in before.items():
        assert again[method][0] == acc and again[method][1] == preds, method
