"""Codes from several backbones, the heads on each, and one report whose verdict spans backbone x head.

Usage: cnncodes sweep --data DIR --backbones "mobilenet_v2=FILE.pth timm/tf_efficientnet_lite0=DEFAULT resnet18=none"

For each backbone the sweep runs the very `features` and `classify` commands a user would type
(in this process, through the CLI, so each run records that command and each features file is
cached and skipped when unchanged, under torchrun too), then `report` over the one runs folder:
the verdict's paired tests and Holm correction already span every run there, so the cheapest
(backbone, head) that val cannot tell from the best is its answer. Before that, an image that one
backbone coded and another skipped is left out of every backbone's runs (`--exclude`), so every
comparison is on the same images; and every head is fitted and scored on the plain codes (`classify
--views 0 --tta 1`), so a file that also holds augmented views is not compared on other terms than
the rest. Each fully coded backbone's codes are audited (`audit`, cached like the rest; --no-audit
skips it) into <report>/audit/<features file's name>, so the report shows which findings each
backbone's codes flag. `--screen N` first codes a stratified sample of N train and N
val images per backbone and drops those the sample already separates as worse (runs.screen).
sweep.json in the runs folder records the line-up, each backbone's parameters, ms per image and
audit folder, what was left out and what screening dropped; the report's backbone section reads it.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..codes.lineup import Entry, not_in_all, parameters, parse_lineup
from ..codes.store import read_attrs
from ..codes.weights import features_path
from ..core import dist
from ..core.cli import Common, opt, parse_splits
from ..core.files import write_json, write_text
from ..heads.registry import HEADS
from ..images.manifest import MANIFEST_COLUMNS
from ..images.scan import ImageFolderScan, scan
from ..images.splits import parse_fractions
from ..runs import screen as screening

SCHEMA = "cnncodes-sweep/1"


@dataclass(frozen=True)
class Config(Common):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root (DATA/<split>/<class>/<image>) or a CSV manifest")
    backbones: str = opt("", "the backbones, space-separated NAME=WEIGHTS (WEIGHTS: DEFAULT, none or a state_dict "
                             "file; NAME a torchvision model or timm/<name>)", required=True)
    head: str = opt("all", "the heads fitted on each backbone's codes", tuple(HEADS) + ("all",))
    out: Path = opt(Path(""), "runs folder for every backbone's heads (and sweep.json); empty = "
                              "reports/runs/<dataset>-sweep")
    report: Path = opt(Path(""), "report folder; empty = reports/sweep/<dataset>")
    screen: int = opt(-1, f"code a stratified sample of N train + N val images per backbone first and drop those "
                          f"the paired test on it separates as worse than the best; 0 = off; -1 = "
                          f"{screening.AUTO_N} when the data holds {screening.AUTO_FROM} images or more")
    splits: str = opt("auto", "split folders, as `features --splits`")
    split: str = opt("0.7,0.15,0.15", "automatic split shares, as `features --split`")
    audit: bool = opt(True, "audit each backbone's codes (label issues, duplicates and leaks, outliers) for the "
                            "report's comparison of what each flags; --no-audit skips it (minutes at a million codes)")
    force: bool = opt(False, "recompute codes, refit heads and redo audits made from other inputs")

    def __post_init__(self):
        super().__post_init__()
        parse_lineup(self.backbones, self.seed)
        parse_fractions(self.split)
        if self.screen < -1:
            raise UserError(f"--screen must be -1 (auto), 0 (off) or a sample size (got {self.screen})")


def _stage(*argv) -> None:
    """One stage through the CLI, in this process: the same validation, records and caching."""
    from ..__main__ import main

    if main([str(a) for a in argv]) != 0:
        raise UserError(f"`{argv[0]}` failed (its error is above); the sweep stopped")


def _common(cfg: Config) -> list:
    return ["--device", cfg.device, "--seed", cfg.seed, "--workers", cfg.workers, "--batch-size", cfg.batch_size]


def _features(cfg: Config, e: Entry, data, out: Path, splits: str) -> Path:
    _stage("features", "--data", data, "--backbone", e.backbone, "--weights", e.weights, "--out", out,
           "--splits", splits, "--split", cfg.split, *_common(cfg), *(["--force"] if cfg.force else []))
    return out


def _sample_manifest(s: ImageFolderScan, n: int, where: Path, seed: int) -> Path:
    """The screening sample as a CSV manifest (absolute paths), the same for every backbone."""
    import io

    small = screening.sample(s, n, "train", "val", seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for name, sp in small.splits.items():
        w.writerows([str((s.root / r.path).resolve()), s.classes[r.label], name] for r in sp.items)
    return write_text(where / f"screen-{n}.csv", buf.getvalue())


def _cache(cfg: Config, e: Entry) -> Path:
    """The features file `features` makes by default for this backbone and weights."""
    return features_path(cfg.data, e.backbone, _weights(e, cfg))


def screen_round(cfg: Config, s: ImageFolderScan, entries: tuple[Entry, ...], n: int, out: Path) -> dict:
    """Code the sample with every backbone, probe it, and decide which to drop (runs.screen)."""
    t0 = time.perf_counter()
    manifest = _sample_manifest(s, n, out / ".screen", cfg.seed)
    files = {e: _features(cfg, e, manifest, _cache(cfg, e).parent / f"screen-{n}" / _cache(cfg, e).name,
                          "train,val") for e in entries}
    scored, rates = {}, {}
    for e, f in files.items():
        scored[e.label], rates[e.label] = screening.probe_correct(f, "train", "val", cfg.seed)
    decisions = screening.decide(scored)
    for e in entries:
        d = decisions[e.label]
        print(f"screen: {e.label} sample val {d['accuracy']:.1%} on {d['n']}"
              + (" (best)" if d["best"] else f", Holm p = {d['p_holm']:.2g}: {'dropped' if d['dropped'] else 'kept'}"),
              flush=True)
    return {"n": n, "seconds": time.perf_counter() - t0, "images_per_second": rates, "decisions": decisions}


def _weights(e: Entry, cfg: Config):
    from ..codes.weights import Weights

    return Weights.parse(e.weights, cfg.seed)


def sweep(cfg: Config) -> dict:
    """Run the sweep; returns the sweep.json record."""
    t0 = time.perf_counter()
    entries = parse_lineup(cfg.backbones, cfg.seed)
    s = scan(cfg.data, parse_splits(cfg.splits), parse_fractions(cfg.split))
    for need in ("train", "val"):
        if need not in s.splits:
            raise UserError(f"{str(cfg.data)!r} has no {need!r} split (it has {list(s.splits)}): the sweep fits on "
                            "train and compares on val")
    out = Path(cfg.out) if str(cfg.out) not in ("", ".") else Path("reports/runs") / f"{s.name}-sweep"
    report = Path(cfg.report) if str(cfg.report) not in ("", ".") else Path("reports/sweep") / s.name
    n_images = sum(len(s.splits[k].items) for k in ("train", "val"))
    n = screening.auto_size(cfg.screen, n_images, len(entries))
    screened = screen_round(cfg, s, entries, n, out) if n else None
    kept = [e for e in entries if not (screened and screened["decisions"][e.label]["dropped"])]
    files = {e: _features(cfg, e, cfg.data, _cache(cfg, e), cfg.splits)
             for e in kept}
    if not dist.from_env().main:  # under torchrun the other ranks helped with the codes only
        return {}
    left = not_in_all(list(files.values()), list(s.splits))
    for e, f in files.items():
        exclude = write_text(out / ".screen" / f"left-out-{f.stem}.txt", "\n".join(left[f]) + "\n") if left[f] else ""
        # plain codes only: a file coded with views by an earlier `features --views` must not be compared
        # on other terms than its rivals (their cost and accuracy would not be like for like)
        _stage("classify", "--features", f, "--head", cfg.head, "--data", cfg.data, "--out", out, "--seed", cfg.seed,
               "--views", 0, "--tta", 1, *(["--exclude", exclude] if exclude else []),
               *(["--force"] if cfg.force else []))
    _warn_views_runs(out)
    audits = {e: _audit(cfg, f, report) for e, f in files.items()} if cfg.audit else {}
    record = {**_record(cfg, entries, files, left, screened, n_images, audits), "seconds": time.perf_counter() - t0}
    write_json(out / "sweep.json", record)
    _stage("report", "--runs", out, "--out", report)
    return record


def _warn_views_runs(out: Path) -> None:
    """Say so when the runs folder also holds runs on augmented or test-time views (an earlier classify
    or sweep): the report compares every run in the folder, so they would sit in the verdict beside
    this sweep's plain-code runs (read as the report reads them, runs.read.load_runs)."""
    from ..runs.read import load_runs

    viewed = [r.dir.name for r in load_runs(out) if (r.m.get("views") or 0) > 0 or (r.m.get("tta") or 1) > 1]
    if viewed:
        print(f"sweep: {out} also holds {len(viewed)} run{'s' * (len(viewed) != 1)} on augmented or test-time views "
              f"from an earlier command ({', '.join(viewed[:3])}{', ...' if len(viewed) > 3 else ''}); the report "
              "compares every run in the folder: remove them or give the sweep another --out", flush=True)


