"""Section audit: `cnncodes audit` at scale (synthetic codes: seconds per part and peak resident
memory, in a fresh process: 1,000,000 x 512 through the neighbour index beside 100,000 x 512 through
the exact search; and the index's recall against exact on 100,000 codes with 1,000 planted leaks:
the share of the pairs exact search flags that the index flags too, >= 0.95 wanted) and, with real
weights, its quality on DATA's own codes:

- label issues: 10% of train labels flipped (seeds 0-4), AUROC of the label-issue score for
  "flipped" (the target: >= 0.9);
- leaks: 20 val images (10 per class, seeded) copied into train/<class>/ after a resize, a JPEG
  re-save and a small crop, codes extracted by `features`, then the audit, once through the exact
  search and once through the approximate index (forced, however few the codes): the share of the
  20 leaks each finds (>= 0.95 wanted) and the share of its cross-split pairs that are leaks (>= 0.9).

The same from the command line (docs/audit.md):
    python -m bench --sections audit --data data/hymenoptera_data --backbone mobilenet_v2 --weights W
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.audit.findings import Spec, audit_splits
from pipeline.audit.scale import index_recall, synthetic_scale_check
from pipeline.codes.index import EXACT_MAX
from pipeline.codes.store import SplitCodes, read_codes

from .common import Setup, Shared, Target, log, row
from .timing import extract_ours

SCALE = (1_000_000, 512)  # synthetic codes audited through the index: rows, dimension (quick: QUICK_ROWS rows)
EXACT_ROWS = 100_000  # ... and through the exact search (quick: QUICK_ROWS), and the index's recall against it
QUICK_ROWS = 5_000
QUICK_C = 0.001  # quick: the softmax C fixed (CV's choice on these codes at 5,000 and 100,000 rows), no search
FLIP_SEEDS = range(5)
LEAK_EDITS = {  # name -> (scale range, JPEG quality range, crop fraction range per edge)
    "resize 60-75%, JPEG q75-85, crop 3-8%": ((0.60, 0.75), (75, 85), (0.03, 0.08)),
    "half size, JPEG q75-85, crop 3-8%": ((0.50, 0.50), (75, 85), (0.03, 0.08)),
}


def flipped_labels(labels: np.ndarray, n_classes: int, seed: int, share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, which were flipped): `share` of the rows, drawn with `seed`, each moved to
    another class drawn uniformly."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), int(round(share * len(labels))), replace=False)] = True
    noisy = labels.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, n_classes, flipped.sum())) % n_classes
    return noisy, flipped


def flip_auroc(features: Path, seeds=FLIP_SEEDS, spec: Spec = Spec()) -> list[dict]:
    """Per seed: AUROC of the label-issue score for the flipped train images, the share of the
    flips among the top-ranked (as many as were flipped), the C the audit chose."""
    from sklearn.metrics import roc_auc_score

    codes, out = read_codes(features), []
    tr = codes.splits["train"]
    for seed in seeds:
        noisy, flipped = flipped_labels(tr.labels, len(codes.classes), seed)
        splits = {**codes.splits, "train": SplitCodes(tr.codes, noisy, tr.paths, [])}
        a = audit_splits(splits, codes.classes, spec)
        score = a.issues.score[a.split_of == a.splits.index("train")]
        top = np.argsort(-score, kind="stable")[:flipped.sum()]
        out.append({"seed": seed, "auroc": float(roc_auc_score(flipped, score)), "top": float(flipped[top].mean()),
                    "C": a.rules["label_model"]["C"]})
    return out


def make_leaks(data: Path, out: Path, edit: tuple, per_class: int = 10, seed: int = 0) -> dict[str, str]:
    """A copy of `data` (train and val) with `per_class` val images per class copied into
    train/<class>/ after `edit` = (scale range, JPEG quality range, crop fraction range): each copy
    resized, cropped by a fraction off each edge, re-saved as JPEG. Returns {copy: original} as
    the codes record paths (split/class/name)."""
    (lo_s, hi_s), (lo_q, hi_q), (lo_c, hi_c) = edit
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    for split in ("train", "val"):
        shutil.copytree(data / split, out / split)
    truth = {}
    for cls in sorted(p.name for p in (out / "val").iterdir() if p.is_dir()):
        files = sorted(p for p in (out / "val" / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for f in (files[i] for i in sorted(rng.choice(len(files), min(per_class, len(files)), replace=False))):
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                k = rng.uniform(lo_s, hi_s)
                im = im.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
                c = rng.uniform(lo_c, hi_c, 4) * np.array([im.width, im.height, im.width, im.height])
                im = im.crop((round(c[0]), round(c[1]), im.width - round(c[2]), im.height - round(c[3])))
                name = f"leak-{f.stem}.jpg"
                im.save(out / "train" / cls / name, quality=int(rng.integers(lo_q, hi_q + 1)))
            truth[f"train/{cls}/{name}"] = f"val/{cls}/{f.name}"
    return truth


def leak_quality(features: Path, truth: dict[str, str], spec: Spec = Spec()) -> dict:
    """The audit of `features`: leaks found among `truth` ({copy: original}), cross-split pairs
    flagged, the threshold, and the flagged pairs that are not leaks."""
    codes = read_codes(features)
    a = audit_splits(codes.splits, codes.classes, spec)
    pairs = [(p, o) for p, s, o, os_, _ in a.pair_rows() if s != os_]
    found = sum(truth.get(o) == p for p, o in pairs)
    return {"leaks": len(truth), "found": found, "flagged": len(pairs), "threshold": a.threshold,
            "recall": found / len(truth) if truth else None, "precision": found / len(pairs) if pairs else None,
            "other": [(p, o) for p, o in pairs if truth.get(o) != p]
            + [(p, o, s) for p, s_, o, os_, s in a.pair_rows() if s_ == os_]}


def scale_rows(s: Setup) -> list[dict]:
    rows, d = [], SCALE[1]
    for n, how, exact_max in ((QUICK_ROWS if s.quick else SCALE[0], "index", 0),
                              (QUICK_ROWS if s.quick else EXACT_ROWS, "exact search", 10 ** 9)):
        log(f"audit: {n:,} synthetic {d}-d codes ({how}), audited in a fresh process")
        r = synthetic_scale_check(n, d, c=QUICK_C if s.quick else 0.0, seed=s.seed, exact_max=exact_max)
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["parts"].items())
        note = (f"{r['classes']} classes, codes {r['codes_mib']:.0f} MiB; {parts}; {r['cpu_seconds']:.0f} CPU-s; "
                f"C={r['C']:g}{' fixed (quick)' if s.quick else ' ' + r['C_how']}, duplicate threshold "
                f"{r['threshold']:.3f}; counts {r['counts']}; neighbours: {r['index']}")
        rows += [row(f"audit on {n:,} synthetic {d}-d codes ({how}): wall time", r["seconds"], None, "s", note=note),
                 row(f"audit on {n:,} synthetic {d}-d codes ({how}): peak RSS", r["peak_rss_mib"], None, "MB",
                     note=f"VmHWM of the auditing process ({r['rss_at_start_mib']:.0f} MB of it at start: imports)")]
    n = QUICK_ROWS if s.quick else EXACT_ROWS
    log(f"audit: the index's recall against exact search on {n:,} codes with planted leaks")
    r = index_recall(n, d, leaks=n // 100, seed=s.seed)
    ex, ix = r["exact"], r["index"]
    rows.append(row(f"audit: index recall of exact search's pairs, {n:,} synthetic {d}-d codes", r["pairs_recall"],
                    None, "share", target=Target(0.95, of="ours"),
                    note=f"target is on ours; pairs flagged: exact {ex['pairs']}, index {ix['pairs']}; planted leaks "
                         f"found {ex['leaks_found']} / {ix['leaks_found']} of {r['leaks']}; neighbour search "
                         f"{ex['neighbours_s']:.0f}s exact, {ix['neighbours_s']:.0f}s index"))
    return rows


def quality_rows(s: Setup, shared: Shared) -> list[dict]:
    """Flip AUROC on DATA's codes and leak recall/precision on DATA with leaks made from its val."""
    feats = shared.ours.path if shared.ours is not None else extract_ours(s, s.data, "audit").path
    flips = flip_auroc(feats, FLIP_SEEDS, Spec(seed=s.seed))
    au = [f["auroc"] for f in flips]
    rows = [row("audit: label-issue AUROC, 10% of train labels flipped", float(np.mean(au)), None, "AUROC",
                target=Target(0.9, of="ours", conditions=(min(au) >= 0.9,)),
                note=f"target is on ours: mean of seeds {FLIP_SEEDS.start}-{FLIP_SEEDS.stop - 1} (min {min(au):.3f}; "
                     f"per seed {', '.join(f'{x:.3f}' for x in au)}; chosen C {[f['C'] for f in flips]}); "
                     f"flips among the top-ranked {np.mean([f['top'] for f in flips]):.0%}")]
    for name, edit in LEAK_EDITS.items():
        log(f"audit: 20 val images copied into train ({name}), features, audit (exact search, then the index)")
        truth = make_leaks(s.data, s.tmp / "audit-leaks", edit, seed=s.seed)
        feats = extract_ours(s, s.tmp / "audit-leaks", "audit-leaks").path
        for how, exact_max in (("exact search", EXACT_MAX), ("index", 0)):  # 0: the index however few codes
            q = leak_quality(feats, truth, Spec(seed=s.seed, exact_max=exact_max))
            rows.append(row(f"audit: leaks found ({name}; {how})", q["recall"], None, "share",
                            target=Target(0.95, of="ours", conditions=((q["precision"] or 0) >= 0.9,)),
                            note=f"target is on ours, with precision >= 0.9: {q['found']}/{q['leaks']} found, "
                                 f"{q['flagged']} cross-split pairs flagged (precision {q['precision'] or 0:.2f}), "
                                 f"threshold {q['threshold']:.3f}; other pairs {q['other'][:3]}"))
        shutil.rmtree(s.tmp / "audit-leaks")
    return rows


def bench_audit(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Scale always; quality only with real weights (random weights' codes say nothing about it)."""
    rows = scale_rows(s)
    if s.weights == "none":
        log("audit: quality on DATA skipped (--weights none)")
        return rows
    return rows + quality_rows(s, shared or Shared())
