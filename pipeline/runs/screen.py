"""Screening before full extraction (`sweep --screen N`): one round of successive halving.

Every backbone codes the same stratified sample (N train and N val images); a logistic-regression
probe (the softmax head, C chosen by CV on the sample's train) scores the sample's val; the best
backbone on the sample is paired with each other one by the exact McNemar test on the same
images, Holm-corrected over the family, and those separable as worse (p < ALPHA) are dropped: only
the rest are coded in full. A backbone the sample cannot separate is kept, so screening only ever
removes what the sample already shows to be worse; it never picks the winner.
"""
from __future__ import annotations

import numpy as np

from ..codes.store import read_codes
from ..heads.cv import fit_head
from ..images.scan import ImageFolderScan
from .metrics import holm, mcnemar_exact

ALPHA = 0.05  # as the report's verdict (report.verdict.ALPHA)
FOLDS = 5  # the probe's CV folds on the sample's train, as classify's --folds
PROBE = "softmax"  # the linear probe: the usual measure of how well codes transfer (Kornblith et al. 2019)
# A sample of N train + N val images costs 2N / (all images) of a full extraction per backbone. At
# 200 per split the exact test on 200 val images separates a backbone 10 points worse than the best
# (at ~15% discordance) most of the time, and on 2,000 images or more the sample is at most a fifth
# of the work: so `--screen -1` (auto) screens with 200 from 2,000 images up and not below.
AUTO_N = 200
AUTO_FROM = 2000


def auto_size(screen: int, n_images: int, n_backbones: int) -> int:
    """The sample size per split --screen asks for: -1 = AUTO_N when the data holds AUTO_FROM images
    or more and there are at least two backbones; 0 = off."""
    if screen < 0:
        return AUTO_N if n_images >= AUTO_FROM and n_backbones > 1 else 0
    return screen if n_backbones > 1 else 0


def sample(s: ImageFolderScan, n: int, train: str, val: str, seed: int) -> ImageFolderScan:
    """A stratified sample of n images of train and n of val (each class in proportion, at least
    one per class; all of a split when it holds fewer), the other splits left out; the same for
    every backbone, since it depends on the image list and the seed only."""
    from dataclasses import replace

    from sklearn.model_selection import train_test_split

    splits = {}
    for name in (train, val):
        sp = s.splits[name]
        if len(sp.items) <= n:
            splits[name] = replace(sp, skipped=[])
            continue
        labels = [r.label for r in sp.items]
        strat = labels if min(np.bincount(labels)[np.unique(labels)]) >= 2 and n >= len(set(labels)) else None
        keep, _ = train_test_split(np.arange(len(sp.items)), train_size=n, stratify=strat, random_state=seed)
        splits[name] = replace(sp, items=[sp.items[i] for i in sorted(keep)], skipped=[])
    return replace(s, splits=splits)


def probe_correct(path, train: str, val: str, seed: int) -> tuple[dict[str, bool], float]:
    """The probe on one sample file: {val path: right or not}, and the file's extraction rate
    (images per second, 0 when not recorded)."""
    codes = read_codes(path)
    tr, va = codes.splits[train], codes.splits[val]
    search = fit_head(PROBE, tr.codes, tr.labels, FOLDS, seed, 1)  # fewer when a class has fewer (heads.cv)
    right = search.best_estimator_.predict(va.codes) == va.labels
    return dict(zip(va.paths, map(bool, right))), codes.header.images_per_second or 0.0


def decide(scored: dict[str, dict[str, bool]]) -> dict[str, dict]:
    """By backbone label: its sample accuracy, its paired test against the best on the sample
    (b: only the best right, c: only it right; exact McNemar p, Holm-adjusted) and whether it is
    dropped. Only images every backbone scored count."""
    common = sorted(set.intersection(*(set(v) for v in scored.values())))
    acc = {k: float(np.mean([v[p] for p in common])) if common else float("nan") for k, v in scored.items()}
    best = max(acc, key=lambda k: (acc[k], -list(acc).index(k)))
    others = [k for k in scored if k != best]
    tests = [mcnemar_exact([scored[best][p] for p in common], [scored[k][p] for p in common]) for k in others]
    adjusted = holm([t["p_value"] for t in tests]) if tests else []
    out = {best: {"accuracy": acc[best], "n": len(common), "best": True, "dropped": False}}
    for k, t, ph in zip(others, tests, adjusted):
        worse = t["only_a"] > t["only_b"]
        out[k] = {"accuracy": acc[k], "n": len(common), "best": False, "b": t["only_a"], "c": t["only_b"],
                  "p": t["p_value"], "p_holm": ph, "dropped": bool(worse and ph < ALPHA)}
    return out