def _audit(cfg: Config, features: Path, report: Path) -> Path:
    """The audit of one backbone's codes, into <report>/audit/<features file's name> (the audit stage
    redoes nothing when that folder holds the audit of the same codes with the same settings)."""
    where = report / "audit" / features.stem
    _stage("audit", "--features", features, "--out", where, "--seed", cfg.seed, *(["--force"] if cfg.force else []))
    return where


def _record(cfg: Config, entries, files: dict, left: dict, screened: dict | None, n_images: int,
            audits: dict) -> dict:
    rows = []
    for e in entries:
        f = files.get(e)
        a = read_attrs(f) if f else {}
        ips = a.get("images_per_second") or (screened or {}).get("images_per_second", {}).get(e.label)
        rows.append({"backbone": e.backbone, "weights": e.weights, "label": e.label, "weights_id": a.get("weights"),
                     "features": str(f) if f else None, "dim": a.get("dim"), "parameters": parameters(e, cfg.seed),
                     "ms_per_image": 1000.0 / ips if ips else None, "extract_seconds": a.get("extract_seconds"),
                     "dropped_by_screen": f is None, "left_out": left.get(f, []) if f else [],
                     "audit": str(audits[e]) if e in audits else None})
    saved = None
    if screened:
        gone = [r for r in rows if r["dropped_by_screen"] and r["ms_per_image"]]
        saved = sum(r["ms_per_image"] / 1000.0 * n_images for r in gone) - screened["seconds"]
    return {"schema": SCHEMA, "backbones": rows, "head": cfg.head, "images": n_images,
            "left_out": sorted({p for r in rows for p in r["left_out"]}),
            "screen": {**screened, "saved_seconds": saved} if screened else None,
            "command": " ".join(cfg.typed) if cfg.typed else None}


def run(cfg: Config) -> None:
    import os

    from ..core.devices import device_type

    ranks = dist.from_env()
    if ranks.world == 1:
        sweep(cfg)
        return
    os.environ[dist.KEEP_GROUP] = "1"  # one process group for every stage the sweep runs
    dist.init(ranks, device_type(cfg.device))
    try:
        sweep(cfg)
    finally:
        os.environ.pop(dist.KEEP_GROUP, None)
        dist.close(ranks, force=True)
