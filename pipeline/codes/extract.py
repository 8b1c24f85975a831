"""Extraction in resumable shards: one job object (`Extraction`) holds what determines the codes;
its fingerprint decides whether a cached file is a hit, and the shards are computed (by this rank's
share under torchrun), assembled into the HDF5 store and removed.

The fingerprint is made before any network is built: a cache hit with a weights file or random
weights imports neither torch nor torchvision.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import UserError, __version__
from ..core import dist
from ..core.devices import precision_for, resolve_device, trim_heap
from ..core.files import json_digest
from ..core.precision import decision_key
from ..core.fresh import differences, stale
from ..images.scan import ImageFolderScan, ImageRecord
from ..images.transforms import Preprocess
from .shards import Shards
from .store import FORMAT, Header, SplitPiece, describe_counts, read_attrs, recorded_files, row_counts, write_codes
from .weights import Weights


@dataclass(frozen=True)
class Extraction:
    """One extraction: the images, the model and its transform, where it runs and how it batches."""

    scan: ImageFolderScan
    backbone: str
    weights: Weights
    pre: Preprocess
    device_type: str  # 'cpu' or 'cuda': the fingerprint's precision follows from it and `precision`
    decode: str = "auto"  # the --decode flag: auto, cpu, gpu or torchvision
    compile: bool = False
    fast_decode: bool = True
    batch_size: int = 32
    shard_size: int = 512
    workers: int = -1
    seed: int = 0
    command: str = ""  # the command line that made it (recorded in the file)
    precision: str = "auto"  # the --precision flag; inputs["precision"] is what it resolves to here

    @property
    def precision_key(self) -> str:
        """Where --precision auto's decision for this backbone and batch size is remembered."""
        return decision_key(self.backbone, self.batch_size, "features")

    @property
    def decoder(self) -> str:
        """'pil' or 'torchvision' (batched), --decode resolved for the device type."""
        if self.decode == "gpu" and self.device_type != "cuda":
            raise UserError(f"--decode gpu needs a CUDA GPU and extraction runs on {self.device_type}; use --decode "
                            "cpu (PIL) or torchvision (batched on the CPU)")
        batched = self.decode in ("gpu", "torchvision") or (self.decode == "auto" and self.device_type == "cuda")
        return "torchvision" if batched else "pil"

    @cached_property
    def inputs(self) -> dict:
        return fingerprint_inputs(self)

    @cached_property
    def fingerprint(self) -> str:
        return json_digest(self.inputs)


def fingerprint_inputs(job: Extraction) -> dict:
    """Everything that determines the codes, known before any network is built; the decoder is
    part of it, so PIL- and GPU-decoded codes never mix."""
    spec = job.pre.spec(job.fast_decode)
    if job.decoder == "torchvision":
        from ..images.batch_decode import decoder_name

        spec["decode"] = decoder_name(job.device_type)
    return {
        "format": FORMAT,
        "backbone": job.backbone,
        "weights": job.weights.key,
        "weights_sha256": job.weights.sha256,
        "transform": spec,
        # resolved (auto: as measured, codes.autoprec): bf16 and fp32 codes never mix
        "precision": precision_for(job.device_type, job.precision, job.precision_key),
        # BN folding is decided by the backbone and the torch version (both recorded): fx either
        # traces the model or not, so the setting, not its outcome, goes in the fingerprint
        "bn_folding": "torch.fx fuse when traceable",
        # compiled kernels round differently: such codes are cached apart (key absent otherwise,
        # so files made without --compile keep their fingerprint)
        **({"compile": "torch.compile, " + ("reduce-overhead" if job.device_type == "cuda" else "default") + " mode"}
           if job.compile else {}),
        "classes": job.scan.classes,
        "splits": list(job.scan.splits),
        **({"split_rule": job.scan.rule} if job.scan.rule else {}),  # an automatic split (images/splits.py)
        "image_list": job.scan.digest(),
        "versions": {"torch": version("torch"), "torchvision": version("torchvision"), "pillow": version("pillow"),
                     **({"timm": version("timm")} if job.backbone.startswith("timm/") else {})},
    }


