"""A saved run as a scorer: uint8 image batches in, class scores out (and, with `reject`, how far
each image is from what the run was trained on: heads.reject), for `predict` and the export check.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .. import UserError
from ..codes.weights import Weights
from ..core.devices import BF16, precision_for
from ..images.transforms import Preprocess
from . import folder as runs

UNKNOWN, KNOWN = "unknown", "known"  # the status predict --reject gives an image its rule turns away, or keeps


class Source(NamedTuple):
    """Where a run is and how to load it."""

    model: Path  # the run folder
    weights: str = ""  # a weights file that replaces the recorded path (file weights that moved)
    trust_pickle: bool = False  # older runs saved their head as a pickle
    reject: bool = False  # also score how far each image is from the training images
    precision: str = "auto"  # the --precision flag (core.devices.precision_for)


def measured_precision(src: Source, spec: dict, device, batches: Callable[[int], Iterator], batch_size: int,
                       enough: bool) -> Source:
    """The source with --precision resolved (fp32 or bf16) for this machine: auto as `features`
    decides it (codes.autoprec; the same decision, per backbone and batch size), measured when
    none is remembered on `batches(n)`, the first n batches of the images to label (decode
    included), unless there are fewer than one batch of them (`enough`): then fp32, unremembered."""
    from ..codes import autoprec
    from ..core.devices import undecided
    from ..core.precision import decision_key

    key = decision_key(spec["backbone"], batch_size)
    if not enough and undecided(device.type, src.precision, key):
        print("precision auto: fewer images than one batch, too few to time bf16 against fp32: fp32", file=sys.stderr)
        return src._replace(precision="fp32")

    def run() -> dict:
        plain = src._replace(reject=False)
        scorers = {p: scorer_for(plain._replace(precision=flag), spec, device)[0]
                   for p, flag in (("fp32", "fp32"), (BF16, "bf16"))}
        steps = {p: (lambda x, f=f: f(x)[0]) for p, f in scorers.items()}
        return autoprec.measure(steps, ((x, len(x)) for x, _ in batches(autoprec.BATCHES)))
    got = autoprec.settle(key, device.type, src.precision, run, file=sys.stderr)
    return src._replace(precision="bf16" if got == BF16 else "fp32")


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
    ref = reject_reference(src, spec, head_dim(head))
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


def head_dim(head) -> int | None:
    """The code length a loaded head takes (None when it does not say)."""
    n = getattr(head, "n_features_in_", None) or getattr(head[-1], "n_features_in_", None)
    fitted = getattr(head[-1], "_fit_X", None)  # k-NN keeps its training codes
    return int(n) if n else int(fitted.shape[1]) if getattr(fitted, "ndim", 0) == 2 else None


def check_rule(src: Source, spec: dict) -> dict:
    """The run's rejection rule, validated as model.npz is: its threshold a finite number (a NaN
    would never reject, a string compares as nothing sensible); a one-line UserError otherwise."""
    rule = spec.get("reject") or {}
    t = rule.get("threshold")
    if rule.get("rule") and (isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t)):
        raise UserError(f"{str(src.model)!r}: the rejection rule's threshold is {t!r}, not a finite number; run "
                        "classify or finetune again")
    return rule


def reject_reference(src: Source, spec: dict, dim: int | None = None):
    """The stored training codes of the head's rejection rule (None without --reject), `dim` wide
    when given (the head's code length)."""
    if not src.reject:
        return None
    rule = check_rule(src, spec)
    f = Path(src.model) / str(rule.get("file", ""))
    if not rule.get("file") or not f.is_file() or f.parent != Path(src.model):
        raise UserError(f"{str(src.model)!r} records no rejection rule (made before --reject existed, or by the "
                        "out-of-core head); run classify again to record one")
    try:
        ref = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{str(f)!r} is not readable ({type(e).__name__}); run classify again") from None
    if ref.ndim != 2 or not len(ref) or not np.isfinite(ref).all() or (dim and ref.shape[1] != dim):
        raise UserError(f"{str(f)!r} does not hold training codes{f' of {dim} values' if dim else ''} (it holds "
                        f"an array of shape {ref.shape}); run classify again")
    return ref


def finetune_scorer(src: Source, spec: dict, device):
    """(uint8 image batch -> (class probabilities, 1 - top probability or None), "probability",
    class names) for a fine-tuned checkpoint, its batches normalised with the mean/std the run
    recorded (the weights' own; ImageNet's for runs that recorded none)."""
    import torch

    from ..codes.backbone import classifier, load_backbone
    from ..images.transforms import normalize

    bf16 = precision_for(device.type, src.precision) == BF16
    pre = Preprocess.from_spec(spec)

    if src.reject and not check_rule(src, spec).get("rule"):
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
            logits = model(normalize(x.to(device), True, pre.mean, pre.std))
        p = logits.float().softmax(1).cpu().numpy()
        return p, (1.0 - p.max(1)) if src.reject else None
    return scores, "probability", list(spec["classes"])
