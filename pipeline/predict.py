"""Label new images with a saved classify head or fine-tuned model.

Usage: cnncodes predict --model RUN_DIR IMAGE_OR_DIR... [--csv FILE]

Prints one `path  class  probability` row per image (`margin` instead of `probability` for a
head without probabilities, LinearSVC: the winning class's decision value), then a summary line on
stderr. Exit code 1 when any image could not be labelled; each is named on stderr.
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import UserError, runs
from .config import DEVICES, opt, positive
from .data import IMG_EXTENSIONS, ImageRecord, Preprocess
from .files import write_text
from .weights import Weights


@dataclass(frozen=True)
class Config:
    images: tuple = opt((), "image files or folders (searched recursively)", positional=True, nargs="+")
    model: Path = opt(Path(""), "a run folder written by classify or finetune (holds model.json)", required=True)
    weights: str = opt("", "weights file for a head trained on file weights, when it is no longer at the recorded path")
    csv: str = opt("", "also write path,class,probability (or margin) rows to this CSV file")
    device: str = opt("auto", "where to run: auto picks cuda when available", DEVICES)
    batch_size: int = opt(32, "images per batch")
    trust_pickle: bool = opt(False, "load a head saved as a pickle (model.joblib, older runs): only for files you "
                                    "made yourself, since loading a pickle can run any code")

    def __post_init__(self):
        positive(batch_size=self.batch_size)


def list_images(args) -> list[Path]:
    out = []
    for a in map(Path, args):
        if a.is_dir():
            out += sorted(p for p in a.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        elif a.is_file():
            out.append(a)
        else:
            raise UserError(f"{str(a)!r} does not exist")
    if not out:
        raise UserError("no images found in " + ", ".join(map(str, args)))
    return out


def backbone_for(spec: dict, override: str = ""):
    """The exact backbone a head was trained on, or a clear refusal."""
    from .backbone import load_backbone

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


def head_scorer(cfg: Config, spec: dict, device):
    """(uint8 image batch -> class scores, what the scores are) for a classify head on codes."""
    from .encode import Encoder

    head = runs.load_head(cfg.model, spec, cfg.trust_pickle)
    pre = Preprocess.from_spec(spec)
    enc = Encoder(backbone_for(spec, cfg.weights), device, pre.mean, pre.std)
    has_proba = hasattr(head, "predict_proba")
    # score columns follow the head's own classes_ (label numbers); names come from model.json
    columns = [spec["classes"][int(c)] for c in head[-1].classes_]

    def scores(x):
        codes = enc(x).cpu().numpy()
        if has_proba:
            return head.predict_proba(codes)
        d = head.decision_function(codes)  # no probabilities (LinearSVC): the margin
        return np.stack([-d, d], 1) if d.ndim == 1 else d
    return scores, "probability" if has_proba else "margin", columns


def finetune_scorer(cfg: Config, spec: dict, device):
    """(uint8 image batch -> class probabilities, "probability") for a fine-tuned checkpoint."""
    import torch

    from .backbone import classifier, load_backbone
    from .encode import normalize

    model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
    try:
        state = torch.load(runs.model_file(cfg.model, spec), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # truncated or foreign checkpoint
        raise UserError(f"{spec['file']!r} in {str(cfg.model)!r} is not a readable checkpoint of this model "
                        f"({type(e).__name__}: {str(e).splitlines()[0].split('. ')[0][:160]})") from None
    model.eval().to(device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def scores(x):
        return model(normalize(x.to(device), channels_last=True)).softmax(1).float().cpu().numpy()
    return scores, "probability", list(spec["classes"])


def predict(cfg: Config) -> tuple[list[tuple[str, str, float]], list[tuple[str, str]], str]:
    """(rows of path, class, score; files that could not be labelled with why; the score's name)."""
    from .config import resolve_device
    from .encode import eval_images

    spec = runs.read_model(cfg.model)
    paths = list_images(cfg.images)
    device = resolve_device(cfg.device)
    scorer, kind, columns = (head_scorer if spec["kind"] == "head" else finetune_scorer)(cfg, spec, device)
    ds = eval_images(Path(""), [ImageRecord(str(p), -1, 0, 0) for p in paths], Preprocess.from_spec(spec),
                     spec.get("fast_decode", True))
    rows, bad = label(ds, scorer, columns, cfg.batch_size)
    if cfg.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "class", kind])
        w.writerows(rows)
        write_text(cfg.csv, buf.getvalue())
    return rows, bad, kind


def label(ds, scorer, classes: list[str], batch_size: int):
    """(path, class, score) for each decodable image in `ds`, and (path, reason) for the others;
    `classes` names the scorer's columns."""
    import torch

    rows, bad = [], []
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        good = [k for k, (_, why) in enumerate(items) if not why]
        p = scorer(torch.stack([items[k][0] for k in good])) if good else np.zeros((0, len(classes)))
        out = dict(zip(good, p))
        for k, (_, why) in enumerate(items):
            path = ds.records[i + k].path
            if why:
                bad.append((path, why))
            else:
                rows.append((path, classes[int(out[k].argmax())], float(out[k].max())))
    return rows, bad


def run(cfg: Config) -> int:
    rows, bad, kind = predict(cfg)
    print(f"path\tclass\t{kind}")
    for r in rows:
        print(f"{r[0]}\t{r[1]}\t{r[2]:.4f}")
    for path, why in bad:
        print(f"{path}: not labelled: {why}", file=sys.stderr)
    print(f"labelled {len(rows)} of {len(rows) + len(bad)} images with {cfg.model}"
          + (f"; {len(bad)} could not be read" if bad else "") + (f"; rows in {cfg.csv}" if cfg.csv else ""),
          file=sys.stderr)
    return 1 if bad else 0
