"""Cosine nearest neighbours in bounded memory: the similarity matrix is computed a tile at a time
(`block` query rows x `block` base rows) and only each row's best k are kept, so memory is
O(block^2 + N k), never N^2. `cosine_both` gets the plain cosine of the codes and the cosine of their
whitened projections (`whitening`: the top principal components of train, each scaled to unit
variance; docs/audit.md) in the same pass over the tiles.

Written with numpy rather than scikit-learn's NearestNeighbors: its brute-force search makes a
row block against the whole base at once (memory N x block) and offers no progress bar; faiss would
be a compiled dependency for what is a matrix product and a partial sort per tile.
"""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np

BLOCK = 4096  # rows per tile side: a tile of float32 similarities is 64 MiB
SEED = 32  # a row's first k-th best comes from SEED * k columns; then only entries above it compete
PROGRESS_ROWS = 20_000  # a progress bar from this many query rows on


def unit_rows(x: np.ndarray, centre: np.ndarray | None = None, inplace: bool = False) -> np.ndarray:
    """float32 rows minus `centre` (the train mean: see docs/audit.md), scaled to unit length; a row
    of zeros stays zeros (similarity 0 to everything). `inplace`: overwrite x when it is float32."""
    x = np.asarray(x, dtype=np.float32)
    x = x if inplace else x.copy()
    if centre is not None:
        x -= np.asarray(centre, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.where(norm > 0, norm, 1).astype(np.float32)
    return x


def _best(sims: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest similarities of each row (any order) and their base indices."""
    if sims.shape[1] > k:
        part = np.argpartition(sims, -k, axis=1)[:, -k:]
        return np.take_along_axis(sims, part, 1), np.take_along_axis(idx, part, 1)
    return sims, idx


def _merge(best: tuple[np.ndarray, np.ndarray], s: np.ndarray, b0: int, k: int,
           mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best k of its current `best` (similarities, indices) and a tile `s` of similarities
    to base rows b0... Only entries above a row's current k-th best compete: after the first tile
    they are few, and are gathered into a small padded array instead of partitioning the whole
    tile. `mask`: a boolean buffer of at least s's shape, reused across tiles."""
    best_s, best_i = best
    if not np.isfinite(best_s[:, -1]).all():  # no k-th best yet: seed it from the tile's first columns
        w = min(s.shape[1], SEED * k)
        seed = _best(s[:, :w], np.broadcast_to(np.arange(b0, b0 + w), (len(s), w)), k)
        best_s, best_i = _best(np.concatenate([best_s, seed[0]], 1), np.concatenate([best_i, seed[1]], 1), k)
        s, b0 = s[:, w:], b0 + w
        if not s.shape[1]:
            return best_s, best_i
    m = mask[:s.shape[0], :s.shape[1]]
    np.greater(s, best_s.min(1, keepdims=True), out=m)
    flat = np.flatnonzero(m) if m.flags.c_contiguous else np.flatnonzero(m.ravel())
    if len(flat) > s.size // 8:  # most entries compete (a row with fewer than k candidates yet)
        s, i = _best(s, np.broadcast_to(np.arange(b0, b0 + s.shape[1]), s.shape), k)
    elif len(flat):
        r, c = np.divmod(flat, s.shape[1])
        counts = np.bincount(r, minlength=len(s))
        at = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)  # r is sorted: rank within its row
        cand_s = np.full((len(s), counts.max()), -np.inf, dtype=np.float32)
        cand_i = np.full(cand_s.shape, -1, dtype=np.int64)
        cand_s[r, at], cand_i[r, at] = s[r, c], c + b0
        s, i = cand_s, cand_i
    else:
        return best_s, best_i
    return _best(np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1), k)


Scorer = Callable[[np.ndarray, slice, slice, np.ndarray], np.ndarray]  # (dot products, query rows, base rows,
# a buffer of the tile's shape) -> the tile's similarities