def explain_change(out: Path, old: dict, job: Extraction) -> str:
    """Say in words what differs between the cached inputs and the current ones."""
    old_inputs, new = old.get("inputs", {}), job.inputs
    why = [d for k in new if k != "image_list" for d in differences(old_inputs.get(k), new[k], k)]
    if old_inputs.get("image_list") != new["image_list"]:
        before = recorded_files(out)
        added = removed = modified = 0
        for name, split in job.scan.splits.items():
            was = before.get(name, {})
            now = {r.path: (r.size, r.mtime_ns) for r in split.items}
            added += len(now.keys() - was.keys())
            removed += len(was.keys() - now.keys())
            modified += sum(1 for p in now.keys() & was.keys() if now[p] != was[p])
        why.append(f"images: {added} added, {removed} removed, {modified} modified")
    return "; ".join(why) or "inputs differ"


def cache_hit(out: Path, job: Extraction, force: bool) -> bool:
    """True when `out` already holds these codes; UserError when it holds others (unless force):
    the one "up to date" rule (core.fresh), the change said leaf by leaf and image by image."""
    if not out.exists() or force:
        return False
    try:
        old = read_attrs(out)
    except UserError as e:
        raise UserError(f"{e}; --force replaces it") from None
    if old.get("fingerprint") != job.fingerprint:
        raise stale(out, explain_change(out, old, job))
    print(f"cache hit: {out} is up to date ({describe_counts(row_counts(out))}); no model work done")
    Shards.remove_leftovers(out)  # a run killed between rename and cleanup
    return True


class Shard(NamedTuple):
    """One resumable piece of a split: its index within the split and its batches of global indices."""

    split: str
    index: int
    batches: list[list[int]]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass
class Plan:
    """All splits' records flattened, and the shards to compute. The same batch boundaries whether
    a run is fresh or resumed."""

    records: list[ImageRecord]
    shards: list[Shard]
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
                Shard(name, si, [list(range(base + b, base + min(b + batch, stop))) for b in range(start, stop, batch)])
            )
    return Plan(records, shards, shard)


def image_batches(job: Extraction, plan: Plan, order: list[list[int]], device, ranks: dist.Ranks):
    """(uint8 images, reasons) per batch of `order`: batched torchvision decode on the device, or PIL
    in DataLoader worker processes."""
    import torch

    from ..images.datasets import eval_images

    if job.decoder == "torchvision":
        from ..images.batch_decode import batches

        return batches(job.scan.root, plan.records, order, job.pre, device, job.fast_decode)
    return torch.utils.data.DataLoader(
        eval_images(job.scan.root, plan.records, job.pre, job.fast_decode), batch_sampler=order,
        num_workers=dist.workers_per_rank(job.workers, ranks), pin_memory=device.type == "cuda",
        persistent_workers=False)


def compute_shards(job: Extraction, plan: Plan, shards: Shards, ranks: dist.Ranks = dist.Ranks()) -> dict:
    """Run the backbone over every shard of this rank not yet on disk; returns what the header
    records of it."""
    import torch

    from .backbone import load_backbone
    from .encoder import Encoder

    device = resolve_device(job.device_type)  # the type the fingerprint was made for
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
    bb = load_backbone(job.backbone, job.weights)
    enc = Encoder(bb, device, job.pre.mean, job.pre.std, job.compile, job.inputs["precision"])
    if ranks.main:  # a damaged or foreign shard is discarded (and said) before anyone counts what is left
        for p in plan.shards:
            shards.valid(p.split, p.index, (p.size, bb.dim))
    dist.barrier(ranks)
    left = [p for p in plan.shards if not shards.done(p.split, p.index)]  # every rank's
    todo = [p for i, p in enumerate(plan.shards) if ranks.mine(i) and not shards.done(p.split, p.index)]
    if len(left) < len(plan.shards) and ranks.main:
        print(f"resuming: {len(plan.shards) - len(left)} of {len(plan.shards)} shards already extracted in "
              f"{shards.dir}")
    if ranks.main:
        on = f"{device}" + (f" x {ranks.world} ranks" if ranks.world > 1 else "")
        print(f"{job.scan.name}: {len(plan.records)} images, {bb.name} ({bb.weights_id}) -> {bb.dim}-d codes on {on} "
              f"({enc.precision}, --precision {job.precision})")
    loader = image_batches(job, plan, [b for p in todo for b in p.batches], device, ranks)
    mark = enc.first_calls.mark()
    n_done = encode_shards(enc, iter(loader), todo, [p for p in left if p not in todo], shards, ranks)
    say_speed(job, enc, n_done, enc.first_calls.since(mark), ranks)
    from .encoder import trunk_cost

    made = {"weights": bb.weights_id, "dim": bb.dim, "precision": enc.precision, "bn_folded": enc.bn_folded,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "compile_seconds": enc.compile_seconds}
    return made | {"cost": trunk_cost(enc, job.pre.crop) if ranks.main and n_done else {}}  # a resume: not timed


