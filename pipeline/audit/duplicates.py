"""Near-duplicates within a split and leaks across splits, from each image's nearest neighbours
(cosine on the codes whitened on train, `neighbours.whitening`: all splits pooled), and the images
far from every other image.

The duplicate threshold is read off the data (docs/audit.md has the numbers behind it). For
distinct images the distance d1 = 1 - s of each to its nearest neighbour follows the model behind
intrinsic-dimension estimators (Levina and Bickel, 2005): in a locally uniform neighbourhood of
dimension m, N V d1^m ~ Exp(1), so log d1 = loc + G / m with G = log Exp(1), a Gumbel-min
variable (quantiles log(-log(1 - p)): median ln ln 2, 75th percentile - median = ln 2). Near-copies
are far below that law. The rule fits loc and 1/m to two percentiles of log d1 and cuts where the
law puts ALPHA = 1 of the N images, i.e. on distinct images it flags one image on average
whatever N is:
    log d* = loc + (1/m) log(-log(1 - ALPHA / N));  threshold = 1 - exp(log d*).
The first fit uses the 75th and 90th percentiles, which the copies (in the lower tail) leave alone
even when 40% of the images have one; then loc and 1/m are refitted to the median and 75th
percentile of the images above the cut until the cut stops moving (real codes have a heavier upper
tail than the law, so the upper fit alone is too strict: 0.81 instead of 0.71 on hymenoptera). A
fixed z-score cut (median - z MAD)
would not do: the law's lower tail is exponential, so any fixed z flags a fixed fraction of
distinct images (at z = 4: 0.1% to 0.6% of synthetic 512- and 64-d codes).

Outliers: the cosine distance d_k of each image to its k-th nearest neighbour (k = --neighbours,
10) on the plain L2-normalised codes, as in the k-NN out-of-distribution score of Sun, Ming, Zhu
and Li (ICML 2022), standardised as a modified z-score of log d_k over all images (Iglewicz and
Hoaglin: (x - median) / (1.4826 MAD)), flagged above Z_OUTLIER = 3.5, their cut-off. Plain, not
centred: centring puts a placeholder's or a screenshot's code, weak everywhere, near the mean's
opposite where such images gather (on hymenoptera/MobileNetV2 they rank low centred, first plain;
docs/audit.md). The k-th neighbour, not the first, so a few copies of one placeholder do not hide
each other. The log, since distances are skewed: on hymenoptera z of d_k lists 14 images above 3.5,
z of log d_k 2, while a grey placeholder, the dataset's imageNotFound.gif, a screenshot, noise
and a checkerboard score 4.5 to 5.6.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes.neighbours import robust_z

ALPHA = 1.0  # distinct images flagged as near-duplicates, expected, under the nearest-neighbour law
Z_OUTLIER = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
FLOOR = 1e-6  # distances below this (exact copies, float rounding) count as this


def _quantile(p: float) -> float:
    """The p-quantile of log Exp(1), the Gumbel-min law of m log d1 (up to its location)."""
    return float(np.log(-np.log1p(-p)))


def duplicate_threshold(nearest: np.ndarray, alpha: float = ALPHA) -> float:
    """The cosine similarity from which a nearest neighbour is a near-duplicate (module docstring)."""
    log_d = np.log(np.clip(1.0 - nearest[np.isfinite(nearest)].astype(np.float64), FLOOR, None))
    n = len(log_d)
    if n < 8:
        return 1.0
    tail = _quantile(min(alpha / n, 0.5))

    def cut(values: np.ndarray, lo: float, hi: float) -> float:
        q_lo, q_hi = np.percentile(values, [100 * lo, 100 * hi])
        inv_m = (q_hi - q_lo) / (_quantile(hi) - _quantile(lo))
        return q_lo + inv_m * (tail - _quantile(lo))

    at = cut(log_d, 0.75, 0.9)  # first from the upper quartile: right even when half the images have a copy
    for _ in range(50):
        keep = log_d[log_d > at]
        new = cut(keep, 0.5, 0.75) if len(keep) >= 8 else at
        if new == at:
            break
        at = new
    return float(1.0 - np.exp(at))


@dataclass
class Pairs:
    keep: np.ndarray  # row kept (the later split, else the first path)
    drop: np.ndarray  # row it duplicates: the one listed in exclude.txt
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.keep)


def priority(split_index: np.ndarray, paths: list[str]) -> np.ndarray:
    """Rank of each row for keeping (0 = kept first): rows of a later split (val, test: the images
    scored) before earlier ones (train), then by path. Of a pair the lower rank is kept."""
    order = sorted(range(len(paths)), key=lambda r: (-int(split_index[r]), paths[r]))
    rank = np.empty(len(paths), dtype=np.int64)
    rank[order] = np.arange(len(paths))
    return rank


def duplicate_pairs(sims: np.ndarray, idx: np.ndarray, threshold: float, rank: np.ndarray) -> Pairs:
    """Each pair of rows (once) whose similarity reaches `threshold` among the neighbour lists, most
    similar first; `keep` is the one of lower `rank`."""
    n, k = sims.shape
    rows = np.repeat(np.arange(n), k)
    cols, s = idx.ravel(), sims.ravel()
    hit = (cols >= 0) & (s >= threshold)
    rows, cols, s = rows[hit], cols[hit], s[hit]
    first = rank[rows] < rank[cols]
    keep, drop = np.where(first, rows, cols), np.where(first, cols, rows)
    key, where = np.unique(keep * n + drop, return_index=True)
    keep, drop, s = keep[where], drop[where], s[where]
    order = np.lexsort((rank[drop], -s))
    return Pairs(keep[order], drop[order], s[order].astype(np.float64))


def outlier_scores(sims: np.ndarray, k: int) -> np.ndarray:
    """Modified z-score of log(cosine distance) of each row to its k-th nearest neighbour, over all
    rows: higher = further from every other image. The lists must hold k finite entries."""
    return robust_z(np.log(np.clip(1.0 - sims[:, k - 1].astype(np.float64), FLOOR, None)))
