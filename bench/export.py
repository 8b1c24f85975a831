"""Section export: the cost to use a shipped model. A softmax head fitted on the DATA codes (reused
from the extraction section when it ran) is exported with `cnncodes export` (its --reject rule in
the file), then the file's size is set against what `predict` loads for the same model (the
backbone's parameters and buffers in float32 plus the run folder's files), and its CPU ms per
image in onnxruntime against predict's own computation (with --reject), at batch 1 and 32, on the
same DATA val images in the same run: the export check (decoded once, warm, best of three passes).
"""
from __future__ import annotations

import importlib.util

from pipeline.codes.backbone import load_backbone
from pipeline.stages.classify import Config as ClassifyConfig, classify
from pipeline.stages.export import Config as ExportConfig, export

from .common import Setup, Shared, log, row
from .timing import extract_ours

NEEDS = ("onnx", "onnxscript", "onnxruntime")


def bench_export(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Size and ms per image of the exported file against predict's."""
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return [row("export: ONNX file size", None, None, "MB",
                    note=f"not measured: {', '.join(missing)} not installed (pip install 'cnncodes[export]')")]
    ours = shared.ours if shared is not None and shared.ours else extract_ours(s, s.data, "export")
    log("export: a softmax head on the DATA codes")
    [run] = classify(ClassifyConfig(features=ours.path, head="softmax", out=s.tmp / "export-runs", seed=s.seed,
                                    folds=3, label_curve="off"))
    log("export: cnncodes export, then onnxruntime against predict --reject on the DATA val images")
    r = export(ExportConfig(model=run, out=s.tmp / "export-shipped", images=str(s.data / "val")))
    c, b = r["check"], r["built"]
    trunk = sum(t.numel() * 4 for t in load_backbone(s.backbone, s.weights, s.seed).trunk.state_dict().values())
    folder = sum(f.stat().st_size for f in run.iterdir() if f.is_file())
    inside = (f"its --reject rule inside ({b.reference_shape[0]:,} x {b.reference_shape[1]} training codes, float16)"
              if b.reference_shape else "no --reject rule inside")
    agree = (f"{c.agree}/{c.n} labels and {c.reject_agree}/{c.n} unknown decisions agree with predict --reject, max "
             f"|probability difference| {c.max_diff:.1g}")
    rows = [row(f"export: ONNX file size ({b.what})", r["bytes"] / 1e6, (trunk + folder) / 1e6, "MB", "lower",
                note=f"model.onnx {r['bytes']:,} bytes, opset {r['opset']}, {inside}; reference: what predict "
                     f"loads, {s.backbone} parameters and buffers in float32 ({trunk:,} bytes) + the run folder "
                     f"({folder:,} bytes: head, reject.npy, records)")]
    for batch in sorted(c.onnx_ms):
        rows.append(row(f"export: CPU ms per image at batch {batch}, onnxruntime vs predict", c.onnx_ms[batch],
                        c.predict_ms[batch], "ms/image", "lower",
                        note=f"model only ({c.what}, decoded once, warm, best of 3; {c.threads} threads), both "
                             f"with the reject rule; predict: BN-folded channels_last fp32 Encoder + scikit-learn "
                             f"head; {agree}"))
    return rows
