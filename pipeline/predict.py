"""Label new images with a saved classify head or fine-tuned model.

Usage: python -m pipeline predict --model RUN_DIR IMAGE_OR_DIR... [--csv FILE]
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from . import UserError
from .backbone import classifier, load_backbone, sha256_file
from .config import Common, opt, resolve_device
from .data import ImageRecord
from .features import Encoder, ImageFiles, normalize


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
    if w.startswith("none(seed="):
        return load_backbone(spec["backbone"], "none", int(w[len("none(seed="):-1]))
    if w.startswith("file:"):
        path = Path(override or spec["weights_arg"])
        if not path.is_file():
            raise UserError(f"this head was trained on codes from {w} ({spec['weights_arg']}), which is not here; pass --weights PATH")
        if sha256_file(path) != spec["weights_sha256"]:
            raise UserError(f"{str(path)!r} is not the weights this head was trained on (sha256 differs from {spec['weights_sha256'][:12]}…)")
        return load_backbone(spec["backbone"], str(path))
    bb = load_backbone(spec["backbone"], w.split(".")[-1])
    if bb.weights_id != w:
        raise UserError(f"this head needs {w} but {bb.weights_id} was loaded")
    return bb


def predict(cfg: Config) -> list[tuple[str, str, float]]:
    if cfg.batch_size < 1:
        raise UserError("--batch-size must be positive")
    spec_file = Path(cfg.model) / "model.json"
    if not spec_file.is_file():
        raise UserError(f"{str(cfg.model)!r} is not a run folder with a model.json (made by classify or finetune)")
    spec = json.loads(spec_file.read_text())
    paths = list_images(cfg.images)
    device = resolve_device(cfg.device)
    if spec["kind"] == "head":
        head = joblib.load(Path(cfg.model) / spec["file"])
        enc = Encoder(backbone_for(spec, cfg.weights), device)
        def probs(x):
            codes = enc(x).cpu().numpy()
            if hasattr(head, "predict_proba"):
                return head.predict_proba(codes)
            d = head.decision_function(codes)  # no probabilities (LinearSVC): report the margin
            return np.stack([-d, d], 1) if d.ndim == 1 else d
    else:
        model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
        model.load_state_dict(torch.load(Path(cfg.model) / spec["file"], map_location="cpu", weights_only=True))
        model.eval().to(device, memory_format=torch.channels_last)
        @torch.inference_mode()
        def probs(x):
            return model(normalize(x.to(device), channels_last=True)).softmax(1).float().cpu().numpy()
    ds = ImageFiles(Path(""), [ImageRecord(str(p), -1, 0, 0) for p in paths], spec["resize"], spec["crop"], spec.get("fast_decode", True))
    rows = []
    for i in range(0, len(ds), cfg.batch_size):
        items = [ds[j] for j in range(i, min(i + cfg.batch_size, len(ds)))]
        good = [k for k, (_, why) in enumerate(items) if not why]
        p = probs(torch.stack([items[k][0] for k in good])) if good else np.zeros((0, len(spec["classes"])))
        out = dict(zip(good, p))
        for k, (_, why) in enumerate(items):
            path = str(paths[i + k])
            if why:
                print(f"{path}\tskipped\t{why}", file=sys.stderr)
                continue
            rows.append((path, spec["classes"][int(out[k].argmax())], float(out[k].max())))
    for r in rows:
        print(f"{r[0]}\t{r[1]}\t{r[2]:.4f}")
    if cfg.csv:
        with open(cfg.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "class", "score"])
            w.writerows(rows)
    return rows


def run(cfg: Config) -> None:
    predict(cfg)
