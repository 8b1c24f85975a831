"""Extract CNN codes with a frozen backbone and cache them to HDF5 (resumable, validated).

Usage: python -m pipeline features --data DIR --backbone resnet18 --weights DEFAULT|none|PATH --out FILE.h5

The cache is checked first, from a fingerprint of everything that determines the codes (names,
the weight file's sha256, the transform, precision, library versions, the image list): a hit
builds no network, and with a weights file or random weights imports neither torch nor
torchvision (enum weights need torchvision to name their transform).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .. import UserError, __version__
from ..core import dist
from ..codes.store import (FORMAT, Header, Shards, SplitPiece, describe_counts, read_attrs, recorded_files, row_counts,
                    write_codes)
from ..core.cli import Common, command_line, opt, parse_splits, positive
from ..core.devices import device_type, precision_for, resolve_device, resolve_workers, trim_heap
from ..images.scan import ImageFolderScan, ImageRecord, scan
from ..images.transforms import Preprocess
from ..core.files import exclusive, json_digest
from ..images.views import MAX_TTA
from ..codes.weights import Weights, features_path


@dataclass(frozen=True)
class Config(Common):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root (DATA/<split>/<class>/<image>) or a CSV "
                                                    "manifest with columns path,label,split")
    backbone: str = opt("resnet18", "torchvision classification model name")
    weights: str = opt("DEFAULT", "DEFAULT (torchvision download), none (random init), or a state_dict path")
    out: str = opt("", "output .h5; empty means features/<dataset>/<backbone>-<weights>.h5")
    splits: str = opt("train,val", "comma-separated split folders")
    resize: int = opt(0, "eval transform: resize the shorter side to this; 0 = the weights' own (torchvision enum "
                         "weights carry it, e.g. 232 for mobilenet_v2), else 256")
    crop: int = opt(0, "eval transform: centre crop size; 0 = the weights' own, else 224")
    interpolation: str = opt("", "eval transform: resize interpolation; empty = the weights' own, else bilinear",
                             ("", "bilinear", "bicubic", "nearest"))
    fast_decode: bool = opt(True, "let the JPEG decoder downscale large images while decoding (recorded)")
    decode: str = opt("auto", "cpu: PIL in --workers processes; gpu: JPEGs decoded in batches by nvJPEG on the GPU, "
                              "PIL for the rest; torchvision: the gpu path on whatever --device is (libjpeg-turbo "
                              "on a CPU); auto: gpu on a GPU, else cpu", ("auto", "cpu", "gpu", "torchvision"))
    compile: bool = opt(False, "torch.compile the trunk (CUDA graphs on a GPU); the compile time is reported and "
                               "recorded apart (compile_seconds), and compiled codes are cached apart")
    shard_size: int = opt(512, "images per resumable shard (rounded up to a multiple of --batch-size)")
    force: bool = opt(False, "recompute even when an existing file was made from other inputs")
    views: int = opt(0, "augmented views per train image (RandomResizedCrop + flip, seeded per image and view), "
                        "stored beside the codes; adding views to a file computes only the new ones")
    tta: int = opt(1, f"test-time views per val image: 1 = the centre crop only, 5 = five crops, 10 = ten crops, "
                      f"up to {MAX_TTA}")

    def __post_init__(self):
        super().__post_init__()
        positive(shard_size=self.shard_size, tta=self.tta)
        if self.views < 0 or self.tta > MAX_TTA:
            raise UserError(f"--views must be 0 or more and --tta 1 to {MAX_TTA} (got {self.views}, {self.tta})")
        if self.resize < 0 or self.crop < 0 or (self.resize and self.crop > self.resize):
            raise UserError(f"--resize and --crop must be 0 (the weights' own) or sizes with crop <= resize "
                            f"(got {self.resize}, {self.crop})")
        parse_splits(self.splits)
        Weights.parse(self.weights, self.seed)

    def preprocess(self, weights: Weights) -> Preprocess:
        """The eval transform: the flags where given, the rest from the weights (torchvision is
        imported for enum weights only when a flag is left to them)."""
        given = {k: v for k, v in (("resize", self.resize), ("crop", self.crop), ("interpolation", self.interpolation))
                 if v}
        base = Preprocess(source="flags") if len(given) == 3 else weights.preprocess(self.backbone)
        pre = replace(base, **given, source=base.source + (" and flags" if given and len(given) < 3 else ""))
        if pre.crop > pre.resize:
            raise UserError(f"the eval transform would crop {pre.crop} px from images resized to {pre.resize}; "
                            "give --crop no larger than --resize")
        return pre

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else features_path(self.data, self.backbone, Weights.parse(self.weights))


def decoder(cfg: Config, device: str) -> str:
    """'pil' or 'torchvision' (batched), --decode resolved for the device type."""
    if cfg.decode == "gpu" and device != "cuda":
        raise UserError(f"--decode gpu needs a CUDA GPU and extraction runs on {device}; use --decode cpu (PIL) "
                        "or torchvision (batched on the CPU)")
    batched = cfg.decode in ("gpu", "torchvision") or (cfg.decode == "auto" and device == "cuda")
    return "torchvision" if batched else "pil"


def fingerprint_inputs(s: ImageFolderScan, cfg: Config, weights: Weights, pre: Preprocess, device: str) -> dict:
    """Everything that determines the codes, known before any network is built; the decoder is
    part of it, so PIL- and GPU-decoded codes never mix."""
    spec = pre.spec(cfg.fast_decode)
    if decoder(cfg, device) == "torchvision":
        from ..images.batch_decode import decoder_name

        spec["decode"] = decoder_name(device)
    return {
        "format": FORMAT,
        "backbone": cfg.backbone,
        "weights": weights.key,
        "weights_sha256": weights.sha256,
        "transform": spec,
        "precision": precision_for(device),
        # BN folding is decided by the backbone and the torch version (both recorded): fx either
        # traces the model or not, so the setting, not its outcome, goes in the fingerprint
        "bn_folding": "torch.fx fuse when traceable",
        # compiled kernels round differently: such codes are cached apart (key absent otherwise,
        # so files made without --compile keep their fingerprint)
        **({"compile": "torch.compile, " + ("reduce-overhead" if device == "cuda" else "default") + " mode"}
           if cfg.compile else {}),
        "classes": s.classes,
        "splits": list(s.splits),
        "image_list": s.digest(),
        "versions": {"torch": version("torch"), "torchvision": version("torchvision"), "pillow": version("pillow")},
    }


def differences(old, new, name: str) -> list[str]:
    """'name old -> new' for each leaf that differs (transform.crop 224 -> 200), not whole dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(old.keys() | new.keys()) for d in differences(old.get(k), new.get(k), f"{name}.{k}")]
    return [] if old == new else [f"{name} {old!r} -> {new!r}"]


