"""The rows a head trains and scores on when the cache holds extra views: K augmented views per
train image besides its code (image-major rows), T test-time views per val image whose
probabilities or margins are averaged (the first is the code)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import UserError
from ..codes.store import Codes, SplitCodes


@dataclass(frozen=True)
class Views:
    """K augmented views per train image besides its code, T test-time views per val image."""

    k: int
    t: int

    @property
    def suffix(self) -> str:
        return f"-views{self.k}-tta{self.t}" if self.k or self.t > 1 else ""

    def label(self) -> str:
        """'+25 views, TTA 5', '' for the plain codes."""
        return ", ".join(x for x in (f"+{self.k} views" if self.k else "", f"TTA {self.t}" if self.t > 1 else "") if x)


PLAIN = Views(0, 1)


def views_of(codes: Codes, train: str, val: str, views: int, tta: int) -> Views:
    """The views asked for (views -1 / tta 0: all the file holds); UserError when the file holds fewer."""
    tr, va = codes.splits[train], codes.splits[val]
    k_have = 0 if tr.views is None else tr.views.shape[1]
    t_have = 1 + (0 if va.views is None else va.views.shape[1])
    k, t = (k_have if views < 0 else views), (t_have if tta == 0 else tta)
    if k > k_have or t > t_have:
        raise UserError(f"{codes.path} holds {k_have} augmented views per train image and {t_have} test-time views "
                        f"per val image, not --views {k} / --tta {t}; run `features --views {k} --tta {t}` first")
    return Views(k, t)


def train_rows(split: SplitCodes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) with each image's code followed by its first k views (image-major rows)."""
    if not k:
        return split.codes, split.labels
    X = np.concatenate([split.codes[:, None], split.views[:, :k]], axis=1)
    return X.reshape(-1, X.shape[-1]), np.repeat(split.labels, k + 1)


def val_views(split: SplitCodes, t: int) -> np.ndarray:
    """N x D codes, or N x t x D when test-time views are averaged."""
    return split.codes if t == 1 else np.concatenate([split.codes[:, None], split.views[:, :t - 1]], axis=1)


def views_cost(codes: Codes, train: str, val: str, v: Views) -> float:
    """The extraction seconds these views cost: the codes, and the share of each split's views used."""
    h, total = codes.header, codes.header.extract_seconds or 0.0
    for split, used in ((train, v.k), (val, v.t - 1)):
        rec = h.views.get(split) or {}
        if used and rec.get("n"):
            total += rec.get("seconds", 0.0) * used / rec["n"]
    return total
