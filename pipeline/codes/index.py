"""The project's one nearest-neighbour index over codes, for the audit (duplicates, leaks,
outliers), the k-NN head and the --reject rule: the k rows of a base with the largest inner product
with each query, on the rows a `View` makes (unit rows: cosine; whitened unit rows: the audit's
duplicate view).

- Up to `exact_max` base rows (EXACT_MAX, 50,000): exact, `neighbours.top_k` (tiles of matrix
  products; O(n^2): 100,000 x 512 codes took 397 s for the audit's two views on this 2-core machine).
- Above it: FAISS's inverted file (inner product): `lists` k-means cells (about sqrt(n)), trained
  on a seeded sample, each query scanning the `probes` cells nearest to it, rows stored as 4-bit
  product-quantised codes. The base rows are added a block at a time through the `View`, so the
  caller's codes are never concatenated, normalised or whitened as a whole.

Why FAISS, IVF and fast-scan PQ (measured on 100,000 synthetic 512-d codes with 1% planted
near-copies, 10,000 of them as queries, 2 shared cores; docs/audit.md): exact (IndexFlatIP) 55 s;
IVF-flat 7.1 s (1,264 cells, nprobe 8), IVF-SQ8 3.2 s, HNSW32 5.2 s (efSearch 32) after a 61 s
build that would pass the time budget at 1M; and, with 256 cells and nprobe 4 under a load of 7,
IVF-SQ8 8.0 s, PCA128+IVF-SQ8 0.9 s, IVF-PQ64x4fs 0.46 s. Every variant found 99% of the planted
copies (HNSW 96%). Fast-scan PQ stores 32 bytes per 512-d row (32 MB for a million) and scans
17x faster than SQ8, so the index is small and the search fits the budget; its similarities are
coarse, so each query's SHORTLIST x k candidates are re-scored exactly from the caller's own codes
(`_rerank`: no second copy of them). hnswlib and pynndescent offer graph indexes only; faiss has
the exact, the IVF and the graph indexes in one wheel.

Approximate means missed neighbours, never wrong similarities: codes of overlapping classes in 512
dimensions have few true near neighbours, so the top-10 lists are only partly exact there, while
near-copies sit in their original's cell and are found (bench `audit` measures both). The index's
parameters are returned with every search, for the outputs to record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .neighbours import BLOCK, top_k, unit_rows

EXACT_MAX = 50_000  # base rows up to which the search is exact (n^2 cost: ~100 s for the audit at 50,000)
PROBES = 4  # cells scanned per query
TRAIN_PER_LIST = 40  # k-means sample rows per cell (faiss warns below 39)
SHORTLIST = 2  # the index proposes SHORTLIST x k candidates; the exact similarities pick the best k
QUERY_BLOCK = 1024  # query rows searched at a time (the candidates' codes are gathered per block)


@dataclass(frozen=True)
class IndexSpec:
    exact_max: int = EXACT_MAX
    lists: int = 0  # IVF cells; 0: lists_for(n)
    probes: int = PROBES
    seed: int = 0
    block: int = BLOCK


@dataclass(frozen=True)
class View:
    """The rows searched: unit((x - mean) @ w) (the audit's whitened codes), or unit(x) without w
    (cosine). Linear up to the norm, so a candidate's exact similarity needs only its raw code and
    the norm of its projection (see `_rerank`)."""

    mean: np.ndarray | None = None
    w: np.ndarray | None = None
    unit: bool = True  # False: rows taken as they are (already unit rows: the --reject references, as stored)

    def raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.w is None:  # a copy: rows() normalises it in place
            return x.copy() if self.mean is None else x - self.mean
        return (x - (0 if self.mean is None else self.mean)) @ self.w

    def rows(self, x: np.ndarray) -> np.ndarray:
        return unit_rows(self.raw(x), inplace=True) if self.unit else self.raw(x)


def lists_for(n: int) -> int:
    """About sqrt(n) cells, a power of two (1,024 at 1M): with every row a query, fewer larger cells
    than faiss's 4-16 sqrt(n) for few queries cost less per row found (module docstring)."""
    return int(2 ** round(np.log2(max(np.sqrt(n), 16))))


class Parts:
    """Arrays of rows read as one (the splits of a features file), without concatenating them."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def blocks(self, block: int):
        """(first row, a block of at most `block` rows), in order."""
        for p, s in zip(self.parts, self.starts):
            for i in range(0, len(p), block):
                yield int(s + i), p[i:i + block]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at these global indices (any order; float32)."""
        rows = np.asarray(rows).ravel()
        if len(self.parts) == 1:
            return np.asarray(self.parts[0][rows], dtype=np.float32)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.parts[0].shape[1]), dtype=np.float32)
        for j in np.unique(part):
            out[part == j] = self.parts[j][rows[part == j] - self.starts[j]]
        return out


