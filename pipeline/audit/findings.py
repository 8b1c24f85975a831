"""The audit of a features file's codes, and its files: label_issues.csv, outliers.csv (path, split,
label, suggested, score; higher = more suspect; most suspect first), duplicates.csv (path, split,
other, other_split, similarity: `other` is the copy to drop) and exclude.txt (those copies), plus
audit.json (the rules' numbers, counts, seconds). Every file is written atomically; a CSV cell
that a spreadsheet would run as a formula gets a leading ' (core.files.csv_safe).
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import UserError
from ..codes.store import SplitCodes
from ..core.files import atomic_write, csv_safe, json_digest, write_json, write_text
from ..images.exclude import format_exclusions
from ..images.groups import group_ids, read_groups
from ..images.scan import check_classes
from ..heads.cv import check_groups
from .duplicates import ALPHA, Z_OUTLIER, Pairs, duplicate_pairs, duplicate_threshold, outlier_scores, priority
from .labels import LabelIssues, fit_label_model, label_issues, probabilities
from ..codes.index import EXACT_MAX, IndexSpec, View, search
from ..codes.neighbours import BLOCK, cosine_both, whitened_rows, whitening

ROW_COLUMNS = ("path", "split", "label", "suggested", "score")
PAIR_COLUMNS = ("path", "split", "other", "other_split", "similarity")
FILES = ("label_issues.csv", "outliers.csv", "duplicates.csv", "exclude.txt", "audit.json")  # what an audit writes


@dataclass(frozen=True)
class Spec:
    """How the audit runs (the stage's flags)."""

    train_split: str = "train"
    folds: int = 5
    seed: int = 0
    c: float = 0.0  # softmax C; 0: chosen by CV on train
    neighbours: int = 10  # k: neighbours kept per image; outliers score the k-th
    threshold: float = 0.0  # duplicate cosine similarity; 0: read off the data
    block: int = BLOCK
    jobs: int = 1
    whiten: int = 0  # principal components of train kept by the whitening; 0: min(d, train rows // 2)
    groups: str = ""  # a groups file (images.groups): the label model's folds keep each group on one side
    exact_max: int = EXACT_MAX  # images up to which the neighbour search is exact (codes.index)


@dataclass
class Audit:
    classes: list[str]
    splits: list[str]
    paths: list[str]
    split_of: np.ndarray  # row -> index into splits
    labels: np.ndarray
    issues: LabelIssues
    pairs: Pairs
    outlier: np.ndarray  # modified z-score of the k-th neighbour distance
    threshold: float
    rules: dict  # the numbers behind every flag, for audit.json and the summary
    seconds: dict = field(default_factory=dict)

    def rows(self, score: np.ndarray, flagged: np.ndarray) -> list[tuple]:
        """(path, split, label, suggested, score) of the flagged rows, most suspect first."""
        at = np.flatnonzero(flagged)
        at = at[np.argsort(-score[at], kind="stable")]
        return [(self.paths[i], self.splits[self.split_of[i]], self.classes[self.labels[i]],
                 self.classes[self.issues.suggested[i]], float(score[i])) for i in at]

    def label_rows(self) -> list[tuple]:
        return self.rows(self.issues.score, self.issues.flagged)

    def outlier_rows(self) -> list[tuple]:
        return self.rows(self.outlier, self.outlier > Z_OUTLIER)

    def pair_rows(self) -> list[tuple]:
        p, name = self.pairs, self.splits
        return [(self.paths[a], name[self.split_of[a]], self.paths[b], name[self.split_of[b]], float(s))
                for a, b, s in zip(p.keep, p.drop, p.similarity)]

    def excluded(self) -> list[str]:
        """The copies to drop, each once, in the order of duplicates.csv."""
        return list(dict.fromkeys(self.paths[b] for b in self.pairs.drop))


def audit_splits(splits: dict[str, SplitCodes], classes: list[str], spec: Spec = Spec()) -> Audit:
    """Label issues, near-duplicates and leaks, and outliers of the codes of every split."""
    if spec.train_split not in splits:
        raise UserError(f"the codes have no split {spec.train_split!r} (they have {list(splits)})")
    tr, names, t0 = splits[spec.train_split], list(splits), time.perf_counter()
    check_classes(tr.labels, classes, f"{spec.train_split} split")
    groups = group_ids(tr.paths, read_groups(spec.groups), f"--groups {spec.groups!r}") if spec.groups else None
    if groups is not None:
        check_groups(tr.labels, groups, classes)  # the class named before any fit
    lm = fit_label_model(tr.codes, tr.labels, len(classes), spec.folds, spec.seed, spec.c, spec.jobs, groups)
    proba = np.concatenate([lm.oof if s == spec.train_split else probabilities(lm.model, splits[s].codes, len(classes))
                            for s in names])
    labels = np.concatenate([splits[s].labels for s in names])
    issues = label_issues(proba, labels, lm.thresholds)
    t1 = time.perf_counter()
    split_of = np.concatenate([np.full(len(splits[s].labels), i) for i, s in enumerate(names)])
    paths = [p for s in names for p in splits[s].paths]
    k = max(1, min(spec.neighbours, len(paths) - 1))
    mean, w = whitening(tr.codes, spec.whiten, spec.block)
    plain, sims, idx, index = neighbour_lists([splits[s].codes for s in names], mean, w, k, spec)
    t2 = time.perf_counter()
    threshold = spec.threshold or duplicate_threshold(sims[:, 0])
    pairs = duplicate_pairs(sims, idx, threshold, priority(split_of, paths))
    outlier = outlier_scores(plain, k)
    rules = {"label_model": {"head": "softmax", "C": lm.c, "C_how": lm.how, "folds": spec.folds,
                             "grouped_by": Path(spec.groups).name if spec.groups else None,
                             "thresholds": dict(zip(classes, lm.thresholds.round(4).tolist()))},
             "duplicates": {"similarity": threshold, "whitened_dimensions": int(w.shape[1]),
                            "how": "--threshold" if spec.threshold else
                            f"nearest-neighbour law fitted to log(1 - nearest similarity), cut at {ALPHA:g} "
                            "distinct image expected below (docs/audit.md)",
                            "nearest_similarity_percentiles": dict(zip(
                                ("50", "90", "99"), np.percentile(sims[:, 0], [50, 90, 99]).round(4).tolist()))},
             "neighbour_index": index,
             "outliers": {"k": k, "z": Z_OUTLIER,
                          "score": f"modified z of log(cosine distance) to the {k}-th neighbour (plain codes)"}}
    return Audit(list(classes), names, paths, split_of, labels, issues, pairs, outlier, threshold, rules,
                 {"labels": t1 - t0, "neighbours": t2 - t1, "rules": time.perf_counter() - t2})


def neighbour_lists(parts: list[np.ndarray], mean: np.ndarray, w: np.ndarray, k: int, spec: Spec):
    """(each row's k best plain cosines, its k best whitened cosines and their rows, the index's
    parameters) over the codes of every split read as one (codes.index). Exact: both views in one
    pass over the tiles. Indexed: one view at a time, each index freed before the next is built, and
    the codes never concatenated or whitened as a whole (memory: the codes once plus one index)."""
    n = sum(len(p) for p in parts)
    if n <= spec.exact_max:
        codes = np.concatenate(parts)
        (plain, _), (sims, idx) = cosine_both(codes, whitened_rows(codes, mean, w, spec.block), k, block=spec.block)
        return plain, sims, idx, {"kind": "exact", "base_rows": n}
    at = IndexSpec(exact_max=spec.exact_max, seed=spec.seed, block=spec.block)
    plain, _, plain_index = search(parts, None, k, View(), at)
    sims, idx, index = search(parts, None, k, View(mean, w), at)
    return plain, sims, idx, {"plain": plain_index, "whitened": index}


def _csv(path: Path, columns: tuple[str, ...], rows: list[tuple], digits: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([csv_safe(v) if isinstance(v, str) else f"{v:.{digits}f}" for v in r])
    atomic_write(path, lambda fh: fh.write(buf.getvalue().encode("utf-8")))


def write_audit(a: Audit, out: Path, source: str = "", about: dict | None = None) -> dict[str, Path]:
    """The four findings files and audit.json in `out` (`about`: the dataset and classes of the codes,
    which `report --audit` checks against its runs, and the stage's inputs); returns {name: path}."""
    out = Path(out)
    files = {name: out / name for name in FILES}
    # audit.json goes first and comes back last: an audit killed half-way leaves no record, so it is
    # neither taken as up to date nor read by `report --audit` as a whole audit
    files["audit.json"].unlink(missing_ok=True)
    _csv(files["label_issues.csv"], ROW_COLUMNS, a.label_rows(), 4)
    _csv(files["outliers.csv"], ROW_COLUMNS, a.outlier_rows(), 2)
    _csv(files["duplicates.csv"], PAIR_COLUMNS, a.pair_rows(), 4)
    write_text(files["exclude.txt"], format_exclusions(a.excluded(), [
        f"cnncodes audit: near-duplicates and leaks{' of ' + source if source else ''}",
        f"cosine similarity >= {a.threshold:.4f} (whitened codes); per pair the image of the later split "
        "(val, test) or else the first path is kept,", "and the other, listed here, left out (duplicates.csv)"]))
    write_json(files["audit.json"], {"source": source, **(about or {}), "counts": counts(a), "rules": a.rules,
                                     "seconds": a.seconds})
    return files


def is_up_to_date(out: Path, inputs: dict) -> bool:
    """True when `out` holds every file of an audit whose audit.json records these inputs (the
    stage then redoes nothing); an older audit, which records none, is never up to date."""
    if not all((out / n).is_file() for n in FILES):
        return False
    try:
        recorded = json.loads((out / "audit.json").read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(recorded, dict) and json_digest(recorded) == json_digest(inputs)


def counts(a: Audit) -> dict:
    leaks = int((a.split_of[a.pairs.keep] != a.split_of[a.pairs.drop]).sum())
    return {"images": len(a.paths), "label_issues": int(a.issues.flagged.sum()), "duplicates": len(a.pairs) - leaks,
            "leaks": leaks, "excluded": len(a.excluded()), "outliers": int((a.outlier > Z_OUTLIER).sum())}


def summary(a: Audit, top: int = 5) -> str:
    """Counts per finding and the top rows of each, for the terminal."""
    n, lm = counts(a), a.rules["label_model"]
    lines = [f"{n['images']} images: {n['label_issues']} label issues, {n['duplicates']} near-duplicate pairs within "
             f"a split, {n['leaks']} leaks across splits ({n['excluded']} images to exclude), {n['outliers']} outliers",
             f"  label model: softmax, C={lm['C']:g} {lm['C_how']}; duplicates: cosine >= {a.threshold:.3f} "
             f"(whitened, {a.rules['duplicates']['whitened_dimensions']} dimensions); "
             f"outliers: z > {Z_OUTLIER:g} on log distance to neighbour {a.rules['outliers']['k']}"]
    for title, rows in (("label issues", a.label_rows()), ("outliers", a.outlier_rows())):
        lines += [f"top {title}:" if rows else f"no {title}"]
        lines += [f"  {s:7.3f}  {p} [{sp}] labelled {lab}, suggested {sug}" for p, sp, lab, sug, s in rows[:top]]
    pairs = a.pair_rows()
    lines += ["top duplicates and leaks:" if pairs else "no duplicates or leaks"]
    lines += [f"  {s:7.4f}  {p} [{sp}] ~ {o} [{osp}]" for p, sp, o, osp, s in pairs[:top]]
    return "\n".join(lines)
