"""Label new images with a saved classify head or fine-tuned model.

Usage: python -m pipeline predict --model RUN_DIR IMAGE_OR_DIR... [--csv FILE]
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import UserError, runs
from .backbone import classifier, load_backbone
from .config import Common, opt, resolve_device
from .data import IMG_EXTENSIONS, ImageRecord
from .encode import Encoder, eval_images, normalize
from .files import write_text
from .weights import Weights


@dataclass(frozen=True)
class Config(Common):
    images: tuple = opt((), "image files or folders (searched recursively)", positional=True, nargs="+")
    model: Path = opt(Path(""), "a run folder written by classify or finetune (holds model.json)", required=True)
    weights: str = opt("", "local weights file for a head trained on file weights (default: the recorded path)")
    csv: str = opt("", "also write path,class,score rows to this CSV file")


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


def head_scorer(cfg: Config, spec: dict, device: torch.device):
    """uint8 image batch -> class scores, for a classify head on codes."""
    head = runs.load_head(cfg.model, spec)
    enc = Encoder(backbone_for(spec, cfg.weights), device)

    def probs(x):
        codes = enc(x).cpu().numpy()
        if hasattr(head, "predict_proba"):
            return head.predict_proba(codes)
        d = head.decision_function(codes)  # no probabilities (LinearSVC): report the margin
        return np.stack([-d, d], 1) if d.ndim == 1 else d
    return probs


def finetune_scorer(cfg: Config, spec: dict, device: torch.device):
    """uint8 image batch -> class probabilities, for a fine-tuned checkpoint."""
    model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
    model.load_state_dict(torch.load(Path(cfg.model) / spec["file"], map_location="cpu", weights_only=True))
    model.eval().to(device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def probs(x):
        return model(normalize(x.to(device), channels_last=True)).softmax(1).float().cpu().numpy()
    return probs


def predict(cfg: Config) -> list[tuple[str, str, float]]:
    spec = runs.read_model(cfg.model)
    paths = list_images(cfg.images)
    device = resolve_device(cfg.device)
    probs = (head_scorer if spec["kind"] == "head" else finetune_scorer)(cfg, spec, device)
    ds = eval_images(Path(""), [ImageRecord(str(p), -1, 0, 0) for p in paths], spec["resize"], spec["crop"],
                     spec.get("fast_decode", True))
    rows = label(ds, probs, spec["classes"], cfg.batch_size)
    for r in rows:
        print(f"{r[0]}\t{r[1]}\t{r[2]:.4f}")
    if cfg.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "class", "score"])
        w.writerows(rows)
        write_text(cfg.csv, buf.getvalue())
    return rows


def label(ds, probs, classes: list[str], batch_size: int) -> list[tuple[str, str, float]]:
    """(path, class, score) for each decodable image in `ds`; each skipped one is named on stderr."""
    rows = []
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        good = [k for k, (_, why) in enumerate(items) if not why]
        p = probs(torch.stack([items[k][0] for k in good])) if good else np.zeros((0, len(classes)))
        out = dict(zip(good, p))
        for k, (_, why) in enumerate(items):
            path = ds.records[i + k].path
            if why:
                print(f"{path}\tskipped\t{why}", file=sys.stderr)
                continue
            rows.append((path, classes[int(out[k].argmax())], float(out[k].max())))
    return rows


def run(cfg: Config) -> None:
    predict(cfg)