def explain_change(out: Path, old: dict, new: dict, s: ImageFolderScan) -> str:
    """Say in words what differs between the cached inputs and the current ones."""
    old_inputs = old.get("inputs", {})
    why = [d for k in new if k != "image_list" for d in differences(old_inputs.get(k), new[k], k)]
    if old_inputs.get("image_list") != new["image_list"]:
        before = recorded_files(out)
        added = removed = modified = 0
        for name, split in s.splits.items():
            was = before.get(name, {})
            now = {r.path: (r.size, r.mtime_ns) for r in split.items}
            added += len(now.keys() - was.keys())
            removed += len(was.keys() - now.keys())
            modified += sum(1 for p in now.keys() & was.keys() if now[p] != was[p])
        why.append(f"images: {added} added, {removed} removed, {modified} modified")
    return "; ".join(why) or "inputs differ"


def cache_hit(out: Path, fp: str, inputs: dict, s: ImageFolderScan, force: bool) -> bool:
    """True when `out` already holds these codes; UserError when it holds others (unless force)."""
    if not out.exists() or force:
        return False
    try:
        old = read_attrs(out)
    except UserError as e:
        raise UserError(f"{e}; --force replaces it") from None
    if old.get("fingerprint") == fp:
        print(f"cache hit: {out} is up to date ({describe_counts(row_counts(out))}); no model work done")
        Shards.remove_leftovers(out)  # a run killed between rename and cleanup
        return True
    raise UserError(f"{out} was made from other inputs ({explain_change(out, old, inputs, s)}); "
                    "re-run with --force to recompute it (the old file stays until the new one is complete)")


@dataclass
class Plan:
    """All splits' records flattened, and the shards to compute: (split, shard index, batches of
    global indices). The same batch boundaries whether a run is fresh or resumed."""

    records: list[ImageRecord]
    shards: list[tuple[str, int, list[list[int]]]]
    shard_size: int