def encode_shards(enc, batches, todo: list[Shard], others: list[Shard], shards: Shards, ranks: dist.Ranks) -> int:
    """Encode and save each shard of `todo`; rank 0 shows the progress of all ranks: its own, and
    the shards the others (`others`) have finished. Returns the number of images encoded."""
    from tqdm import tqdm

    n_done = 0
    with tqdm(total=sum(p.size for p in todo + others), unit="img", desc="features", file=sys.stderr,
              disable=None if ranks.main else True, smoothing=0.1) as bar:
        for p in todo:
            def progress(k: int) -> None:
                bar.n = n_done + k + sum(o.size for o in others if shards.done(o.split, o.index))
                bar.refresh()
            shards.save(p.split, p.index, *encode_shard(enc, batches, len(p.batches), progress))
            trim_heap()  # bounded memory however many shards (core.devices.trim_heap)
            n_done += p.size
    return n_done


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


def say_speed(job: Extraction, enc, n_done: int, secs: float, ranks: dist.Ranks) -> None:
    if job.compile and ranks.main:
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
        nsh = sum(1 for p in plan.shards if p.split == name)
        bad = [(r.path, why) for si in range(nsh)
               for r, why in zip(split.items[si * size:(si + 1) * size], shards.reasons(name, si)) if why]
        for p, why in bad:
            print(f"  skipped {p}: {why}")
        pieces[name] = SplitPiece(len(split.items) - len(bad), dim, split.items, sorted(split.skipped + bad),
                                  chunks(name, nsh, split.items))
    return pieces


def write_plain(out: Path, job: Extraction, ranks: dist.Ranks = dist.Ranks(), force: bool = False) -> None:
    """Compute the plain codes (resuming from shards, unless `force`; under torchrun each rank its
    share of the shards) and write the file (rank 0, once every shard exists)."""
    plan = plan_shards(job.scan, job.batch_size, job.shard_size)
    stamp = f"{job.fingerprint} batch={job.batch_size} shard={plan.shard_size}"
    Shards.check_place(out)  # on every rank: all stop with the same message
    shards = Shards(out, stamp, force=force) if ranks.main else None  # rank 0 clears shards of other inputs first
    dist.barrier(ranks)
    shards = shards or Shards(out, stamp)
    made = compute_shards(job, plan, shards, ranks)
    dist.barrier(ranks)
    if ranks.main:
        assemble(out, job, plan, shards, made)
    dist.barrier(ranks)


def assemble(out: Path, job: Extraction, plan: Plan, shards: Shards, made: dict) -> None:
    """The file from every shard, renamed into place; the shards are removed after. `made` is what
    compute_shards says of the model (weights id, dim, precision, device...)."""
    # recorded: the model time of every shard, this run's and those a killed run left, so a
    # resumed extraction reports what the codes cost, not what was left to do
    secs = sum(shards.seconds(p.split, p.index) for p in plan.shards)
    pieces = split_pieces(job.scan, plan, shards, made["dim"])
    s, inputs = job.scan, job.inputs
    write_codes(out, Header(
        fingerprint=job.fingerprint, inputs=inputs, classes=s.classes, dataset=s.name, data_root=str(s.root),
        backbone=job.backbone, weights_sha256=job.weights.sha256, weights_arg=job.weights.arg,
        transform=inputs["transform"], image_size=job.pre.crop, seed=job.seed, extract_seconds=secs,
        images_per_second=len(plan.records) / secs if secs else None,
        versions={**inputs["versions"], "h5py": version("h5py"), "numpy": np.__version__, "cnncodes": __version__},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=job.command, **made), pieces)
    shards.remove()
    print(f"wrote {out}: {describe_counts(row_counts(out))}, {made['dim']}-d")
