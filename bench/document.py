"""The benchmarks.json document around the rows (machine, commit, versions) and its text table."""
from __future__ import annotations

import platform
import subprocess

import numpy as np
import torch

from pipeline import __version__
from pipeline.runs.folder import environment

from .common import ROOT


def machine() -> dict:
    env = environment()
    return {k: env[k] for k in ("cpu", "cores", "gpu")}


def versions() -> dict:
    import sklearn
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version(), "cnncodes": __version__}


def commit() -> str:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def table(doc: dict) -> str:
    """The results as an aligned text table, each row's note under it, and the machine last."""
    head = ["benchmark", "ours", "reference", "unit", "ratio", "target", "met"]
    body = [
        [
            r["name"],
            fmt(r["ours"]),
            fmt(r["reference"]),
            r["unit"],
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            fmt(r["target"]),
            fmt(r["met"]),
        ]
        for r in doc["results"]
    ]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), line(["-" * w for w in widths])]
    for cells, r in zip(body, doc["results"]):
        out.append(line(cells))
        if r["note"]:
            out.append("    " + r["note"])
    m = doc["machine"]
    out.append(f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}; commit {doc['commit']}; "
               f"{'quick' if doc['quick'] else 'full'} run in {doc['wall_seconds']:.0f}s")
    return "\n".join(out)
