"""Export a run as one ONNX file and a standalone predict.py beside it.

Usage: cnncodes export --model RUN_DIR --out DIR [--images FOLDER]

Writes DIR/model.onnx (uint8 crops in; normalisation, trunk and head inside; class names and the
resize/crop recipe in its metadata) and DIR/predict.py, which labels images with onnxruntime,
numpy and Pillow only and prints the rows `cnncodes predict` prints. Then prints the file size and
CPU ms per image in onnxruntime (batch 1 and 32) beside predict's on the same images (--images, or
random pixels), and how far apart their scores are. With the run's --reject rule (the default when
it records one; --no-reject leaves it out) the file also outputs the rule's score, the threshold is
in its metadata, `predict.py --reject` labels far images "unknown", and the check compares those
decisions with `predict --reject`'s. Exit code 1 when they disagree. The file holds at most
10,000 training codes (export.model.CODES_MAX): a k-NN head on more is refused in one line before
anything is written. docs/export.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.cli import Settings, opt
from ..core.files import check_out_folder, write_text
from ..runs import folder as runs

TOLERANCE = 1e-3  # max |score difference| between onnxruntime and predict before the export is called wrong


@dataclass(frozen=True)
class Config(Settings):
    model: Path = opt(Path(""), "a run folder written by classify or finetune (holds model.json)", required=True)
    out: Path = opt(Path(""), "folder to write model.onnx and predict.py into (created; those two are replaced)",
                    required=True)
    images: str = opt("", "a folder or image to time and check the export on (its first 32 images); empty: random "
                          "pixels")
    weights: str = opt("", "weights file for a head trained on file weights, when it is no longer at the recorded path")
    trust_pickle: bool = opt(False, "read a head saved as a pickle (older runs): only for files you made yourself")
    check: bool = opt(True, "time onnxruntime against predict and compare their scores (--no-check skips)")
    reject: bool = opt(True, "put the run's --reject rule into the file (a head's stored training codes, float16; a "
                             "fine-tune's confidence), when the run records one (--no-reject leaves it out)")


def read_spec(run_dir: Path) -> dict:
    """model.json of a run this stage can export; UserError (one line) for anything else."""
    spec = runs.read_model(run_dir)
    if not isinstance(spec, dict) or spec.get("kind") not in ("head", "finetune"):
        kind = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise UserError(f"{str(run_dir)!r} holds a model.json of kind {kind!r}, not a head or fine-tune run")
    missing = [k for k in ("backbone", "weights", "classes", "resize", "crop", "file") if k not in spec]
    if missing:
        raise UserError(f"model.json in {str(run_dir)!r} lacks {', '.join(missing)}: not a run this version exports")
    return spec


def export(cfg: Config) -> dict:
    """Write DIR/model.onnx and DIR/predict.py; returns what was written and, unless --no-check,
    the timing and comparison (export.check.Check)."""
    spec = read_spec(cfg.model)  # a missing or foreign folder is refused before torch is imported
    check_out_folder(cfg.out)
    from ..export import check, onnx_file, standalone
    from ..export.model import build

    onnx_file.onnx_modules()  # a missing package is named before the model is built
    built = build(cfg.model, spec, cfg.weights, cfg.trust_pickle, cfg.reject)
    path = cfg.out / "model.onnx"
    opset = onnx_file.write_onnx(built, path, onnx_file.metadata(built, spec, cfg.model))
    script = write_text(cfg.out / "predict.py", Path(standalone.__file__).read_text())
    os.chmod(script, 0o755)
    out = {"onnx": path, "script": script, "bytes": path.stat().st_size, "opset": opset, "built": built,
           "check": None}
    if cfg.check:
        x, what = check.sample(cfg.images, built.pre, built.fast_decode)
        scorer = check.predict_scorer(cfg.model, spec, cfg.weights, cfg.trust_pickle, built.reject is not None)
        out["check"] = check.check(path, scorer, x, what, built.reject["threshold"] if built.reject else None)
    return out


def run(cfg: Config) -> int:
    r = export(cfg)
    b, c = r["built"], r["check"]
    print(f"wrote {r['onnx']} ({r['bytes'] / 1e6:.1f} MB, opset {r['opset']}): {b.what}, {len(b.classes)} classes, "
          f"{b.score}; input uint8 N x 3 x {b.pre.crop} x {b.pre.crop} after {b.pre.describe()}")
    print(f"wrote {r['script']}: python {r['script']} IMAGE_OR_DIR... (needs onnxruntime, numpy, Pillow)")
    print(reject_line(b))
    if c is None:
        return 0
    print(f"CPU ms per image, model only (decoded once, warm, best of 3), {c.what}, {c.threads} threads:")
    for name, ms in (("onnxruntime", c.onnx_ms), ("predict", c.predict_ms)):
        print(f"  {name:<12} " + "   ".join(f"batch {k:>2}: {v:7.2f}" for k, v in ms.items()))
    print(f"onnxruntime vs predict: {c.agree}/{c.n} labels agree, max |{b.score} difference| {c.max_diff:.2g}")
    wrong = c.agree < c.n or c.max_diff > TOLERANCE
    if c.reject_agree is not None:
        print(f"onnxruntime vs predict --reject: {c.reject_agree}/{c.n} unknown-or-not decisions agree ({c.unknown} "
              f"unknown), max |distance difference| {c.distance_diff:.2g}"
              + (f"; {c.borderline} within 1e-4 of the threshold" if c.borderline else ""))
        wrong |= c.n - c.reject_agree > c.borderline or c.distance_diff > TOLERANCE
    if wrong:
        print(f"export: the ONNX file does not reproduce predict (tolerance {TOLERANCE:g})")
        return 1
    return 0


def reject_line(b) -> str:
    """What the file holds of the --reject rule, in one line."""
    if not b.reject:
        return "no reject rule in the file (the run records none, or --no-reject): predict.py --reject is refused"
    r = b.reject
    held = (f"the {b.reference_shape[0]:,} x {b.reference_shape[1]} stored training codes (float16, "
            f"{b.reference_shape[0] * b.reference_shape[1] * 2 / 1e6:.1f} MB of the file)" if b.reference_shape
            else "the top probability")
    return (f"reject rule in the file: {r['rule']} ({held}) > {r['threshold']:.4g}, set on {r.get('set_on')} to turn "
            f"away {100 * r.get('rate', 0):g}% of known images: python predict.py --reject ...")