def top_k(queries: np.ndarray, base: np.ndarray, k: int, *, same: bool = False, block: int = BLOCK,
          progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each len(queries) x k, best first: the k rows of `base` with the
    largest dot product with each query (cosine, for unit rows). `same`: queries are base, and a row
    is not its own neighbour. Fewer than k candidates: the rest are -inf with index -1.
    `progress`: a tqdm bar on stderr (None: from PROGRESS_ROWS query rows on, when stderr is a terminal)."""
    return _search([(queries, base)], k, [(0, _as_is)], same=same, block=block, progress=progress)[0]


def whitening(train: np.ndarray, rank: int = 0, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W): z = (x - mean) @ W projects a code on the top r principal components of `train`
    and scales each to unit variance (PCA whitening). r = `rank`, or min(d, n // 2) for n train
    rows: a sample covariance of n codes has at most n - 1 non-zero eigenvalues, and the smaller
    half of them are mostly sampling noise (docs/audit.md). The covariance is summed a block of rows
    at a time, in float64 (no float64 copy of train)."""
    n, d = train.shape
    mean = train.mean(0, dtype=np.float64)
    cov = np.zeros((d, d))
    for i in range(0, n, block):
        b = train[i:i + block].astype(np.float64) - mean
        cov += b.T @ b
    w, v = np.linalg.eigh(cov / max(n - 1, 1))
    w, v = w[::-1], v[:, ::-1]
    r = min(rank or max(1, min(d, n // 2)), int((w > max(w[0], 0) * 1e-9).sum()) or 1)
    return mean.astype(np.float32), (v[:, :r] / np.sqrt(np.maximum(w[:r], 1e-30))).astype(np.float32)


def whitened_rows(x: np.ndarray, mean: np.ndarray, w: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """`unit_rows` of (x - mean) @ w, a block of rows at a time (float32, len(x) x r)."""
    out = np.empty((len(x), w.shape[1]), dtype=np.float32)
    for i in range(0, len(x), block):
        out[i:i + block] = (np.asarray(x[i:i + block], dtype=np.float32) - mean) @ w
    return unit_rows(out, inplace=True)


def cosine_both(x: np.ndarray, z: np.ndarray, k: int, *, block: int = BLOCK,
                progress: bool | None = None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Every row's k nearest other rows by the plain cosine of `x` and by the dot product of `z`
    (unit rows of the same images, e.g. `whitened_rows`), as two `top_k` results, in one pass over
    the tiles: x's dot products are scaled by the inverse norms in place (no normalised copy of x)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    inv = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0).astype(np.float32)

    def plain(g: np.ndarray, q: slice, b: slice, out: np.ndarray) -> np.ndarray:
        np.multiply(g, inv[q, None], out=out)
        out *= inv[None, b]
        return out

    return tuple(_search([(x, x), (z, z)], k, [(0, plain), (1, _as_is)], same=True, block=block, progress=progress))


def _as_is(g: np.ndarray, q: slice, b: slice, out: np.ndarray) -> np.ndarray:
    return g


def _search(views: list[tuple[np.ndarray, np.ndarray]], k: int, scorers: list[tuple[int, Scorer]], *, same: bool,
            block: int, progress: bool | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`top_k` for each (view, scorer): the scorer gets the tile's dot products of views[view]
    (queries, base); every view has the same rows (see top_k)."""
    nq, nb = len(views[0][0]), len(views[0][1])
    out = [(np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)) for _ in scorers]
    mask = np.empty((min(block, nq), min(block, nb)), dtype=bool)
    buffers = [np.empty(mask.shape, dtype=np.float32) for _ in scorers]  # reused: no page faults per tile
    bar = None
    if progress or (progress is None and nq >= PROGRESS_ROWS):
        from tqdm import tqdm

        bar = tqdm(total=-(-nq // block) * -(-nb // block), unit="tile", desc="neighbours", file=sys.stderr,
                   disable=None, leave=False)
    for q0 in range(0, nq, block):
        q = slice(q0, min(q0 + block, nq))
        best = [(s[q], i[q]) for s, i in out]
        for b0 in range(0, nb, block):
            b = slice(b0, min(b0 + block, nb))
            g = [qs[q] @ bs[b].T for qs, bs in views]  # tiles of dot products: with their scores, the only large arrays
            for j, (v, score) in enumerate(scorers):
                s = score(g[v], q, b, buffers[j][:g[v].shape[0], :g[v].shape[1]])
                if same and b0 < q.stop and q0 < b.stop:
                    rows = np.arange(max(q0, b0), min(q.stop, b.stop))
                    s[rows - q0, rows - b0] = -np.inf  # a row is not its own neighbour
                best[j] = _merge(best[j], s, b0, k, mask)
            if bar is not None:
                bar.update()
        for (s, i), (best_s, best_i) in zip(out, best):
            order = np.argsort(-best_s, axis=1, kind="stable")
            s[q], i[q] = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    if bar is not None:
        bar.close()
    for s, i in out:
        i[~np.isfinite(s)] = -1
    return out


def brute_force(queries: np.ndarray, base: np.ndarray, k: int, same: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`top_k` the plain way (the whole similarity matrix): its reference, for small inputs only."""
    s = queries @ base.T
    if same:
        np.fill_diagonal(s, -np.inf)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


def robust_z(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(x - median) / (1.4826 MAD) of `reference` (default x): the modified z-score of Iglewicz and
    Hoaglin, a standard score that the outliers themselves cannot inflate."""
    ref = np.asarray(x if reference is None else reference, dtype=np.float64)
    med = float(np.median(ref))
    mad = 1.4826 * float(np.median(np.abs(ref - med)))
    if mad <= 0:  # over half the values tie: fall back to the sd, then to 1
        mad = float(ref.std()) or 1.0
    return (np.asarray(x, dtype=np.float64) - med) / mad
