"""One self-contained .onnx file (weights inside, no external data) with its recipe in metadata_props.

Exported with torch.onnx.export's default exporter (dynamo=True since torch 2.9: torch.export,
then onnxscript's translation and optimiser) at its default opset, the batch dimension dynamic.
Every metadata value is a string; lists are JSON. Input `image`: uint8 RGB, N x 3 x crop x crop,
the decoded image after the resize and centre crop, before normalisation. Outputs `scores`
(N x C float32: probabilities, or margins when `score` is "margin"; columns in `classes` order)
and `label` (N int64: the column of the largest score); with the run's --reject rule a third,
`distance` (N float32, the rule's score), and the rule with its threshold in the metadata's `reject`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from .. import UserError, __version__
from ..core.files import atomic_write
from .model import Built

FORMAT = "cnncodes-onnx/1"


def metadata(built: Built, spec: dict, run_dir) -> dict[str, str]:
    """The ONNX metadata_props: what a standalone reader needs to prepare an image and name a column."""
    p = built.pre
    outputs = "scores: N x C float32 in classes order; label: N int64, the arg max"
    reject = {}
    if built.reject:
        r = built.reject
        outputs += "; distance: N float32, the reject rule's score (unknown when above its threshold)"
        reject = {"reject": json.dumps({"rule": r["rule"], "threshold": float(r["threshold"]), "rate": r.get("rate"),
                                        "set_on": r.get("set_on"), "output": "distance",
                                        "reference_codes": list(built.reference_shape)})}
    return reject | {
        "format": FORMAT, "classes": json.dumps(built.classes), "score": built.score,
        "input": f"image: uint8 RGB, N x 3 x {p.crop} x {p.crop}: the image resized and centre-cropped, not "
                 "normalised (the model normalises)",
        "outputs": outputs,
        "resize": str(p.resize), "crop": str(p.crop), "interpolation": p.interpolation, "antialias": "true",
        "resize_rule": "shorter side to `resize` (longer: int(resize * long / short)), then a centre crop of "
                       "`crop` (top = round((h - crop) / 2)), as torchvision's Resize + CenterCrop on a PIL image",
        "mean": json.dumps(list(p.mean)), "std": json.dumps(list(p.std)),
        "decode": f"PIL draft>={p.resize}" if built.fast_decode else "PIL full",
        "exif_orientation": "applied (upright, as cnncodes decodes; an embedded colour profile other than sRGB "
                            "converted to sRGB)",
        "kind": spec["kind"], "model": built.what, "backbone": spec["backbone"], "weights": str(spec["weights"]),
        "run": Path(run_dir).resolve().name, "cnncodes_version": __version__,
    }


def onnx_modules():
    """(torch.onnx's exporter needs, onnx) or a UserError naming the install."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's dynamo exporter translates through it
    except ImportError as e:
        raise UserError(f"export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
                        "pip install 'cnncodes[export]'") from None
    return onnx


def output_names(built: Built) -> list[str]:
    return ["scores", "label"] + (["distance"] if built.reject else [])


def write_onnx(built: Built, path: Path, meta: dict[str, str]) -> int:
    """Export `built.module` to `path` (written atomically) with `meta` as metadata_props; returns
    the opset."""
    import torch

    onnx = onnx_modules()
    crop = built.pre.crop
    example = (torch.zeros(2, 3, crop, crop, dtype=torch.uint8),)  # 2, not 1: torch.export specialises size 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and tracing chatter
        program = torch.onnx.export(
            built.module, example, input_names=["image"], output_names=output_names(built),
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}}, dynamo=True, external_data=False,
            verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"cnncodes export of {built.what}: {meta['input']}"
    onnx.checker.check_model(proto)
    atomic_write(path, lambda fh: fh.write(proto.SerializeToString()))
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
