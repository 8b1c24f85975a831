"""A saved run as a scorer: uint8 image batches in, class scores out (and, with `reject`, how far
each image is from what the run was trained on: heads.reject), for `predict` and the export check.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import UserError
from ..codes.weights import Weights
from ..core.devices import BF16, precision_for
from ..images.transforms import Preprocess
from . import folder as runs

UNKNOWN = "unknown"  # the class of an image the --reject rule turns away


class Source(NamedTuple):
    """Where a run is and how to load it."""

    model: Path  # the run folder
    weights: str = ""  # a weights file that replaces the recorded path (file weights that moved)
    trust_pickle: bool = False  # older runs saved their head as a pickle
    reject: bool = False  # also score how far each image is from the training images
    precision: str = "auto"  # the --precision flag (core.devices.precision_for)


def scorer_for(src: Source, spec: dict, device):
    """(scores, what the scores are, class names) of the run's kind."""
    return (head_scorer if spec["kind"] == "head" else finetune_scorer)(src, spec, device)


def backbone_for(spec: dict, override: str = ""):
    """The exact backbone a head was trained on, or a clear refusal."""
    from ..codes.backbone import load_backbone

    w = spec["weights"]
    weights = Weights.from_record(w, spec["weights_arg"], override)
    if weights.kind == "file":
        if not weights.path.is_file():
            raise UserError(f"this head was trained on codes from {w} ({spec['weights_arg']}), which is not here; "
                            "pass --weights PATH")
        if weights.sha256 != spec["weights_sha256"]:
            raise UserError(f"{weights.arg!r} is not the weights this head was trained on (sha256 differs from "
                            f"{spec['weights_sha256'][:12]}…)")
    bb = load_backbone(spec["backbone"], weights)
    if bb.weights_id != w:
        raise UserError(f"this head needs {w} but {bb.weights_id} was loaded")
    return bb


def head_scorer(src: Source, spec: dict, device):
    """(uint8 image batch -> (class scores, outlier scores or None), what the scores are, class
    names) for a classify head on codes; outlier scores (heads.reject) only with --reject."""
    from ..codes.encoder import Encoder
    from ..heads.reject import nearest_distance, reference_index

    head = runs.load_head(src.model, spec, src.trust_pickle)
    pre = Preprocess.from_spec(spec)
    enc = Encoder(backbone_for(spec, src.weights), device, pre.mean, pre.std,
                  precision=precision_for(device.type, src.precision))
    has_proba = hasattr(head, "predict_proba")
    ref = reject_reference(src, spec)
    ref = None if ref is None else reference_index(ref)  # built once: exact up to 50,000 codes, FAISS above
    # score columns follow the head's own classes_ (label numbers); names come from model.json
    columns = [spec["classes"][int(c)] for c in head[-1].classes_]

    def scores(x):
        codes = enc(x).cpu().numpy()
        far = nearest_distance(ref, codes) if ref is not None else None
        if has_proba:
            return head.predict_proba(codes), far
        d = head.decision_function(codes)  # no probabilities (LinearSVC): the margin
        return (np.stack([-d, d], 1) if d.ndim == 1 else d), far
    return scores, "probability" if has_proba else "margin", columns


def reject_reference(src: Source, spec: dict):
    """The stored training codes of the head's rejection rule (None without --reject)."""
    if not src.reject:
        return None
    rule = spec.get("reject") or {}
    f = Path(src.model) / str(rule.get("file", ""))
    if not rule.get("file") or not f.is_file() or f.parent != Path(src.model):
        raise UserError(f"{str(src.model)!r} records no rejection rule (made before --reject existed, or by the "
                        "out-of-core head); run classify again to record one")
    try:
        ref = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{str(f)!r} is not readable ({type(e).__name__}); run classify again") from None
    if ref.ndim != 2 or not np.isfinite(ref).all():
        raise UserError(f"{str(f)!r} does not hold training codes; run classify again")
    return ref


def finetune_scorer(src: Source, spec: dict, device):
    """(uint8 image batch -> (class probabilities, 1 - top probability or None), "probability",
    class names) for a fine-tuned checkpoint."""
    import torch

    from ..codes.backbone import classifier, load_backbone
    from ..images.transforms import normalize

    bf16 = precision_for(device.type, src.precision) == BF16

    if src.reject and not (spec.get("reject") or {}).get("rule"):
        raise UserError(f"{str(src.model)!r} records no rejection rule (made before --reject existed); "
                        "run finetune again to record one")
    model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
    try:
        state = torch.load(runs.model_file(src.model, spec), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # truncated or foreign checkpoint
        raise UserError(f"{spec['file']!r} in {str(src.model)!r} is not a readable checkpoint of this model "
                        f"({type(e).__name__}: {str(e).splitlines()[0].split('. ')[0][:160]})") from None
    model.eval().to(device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def scores(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalize(x.to(device), channels_last=True))
        p = logits.float().softmax(1).cpu().numpy()
        return p, (1.0 - p.max(1)) if src.reject else None
    return scores, "probability", list(spec["classes"])