def plan_shards(s: ImageFolderScan, batch: int, shard_size: int) -> Plan:
    shard = -(-shard_size // batch) * batch
    records, shards = [], []
    for name, split in s.splits.items():
        base, n = len(records), len(split.items)
        records += split.items
        for si, start in enumerate(range(0, n, shard)):
            stop = min(start + shard, n)
            shards.append(
                (name, si, [list(range(base + b, base + min(b + batch, stop))) for b in range(start, stop, batch)])
            )
    return Plan(records, shards, shard)


def image_batches(cfg: Config, s: ImageFolderScan, plan: Plan, order: list[list[int]], pre: Preprocess, device,
                  ranks: dist.Ranks):
    """(uint8 images, reasons) per batch of `order`: batched torchvision decode on the device, or PIL
    in DataLoader worker processes."""
    import torch

    from ..images.datasets import eval_images

    if decoder(cfg, device.type) == "torchvision":
        from ..images.batch_decode import batches

        return batches(s.root, plan.records, order, pre, device, cfg.fast_decode)
    return torch.utils.data.DataLoader(
        eval_images(s.root, plan.records, pre, cfg.fast_decode), batch_sampler=order,
        num_workers=dist.workers_per_rank(cfg.workers, ranks), pin_memory=device.type == "cuda",
        persistent_workers=False)


def compute_shards(cfg: Config, s: ImageFolderScan, plan: Plan, shards: Shards, weights: Weights, pre: Preprocess,
                   where: str, ranks: dist.Ranks = dist.Ranks()) -> dict:
    """Run the backbone on device type `where` over every shard of this rank not yet on disk;
    returns what the header records of it."""
    import torch
    from tqdm import tqdm

    from ..codes.backbone import load_backbone
    from ..codes.encoder import Encoder

    device = resolve_device(where)  # the type the fingerprint was made for
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
    bb = load_backbone(cfg.backbone, weights)
    enc = Encoder(bb, device, pre.mean, pre.std, compile=cfg.compile)
    left = [p for p in plan.shards if not shards.done(p[0], p[1])]  # every rank's
    todo = [p for i, p in enumerate(plan.shards) if ranks.mine(i) and not shards.done(p[0], p[1])]
    if len(left) < len(plan.shards) and ranks.main:
        print(f"resuming: {len(plan.shards) - len(left)} of {len(plan.shards)} shards already extracted in "
              f"{shards.dir}")
    if ranks.main:
        on = f"{device}" + (f" x {ranks.world} ranks" if ranks.world > 1 else "")
        print(f"{s.name}: {len(plan.records)} images, {bb.name} ({bb.weights_id}) -> {bb.dim}-d codes on {on} "
              f"({enc.precision})")
    loader = image_batches(cfg, s, plan, [b for p in todo for b in p[2]], pre, device, ranks)
    mark, n_done, size = enc.first_calls.mark(), 0, lambda p: sum(len(b) for b in p[2])
    # rank 0 shows the progress of all ranks: its own, and the shards the others have finished
    others = [p for p in left if p not in todo]
    with tqdm(total=sum(map(size, left)), unit="img", desc="features", file=sys.stderr,
              disable=None if ranks.main else True, smoothing=0.1) as bar:
        batches = iter(loader)
        for name, si, idx in todo:
            def progress(k: int) -> None:
                bar.n = n_done + k + sum(size(p) for p in others if shards.done(p[0], p[1]))
                bar.refresh()
            shards.save(name, si, *encode_shard(enc, batches, len(idx), progress))
            trim_heap()  # bounded memory however many shards (config.trim_heap)
            n_done += size((name, si, idx))
    say_speed(cfg, enc, n_done, enc.first_calls.since(mark), ranks)
    return {"weights": bb.weights_id, "dim": bb.dim, "precision": enc.precision, "bn_folded": enc.bn_folded,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "compile_seconds": enc.compile_seconds}


def encode_shard(enc, batches, n_batches: int, progress) -> tuple[np.ndarray, list[str], float]:
    """(codes, reasons, seconds) of one shard from the next `n_batches` batches; the seconds are
    model time without compiling (recorded apart): what these codes would cost again."""
    codes, reasons, mark = [], [], enc.first_calls.mark()
    for _ in range(n_batches):
        x, why = next(batches)
        codes.append(enc(x).cpu().numpy())
        reasons += list(why)
        progress(len(reasons))
    return np.concatenate(codes), reasons, enc.first_calls.since(mark)


def say_speed(cfg: Config, enc, n_done: int, secs: float, ranks: dist.Ranks) -> None:
    if cfg.compile and ranks.main:
        print(f"torch.compile: {enc.compile_seconds:.1f}s (the first call at each of {len(enc.first_calls.calls)} "
              "batch shapes), not counted below")
    if n_done:
        print(f"extracted {n_done} images in {secs:.1f}s ({n_done / secs:.1f} images/s)"
              + (f" on rank {ranks.rank}" if ranks.world > 1 else ""))


def split_pieces(s: ImageFolderScan, plan: Plan, shards: Shards, dim: int) -> dict[str, SplitPiece]:
    """Each split's rows read back from its shards, bad files moved to the skipped list."""
    def chunks(name: str, nshards: int, items: list[ImageRecord]):
        pos = 0
        for si in range(nshards):
            c, reasons = shards.load(name, si)
            keep = np.array([r == "" for r in reasons], dtype=bool)
            recs = [r for r, k in zip(items[pos:pos + len(reasons)], keep) if k]
            pos += len(reasons)
            yield c[keep], np.array([r.label for r in recs], dtype=np.int64), [r.path for r in recs]

    pieces, size = {}, plan.shard_size
    for name, split in s.splits.items():
        nsh = sum(1 for p in plan.shards if p[0] == name)
        bad = [(r.path, why) for si in range(nsh)
               for r, why in zip(split.items[si * size:(si + 1) * size], shards.reasons(name, si)) if why]
        for p, why in bad:
            print(f"  skipped {p}: {why}")
        pieces[name] = SplitPiece(len(split.items) - len(bad), dim, split.items, sorted(split.skipped + bad),
                                  chunks(name, nsh, split.items))
    return pieces


def extract(cfg: Config) -> Path:
    """Run the stage; returns the path of the complete, validated features file."""
    out = cfg.out_path
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give the path of a .h5 file")
    s = scan(cfg.data, parse_splits(cfg.splits))  # a bad folder is reported before anything is created
    out.parent.mkdir(parents=True, exist_ok=True)
    ranks = dist.from_env()  # under torchrun: this process's rank; else rank 0 of 1
    with exclusive(out, "features run") if ranks.main else contextlib.nullcontext():
        dist.init(ranks, device_type(cfg.device))
        try:
            return _extract(cfg, out, s, ranks)
        finally:
            dist.close(ranks)


def _extract(cfg: Config, out: Path, s: ImageFolderScan, ranks: dist.Ranks = dist.Ranks()) -> Path:
    weights = Weights.parse(cfg.weights, cfg.seed)
    where, pre = device_type(cfg.device), cfg.preprocess(weights)
    print(f"eval transform: {pre.describe()}")
    inputs = fingerprint_inputs(s, cfg, weights, pre, where)
    fp = json_digest(inputs)
    if not cache_hit(out, fp, inputs, s, cfg.force):
        write_plain(cfg, out, s, weights, pre, where, inputs, fp, ranks)
    wanted = views_wanted(cfg, list(s.splits))
    if wanted and ranks.main:  # views: on rank 0 alone
        add_views(cfg, out, s.root, wanted, weights, pre, where)
    dist.barrier(ranks)
    return out


def write_plain(cfg: Config, out: Path, s: ImageFolderScan, weights: Weights, pre: Preprocess, where: str,
                inputs: dict, fp: str, ranks: dist.Ranks = dist.Ranks()) -> None:
    """Compute the plain codes (resuming from shards; under torchrun each rank its share of the
    shards) and write the file (rank 0, once every shard exists)."""
    plan = plan_shards(s, cfg.batch_size, cfg.shard_size)
    stamp = f"{fp} batch={cfg.batch_size} shard={plan.shard_size}"
    shards = Shards(out, stamp) if ranks.main else None  # rank 0 clears shards of other inputs first
    dist.barrier(ranks)
    shards = shards or Shards(out, stamp)
    run = compute_shards(cfg, s, plan, shards, weights, pre, where, ranks)
    dist.barrier(ranks)
    if ranks.main:
        assemble(cfg, out, s, plan, shards, pre, inputs, fp, run, weights)
    dist.barrier(ranks)


def assemble(cfg: Config, out: Path, s: ImageFolderScan, plan: Plan, shards: Shards, pre: Preprocess, inputs: dict,
             fp: str, run: dict, weights: Weights) -> None:
    """The file from every shard, renamed into place; the shards are removed after."""
    # recorded: the model time of every shard, this run's and those a killed run left, so a
    # resumed extraction reports what the codes cost, not what was left to do
    secs = sum(shards.seconds(name, si) for name, si, _ in plan.shards)
    pieces = split_pieces(s, plan, shards, run["dim"])
    write_codes(out, Header(
        fingerprint=fp, inputs=inputs, classes=s.classes, dataset=s.name, data_root=str(s.root),
        backbone=cfg.backbone, weights_sha256=weights.sha256, weights_arg=weights.arg,
        transform=inputs["transform"], image_size=pre.crop, seed=cfg.seed, extract_seconds=secs,
        images_per_second=len(plan.records) / secs if secs else None,
        versions={**inputs["versions"], "h5py": version("h5py"), "numpy": np.__version__, "cnncodes": __version__},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=command_line(cfg, "features"), **run), pieces)
    shards.remove()
    print(f"wrote {out}: {describe_counts(row_counts(out))}, {run['dim']}-d")


# ---------------------------------------------------------------------------------------------
# Extra views: augmented train views and test-time val views (views.py), stored beside the codes.

def views_wanted(cfg: Config, splits: list[str]) -> dict[str, tuple[str, int]]:
    """split -> (kind, extra views): augmented views for the first (train) split, TTA for the others."""
    want = {splits[0]: ("augment", cfg.views)} if cfg.views else {}
    return want | ({name: ("tta", cfg.tta - 1) for name in splits[1:]} if cfg.tta > 1 else {})


def add_views(cfg: Config, out: Path, root: Path, wanted: dict[str, tuple[str, int]], weights: Weights,
              pre: Preprocess, where: str) -> None:
    """Give each split the extra views asked for: views already in the file (made the same way)
    are kept, only the missing ones are computed, resumable in shards like the codes."""
    from ..codes.store import read_codes, write_views
    from ..images.views import spec

    header = Header.from_attrs(read_attrs(out))
    todo = {}
    for name, (kind, n) in wanted.items():
        sp = spec(kind, pre, cfg.seed)
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
    shards = Shards(out, json_digest({k: v[2:5] for k, v in todo.items()}), suffix=".views.parts")
    arrays, records = {}, {}
    for name, (kind, sp, vfp, n_have, n, secs) in todo.items():
        split = codes.splits[name]
        if not split.paths:
            arrays[name] = np.zeros((0, n, header.dim), np.float32)
            records[name] = {**sp, "n": n, "fingerprint": vfp, "seconds": 0.0}
            continue
        new, t = view_codes(cfg, root, split.paths, kind, list(range(n_have, n)), shards, name, weights, pre, where)
        old = split.views[:, :n_have] if n_have else np.zeros((len(split.paths), 0, header.dim), np.float32)
        arrays[name] = np.concatenate([old, new], axis=1)
        records[name] = {**sp, "n": n, "fingerprint": vfp, "seconds": secs + t}
    write_views(out, arrays, records)
    shards.remove()
    print(f"wrote {out}: " + ", ".join(f"{k} {v['n']} {v['kind']} views" for k, v in records.items()))


def view_codes(cfg: Config, root: Path, paths: list[str], kind: str, views: list[int], shards: Shards, split: str,
               weights: Weights, pre: Preprocess, where: str) -> tuple[np.ndarray, float]:
    """(N x len(views) x D codes of the given views of each image, seconds of model time)."""
    import torch
    from tqdm import tqdm

    from ..codes.backbone import load_backbone
    from ..codes.encoder import Encoder
    from ..images.views import ViewImages

    key, size = f"{split}.v{views[0]}-{views[-1] + 1}", cfg.shard_size
    starts = list(range(0, len(paths), size))
    todo = [si for si in range(len(starts)) if not shards.done(key, si)]
    if todo:
        enc = Encoder(load_backbone(cfg.backbone, weights), resolve_device(where), pre.mean, pre.std, cfg.compile)
        per_batch = max(1, cfg.batch_size // len(views))  # about --batch-size crops per forward pass
        ds = ViewImages(root, paths, pre, cfg.fast_decode, kind, views, cfg.seed)
        with tqdm(total=len(todo) * size, unit="img", desc=f"{split} views", file=sys.stderr, disable=None) as bar:
            for si in todo:
                mark, idx = enc.first_calls.mark(), range(starts[si], min(starts[si] + size, len(paths)))
                loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=per_batch,
                                                     num_workers=resolve_workers(cfg.workers))
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


def run(cfg: Config) -> None:
    extract(cfg)
