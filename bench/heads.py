"""Section heads: fit time of each head on the DATA codes (CV), and `classify --head all` on
synthetic codes shaped like real ones against `features` on as many images, timed in the same run:
heads must take less time than extraction."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.codes.store import read_codes
from pipeline.codes.synthetic import Synthetic, write_synthetic_codes
from pipeline.core.files import read_json
from pipeline.heads.registry import HEADS
from pipeline.heads.cv import fit_head
from pipeline.stages.classify import Config as ClassifyConfig, classify

from .common import Extraction, Setup, Shared, log, row
from .synthetic import make_image_folder
from .timing import extract_ours


def bench_heads(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Each head with CV on our DATA codes (reused from the extraction section when it ran), then the pace rows."""
    ours = shared.ours if shared is not None and shared.ours else extract_ours(s, s.data, "heads")
    tr = read_codes(ours.path).splits["train"]
    rows = []
    for name, head in HEADS.items():
        log(f"heads: {name} with CV on the {len(tr.labels)} train codes")
        t0 = time.perf_counter()
        search = fit_head(name, tr.codes, tr.labels, folds=5, seed=s.seed, jobs=0)
        what = f"{len(search.cv_scores)} of {len(head.values)} {head.param.removeprefix('clf__')} values"
        rows.append(row(f"head fit with CV: {name} ({s.data.resolve().name} codes)", time.perf_counter() - t0, None,
                        "s", note=f"path of {what} x {search.n_splits_}-fold CV + refit, on "
                                  f"{tr.codes.shape[0]}x{tr.codes.shape[1]} train codes; no reference"))
    return rows + bench_heads_pace(s)


def bench_heads_pace(s: Setup) -> list[dict]:
    """`classify --head all` against `features` on as many images, both timed in this run: the
    first case's images are extracted here, the others' time is projected from that rate."""
    n_tr, n_va = s.head_cases[0][:2]
    w, h = s.head_image_size
    log(f"heads: features on {n_tr + n_va:,} synthetic {w}x{h} JPEGs")
    root = make_image_folder(s.tmp / "heads-images", n_tr + n_va, s.head_image_size)
    ext = extract_ours(s, root, "heads-images")
    shutil.rmtree(root)
    rows = []
    for i, (n_tr, n_va, dim, k, sep) in enumerate(s.head_cases):
        label = f"{n_tr:,}x{dim}, {k} classes"
        log(f"heads: classify --head all on {label} synthetic codes")
        f = s.tmp / f"codes-{n_tr}x{dim}.h5"
        extract_s = ext.seconds if i == 0 else (n_tr + n_va) / (ext.images / ext.seconds)
        write_synthetic_codes(f, Synthetic(n_tr, n_va, dim, tuple(f"c{c}" for c in range(k)), sep, s.seed,
                                           overlap=True, standardise=True, dataset=f.stem,
                                           extract_seconds=extract_s))
        wall, docs = classify_all(s, f)
        rows.append(row(f"heads {label}: classify --head all vs features on {n_tr + n_va:,} images", wall,
                        extract_s, "s", "lower", 1.0,
                        note=_pace_note(s, ext, n_tr + n_va, measured=i == 0)))
        rows += head_rows(label, docs)
    return rows


def _pace_note(s: Setup, ext: Extraction, n: int, measured: bool) -> str:
    w, h = s.head_image_size
    return ((f"features measured on {ext.images:,} synthetic {w}x{h} JPEGs with {s.backbone} ({ext.seconds:.0f}s)"
             if measured else f"features time projected from the {ext.images / ext.seconds:.1f} images/s measured "
                              f"above with {s.backbone} ({n:,} images)")
            + "; classify: 4 heads, 5-fold CV on train, val once, label curve on its default budget"
            + ("; quick mode: smaller shapes than the issue's" if s.quick else ""))


def classify_all(s: Setup, features: Path) -> tuple[float, list[dict]]:
    """Wall time of `classify --head all` with its default settings (the label curve's `auto`
    budget included: the codes' header carries the extraction time it is measured against) and
    each head's metrics.json."""
    t0 = time.perf_counter()
    runs = classify(ClassifyConfig(features=features, head="all", out=s.tmp / f"runs-{features.stem}", seed=s.seed))
    return time.perf_counter() - t0, [read_json(r / "metrics.json") for r in runs]


def head_rows(label: str, docs: list[dict]) -> list[dict]:
    """One row per head of a `classify --head all` run: its fit time, scores and the CV path tried."""
    out = []
    for m in docs:
        tried = ", ".join(f"{t['value']:g}: {100 * t['mean']:.1f}%" for t in m["cv_path"])
        out.append(row(f"heads {label}: {m['head']} fit with CV", m["seconds"]["fit"], None, "s",
                       note=f"CV {100 * m['cv_score']:.1f}%, val {100 * m['val']['accuracy']:.1f}%, chosen "
                            f"{m['hyperparameters']}; path tried ({tried})"
                            + (f", not tried {m['cv_untried']}" if m["cv_untried"] else "")
                            + (f"; solver {m['solver']}" if m.get("solver") else "")))
    return out
