"""Check a dataset from its cached CNN codes (no backbone run): likely label errors, near-duplicates
within a split and leaks across splits, and outliers far from every class.

Usage: cnncodes audit --features FILE.h5 --out DIR

Writes to DIR: label_issues.csv and outliers.csv (path, split, label, suggested, score; higher =
more suspect), duplicates.csv (path, split, other, other_split, similarity), exclude.txt (the copy of
each duplicate or leaking pair: one path per line) and audit.json (the rules' numbers). The rules,
and why: docs/audit.md. An audit of the same codes (their fingerprint) with the same settings already
in DIR is up to date and not redone (--force redoes it); anything else is audited again, into DIR.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..audit.findings import Audit, Spec, audit_splits, is_up_to_date, summary, write_audit
from ..codes.index import EXACT_MAX
from ..codes.store import read_attrs, read_codes
from ..core.cli import Settings, at_most_cores, opt, positive
from ..core.files import check_out_folder, json_digest
from ..images.groups import read_groups


@dataclass(frozen=True)
class Config(Settings):
    features: Path = opt(Path(""), "the HDF5 codes file written by `features`", required=True)
    out: Path = opt(Path("reports/audit"), "folder for label_issues.csv, outliers.csv, duplicates.csv, exclude.txt")
    train_split: str = opt("train", "split the label model is cross-validated on (out-of-fold probabilities); "
                                    "the other splits get held-out probabilities from it refit on all of this one")
    folds: int = opt(5, "stratified CV folds on train (fewer when a class has fewer images)")
    c: float = opt(0.0, "the softmax head's C: 0 = chosen by CV on train along its path, as classify does")
    neighbours: int = opt(10, "neighbours kept per image; an image's outlier score is its distance to the k-th")
    threshold: float = opt(0.0, "cosine similarity from which two images are near-duplicates: 0 = read off the data "
                                "(docs/audit.md)")
    whiten: int = opt(0, "principal components of train the duplicate search whitens and keeps: 0 = min(dimension, "
                         "train images / 2) (docs/audit.md)")
    groups: str = opt("", "a CSV of images that belong together (path,group, or path,other pairs): the label model's "
                          "CV folds keep each group on one side, as classify --groups does")
    exact_max: int = opt(EXACT_MAX, "images up to which the neighbour search is exact; above, the FAISS index "
                                     "(codes/index.py, docs/audit.md)")
    block: int = opt(4096, "rows per block of the neighbour search: its memory is about 4 x block^2 bytes")
    seed: int = opt(0, "random seed (CV folds)")
    jobs: int = opt(1, "CV fits run in parallel (0 = one per core; each process holds a copy of train)")
    force: bool = opt(False, "audit again even when --out holds an audit of the same codes with the same settings")

    def __post_init__(self):
        positive(neighbours=self.neighbours, block=self.block)
        if self.exact_max < 0:
            raise UserError(f"--exact-max must be 0 (always the index) or more (got {self.exact_max})")
        if self.folds < 2:
            raise UserError(f"--folds must be at least 2 (got {self.folds})")
        if self.c < 0:
            raise UserError(f"--c must be 0 (chosen by CV) or positive (got {self.c:g})")
        if not 0 <= self.threshold <= 1:
            raise UserError(f"--threshold must be 0 (automatic) or a cosine similarity in (0, 1] "
                            f"(got {self.threshold:g})")
        if self.whiten < 0:
            raise UserError(f"--whiten must be 0 (automatic) or a number of dimensions (got {self.whiten})")
        if self.jobs < 0:
            raise UserError(f"--jobs must be 0 (one per core) or more (got {self.jobs})")
        at_most_cores(self, "jobs")

    @property
    def spec(self) -> Spec:
        return Spec(self.train_split, self.folds, self.seed, self.c, self.neighbours, self.threshold, self.block,
                    self.jobs or -1, self.whiten, self.groups, self.exact_max)

    def inputs(self, fingerprint: str) -> dict:
        """What decides the findings: the codes (the features file's fingerprint) and the settings;
        not --jobs or --block, which change only how fast they are found."""
        s = self.spec
        return {"features": fingerprint, "train_split": s.train_split, "folds": s.folds, "seed": s.seed, "c": s.c,
                "neighbours": s.neighbours, "threshold": s.threshold, "whiten": s.whiten, "exact_max": s.exact_max,
                "groups": json_digest(read_groups(s.groups)) if s.groups else None}


def audit(cfg: Config) -> Audit | None:
    """Read the codes, audit them, write the findings to --out and print a summary; None when --out
    already holds this audit (same codes, same settings) and nothing was redone."""
    attrs = read_attrs(cfg.features)  # a missing, partial or foreign file is a one-line error before anything else
    check_out_folder(cfg.out)
    inputs = cfg.inputs(attrs.get("fingerprint", ""))
    if not cfg.force and is_up_to_date(Path(cfg.out), inputs):
        print(f"{cfg.out} holds the audit of these codes with these settings: up to date (--force redoes it)",
              flush=True)
        return None
    codes = read_codes(cfg.features)
    found = audit_splits(codes.splits, codes.classes, cfg.spec)
    files = write_audit(found, Path(cfg.out), str(cfg.features), {"dataset": codes.header.dataset,
                                                                  "classes": list(codes.classes), "inputs": inputs})
    print(summary(found), flush=True)
    print(f"wrote {', '.join(p.name for p in files.values())} to {cfg.out}", flush=True)
    return found


def run(cfg: Config) -> None:
    audit(cfg)
