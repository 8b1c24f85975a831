"""What a saved run costs to use on a new image, timed through predict's own scorer (runs.scoring)
with core.timing's harness: the same warm, batched measurement for every fine-tuned network that
`codes.encoder.trunk_cost` and `runs.head_run.head_cost` make for a head's trunk and head."""
from __future__ import annotations

from pathlib import Path

from ..core.timing import measure, plan
from . import folder as runs
from .scoring import Source, scorer_for


def run_cost(run_dir: Path, device, precision: str) -> dict:
    """The run's model on a batch of decoded crops at its crop size, as predict scores it."""
    from ..codes.encoder import decoded_crops

    spec = runs.read_model(run_dir)
    scorer, _, _ = scorer_for(Source(Path(run_dir), precision=precision), spec, device)
    batch, warmup, repeats = plan()
    crop = int(spec.get("crop") or 224)
    x = decoded_crops(crop, batch)
    return measure(lambda: scorer(x), batch, repeats, warmup, part="model", crop=crop, device=str(device),
                   precision=precision)