class Index:
    """A neighbour index over base rows (lists of arrays read as one; indices count through them in
    order): exact up to spec.exact_max rows, else FAISS IVF (module docstring). Built once, searched
    by any number of query sets; `params` says which and how, for the outputs to record."""

    def __init__(self, base: Sequence[np.ndarray], view: View = View(), spec: IndexSpec = IndexSpec()):
        self.base, self.view, self.spec = Parts(base), view, spec
        if len(self.base) <= spec.exact_max:
            self.exact, self.params = view.rows(np.concatenate(self.base.parts)), {"kind": "exact",
                                                                                    "base_rows": len(self.base)}
        else:
            self.exact = None
            self.ivf, self.norms, self.params = _ivf(self.base, view, spec)

    def search(self, queries: Sequence[np.ndarray] | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices): each query row's k best base rows by the inner product of
        `view.rows`, best first; `queries` None: the base rows themselves, each not its own
        neighbour. Fewer than k found: -inf with index -1."""
        same = queries is None
        q = self.base if same else Parts(queries)
        if self.exact is not None:
            xq = self.exact if same else self.view.rows(np.concatenate(q.parts))
            return top_k(xq, self.exact, k, same=same, block=self.spec.block)
        return _query(self.ivf, self.norms, self.base, q, k, self.view, same)


def search(base: Sequence[np.ndarray], queries: Sequence[np.ndarray] | None, k: int, view: View = View(),
           spec: IndexSpec = IndexSpec()) -> tuple[np.ndarray, np.ndarray, dict]:
    """`Index(base, view, spec).search(queries, k)` and the index's parameters."""
    index = Index(base, view, spec)
    return *index.search(queries, k), index.params


def _factory(d: int, lists: int) -> str:
    """IVF cells with 4-bit product-quantised rows scanned by SIMD (fast-scan: 8 dimensions per
    half byte); 8-bit scalar quantisation when d does not split so."""
    return f"IVF{lists},PQ{d // 8}x4fs" if d % 16 == 0 else f"IVF{lists},SQ8"


def _ivf(b: Parts, view: View, spec: IndexSpec):
    """The FAISS index over the base rows (trained on a seeded sample, filled a block at a time), the
    norms of their projections (for `_rerank`) and its parameters."""
    import faiss

    n, lists = len(b), spec.lists or lists_for(len(b))
    sample = np.sort(np.random.default_rng(spec.seed).choice(n, min(n, TRAIN_PER_LIST * lists), replace=False))
    x = view.rows(b.take(sample))
    d, factory = x.shape[1], _factory(x.shape[1], lists)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", min(spec.probes, lists))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # its PQ training spins its threads: 38 s on 2 busy cores, 4 s on one
    try:
        index.train(x)
    finally:
        faiss.omp_set_num_threads(threads)
    del x
    norms = np.empty(n, dtype=np.float32)
    for start, block in b.blocks(spec.block):
        z = view.raw(block)
        norms[start:start + len(z)] = np.linalg.norm(z, axis=1) if view.unit else 1.0
        index.add(unit_rows(z, inplace=True) if view.unit else z)
    return index, norms, {"kind": f"faiss {factory} (inner product), exact similarities of its {SHORTLIST} x k "
                                  "candidates", "base_rows": n, "lists": lists, "probes": min(spec.probes, lists),
                          "train_rows": len(sample), "dimensions": d, "faiss": faiss.__version__}


def _query(index, norms: np.ndarray, b: Parts, q: Parts, k: int, view: View,
           same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every query row's k best, best first: SHORTLIST x k (+1 for the row itself) candidates from
    the index, their exact similarities, the row itself dropped."""
    sims = np.full((len(q), k), -np.inf, dtype=np.float32)
    idx = np.full((len(q), k), -1, dtype=np.int64)
    for start, raw in q.blocks(QUERY_BLOCK):
        z = view.rows(raw)
        _, cand = index.search(z, min(SHORTLIST * k + same, len(b)))
        s = _rerank(z, cand, norms, b, view)
        if same:
            s[cand == np.arange(start, start + len(raw))[:, None]] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        s, i = np.take_along_axis(s, order, 1), np.take_along_axis(cand, order, 1)
        i[~np.isfinite(s)] = -1
        sims[start:start + len(raw), :s.shape[1]], idx[start:start + len(raw), :s.shape[1]] = s, i
    return sims, idx


def _rerank(z: np.ndarray, cand: np.ndarray, norms: np.ndarray, b: Parts, view: View) -> np.ndarray:
    """Exact similarities of unit query rows z to candidate base rows (-1: none, -inf): with
    view.rows(x_j) = raw(x_j) / |raw(x_j)| and raw linear up to the mean, z . rows(x_j) =
    (z w^T) . (x_j - mean) / |raw(x_j)|, so only the candidates' codes are gathered, never projected."""
    u = z if view.w is None else z @ view.w.T
    ok = cand >= 0
    at = np.where(ok, cand, 0)
    x = b.take(at).reshape(*cand.shape, -1)
    if view.mean is not None:
        x -= view.mean
    norm = norms[at]
    s = np.einsum("qd,qkd->qk", u, x) / np.where(norm > 0, norm, 1)  # a zero row: similarity 0 (unit_rows)
    s[~ok] = -np.inf
    return s.astype(np.float32)
