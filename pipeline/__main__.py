"""`cnncodes <stage> ...` (or `python -m pipeline <stage> ...`): dispatch to one stage module.

Each stage module exposes `Config` (a frozen dataclass), `run(cfg)` and a docstring; the stage is
imported only when chosen, so `report --help` does not pay for importing torch.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from . import UserError, __version__
from .core.cli import Parser, add_arguments, from_args

STAGES = {  # stage -> (module, what it does); the module is imported only when its stage runs
    "data": ("pipeline.stages.data", "check an image folder (download hymenoptera when it is absent)"),
    "features": ("pipeline.stages.features", "extract CNN codes with a frozen backbone and cache them to HDF5"),
    "classify": ("pipeline.stages.classify", "fit heads (softmax, linsvc, linear, knn) on cached codes, CV on train"),
    "finetune": ("pipeline.stages.finetune", "fine-tune the backbone (full, or frozen trunk + augmentation)"),
    "report": ("pipeline.stages.report", "one table, figures and a plain-words summary of every run"),
    "predict": ("pipeline.stages.predict", "label new images with a saved head or fine-tuned model"),
    "audit": ("pipeline.stages.audit", "check the data from its codes: label issues, near-duplicates and leaks, "
              "outliers"),
    "sweep": ("pipeline.stages.sweep", "several backbones: codes, heads and one report whose verdict spans backbone x "
              "head"),
    "export": ("pipeline.stages.export", "one ONNX file + a standalone predict.py (onnxruntime only) of a run"),
}


def _prog() -> str:
    return "cnncodes" if Path(sys.argv[0]).name == "cnncodes" else "python -m pipeline"


def top_help(prog: str) -> str:
    width = max(map(len, STAGES))
    return "\n".join([f"usage: {prog} STAGE [--help] ...", "",
                      "Fast, honest transfer learning: cached CNN codes, classical heads, fine-tuning, one report.", "",
                      "stages:", *(f"  {s:<{width}}  {what}" for s, (_, what) in STAGES.items()), "",
                      f"`{prog} STAGE --help` lists a stage's flags and defaults; "
                      f"`{prog} --version` prints the version."])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = _prog()
    if argv[:1] == ["--version"]:
        print(f"cnncodes {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help(prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.stderr.write(f"{prog}: error: unknown stage {stage!r} (choose from {', '.join(STAGES)})\n")
        return 2
    module = importlib.import_module(STAGES[stage][0])
    parser = Parser(prog=f"{prog} {stage}", description=(module.__doc__ or "").strip().split("\n\n")[0])
    add_arguments(parser, module.Config)
    args = parser.parse_args(rest)
    try:
        cfg = from_args(module.Config, args, typed=[*prog.split(), stage, *rest])
        rc = module.run(cfg)  # settings are validated as the Config is made
    except UserError as e:
        sys.stderr.write(f"{prog} {stage}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog} {stage}: interrupted\n")
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
