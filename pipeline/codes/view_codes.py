"""Extra views in the cache: the codes of augmented train views and test-time val views
(images/views.py makes the pixels), computed only for views the file lacks, resumable in shards
like the plain codes, and stored beside them."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .. import UserError
from ..core.devices import resolve_device, resolve_workers
from ..core.files import json_digest
from .extract import Extraction
from .shards import Shards
from .store import Header, read_attrs, read_codes, write_views


def views_wanted(views: int, tta: int, splits: list[str]) -> dict[str, tuple[str, int]]:
    """split -> (kind, extra views): augmented views for the first (train) split, TTA for the others."""
    want = {splits[0]: ("augment", views)} if views else {}
    return want | ({name: ("tta", tta - 1) for name in splits[1:]} if tta > 1 else {})


def add_views(out: Path, job: Extraction, wanted: dict[str, tuple[str, int]], force: bool = False) -> None:
    """Give each split the extra views asked for: views already in the file (made the same way)
    are kept, only the missing ones are computed, resumable in shards like the codes (`force`:
    unfinished shards are not reused)."""
    from ..images.views import spec

    header = Header.from_attrs(read_attrs(out))
    todo = {}
    for name, (kind, n) in wanted.items():
        sp = spec(kind, job.pre, job.seed)
        vfp = json_digest({"codes": header.fingerprint, **sp})
        have = header.views.get(name) or {}
        n_have = have.get("n", 0) if have.get("fingerprint") == vfp else 0
        if n_have >= n:
            print(f"views: {name} already has {n_have} {kind} views; nothing to do")
            continue
        todo[name] = (kind, sp, vfp, n_have, n, have.get("seconds", 0.0) if n_have else 0.0)
    if not todo:
        return
    codes = read_codes(out)
    shards = Shards(out, json_digest({k: v[2:5] for k, v in todo.items()}), suffix=".views.parts", force=force)
    arrays, records = {}, {}
    for name, (kind, sp, vfp, n_have, n, secs) in todo.items():
        split = codes.splits[name]
        if not split.paths:
            arrays[name] = np.zeros((0, n, header.dim), np.float32)
            records[name] = {**sp, "n": n, "fingerprint": vfp, "seconds": 0.0}
            continue
        new, t = view_codes(job, split.paths, kind, list(range(n_have, n)), shards, name, header.dim)
        old = split.views[:, :n_have] if n_have else np.zeros((len(split.paths), 0, header.dim), np.float32)
        arrays[name] = np.concatenate([old, new], axis=1)
        records[name] = {**sp, "n": n, "fingerprint": vfp, "seconds": secs + t}
    write_views(out, arrays, records)
    shards.remove()
    print(f"wrote {out}: " + ", ".join(f"{k} {v['n']} {v['kind']} views" for k, v in records.items()))


def view_codes(job: Extraction, paths: list[str], kind: str, views: list[int], shards: Shards,
               split: str, dim: int) -> tuple[np.ndarray, float]:
    """(N x len(views) x D codes of the given views of each image of `split`, seconds of model time)."""
    import torch
    from tqdm import tqdm

    from ..images.views import ViewImages
    from .backbone import load_backbone
    from .encoder import Encoder

    key, size = f"{split}.v{views[0]}-{views[-1] + 1}", job.shard_size
    starts = list(range(0, len(paths), size))
    todo = [si for si, s in enumerate(starts)
            if not shards.valid(key, si, (min(size, len(paths) - s), len(views), dim))]
    if todo:
        enc = Encoder(load_backbone(job.backbone, job.weights), resolve_device(job.device_type), job.pre.mean,
                      job.pre.std, job.compile, job.inputs["precision"])  # the plain codes' precision
        per_batch = max(1, job.batch_size // len(views))  # about --batch-size crops per forward pass
        ds = ViewImages(job.scan.root, paths, job.pre, job.fast_decode, kind, views, job.seed)
        with tqdm(total=len(todo) * size, unit="img", desc=f"{split} views", file=sys.stderr,
                  disable=None) as bar:
            for si in todo:
                mark, idx = enc.first_calls.mark(), range(starts[si], min(starts[si] + size, len(paths)))
                loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=per_batch,
                                                     num_workers=resolve_workers(job.workers))
                out = []
                for x, why in loader:
                    if any(why):
                        raise UserError(f"{paths[idx[0]]}...: an image changed since its codes were extracted "
                                        f"({next(w for w in why if w)}); re-run features --force")
                    out.append(enc(x.flatten(0, 1)).cpu().numpy().reshape(len(x), len(views), -1))
                    bar.update(len(x))
                shards.save(key, si, np.concatenate(out), [""] * len(idx), enc.first_calls.since(mark))
    secs = sum(shards.seconds(key, si) for si in range(len(starts)))
    return np.concatenate([shards.load(key, si)[0] for si in range(len(starts))]), secs
