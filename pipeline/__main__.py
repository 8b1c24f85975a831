"""`python -m pipeline <stage> ...`: dispatch to one stage module.

Each stage module exposes `Config` (a frozen dataclass), `run(cfg)` and a docstring; the stage is
imported only when chosen, so `report --help` does not pay for importing torch.
"""
from __future__ import annotations

import importlib
import sys

from . import UserError
from .config import Parser, add_arguments, from_args

STAGES = {
    "data": "pipeline.data",
    "features": "pipeline.features",
    "classify": "pipeline.classify",
    "finetune": "pipeline.finetune",
    "report": "pipeline.report",
    "predict": "pipeline.predict",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "usage: python -m pipeline {" + ",".join(STAGES) + "} [--help] ..."
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        print("\nstages:\n" + "\n".join(f"  {s}" for s in STAGES))
        print("\n`python -m pipeline STAGE --help` lists a stage's flags and defaults.")
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.stderr.write(f"pipeline: error: unknown stage {stage!r} (choose from {', '.join(STAGES)})\n")
        return 2
    module = importlib.import_module(STAGES[stage])
    parser = Parser(
        prog=f"python -m pipeline {stage}",
        description=(module.__doc__ or "").strip().splitlines()[0],
        formatter_class=__import__("argparse").ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser, module.Config)
    args = parser.parse_args(rest)
    try:
        module.run(from_args(module.Config, args))  # settings are validated as the Config is made
    except UserError as e:
        sys.stderr.write(f"pipeline {stage}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"pipeline {stage}: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
