"""Codes against the images they came from: a cache that no longer describes its image folder is
refused, and the images an exclusion list names (the audit's exclude.txt) are left out.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import UserError
from ..images.exclude import check_emptied, check_exclusions, check_named, read_exclusions
from ..images.scan import scan
from ..images.splits import fractions_of
from .store import Codes, without_paths


def excluded(codes: Codes, exclude: str) -> Codes:
    """The codes less the images --exclude names (audit's exclude.txt): one step to act on a finding.
    Images the features stage already left out (the same list given to both) are counted, not
    refused."""
    gone, what = read_exclusions(exclude), f"--exclude {exclude!r}"
    check_named(gone, what)
    already = gone & {p for s in codes.splits.values() for p, why in s.skipped if why.startswith("excluded by ")}
    gone -= already
    check_exclusions(gone, (p for s in codes.splits.values() for p in s.paths), what)
    out = without_paths(codes, gone, f"excluded by {Path(exclude).name}")
    check_emptied({n: s.labels for n, s in codes.splits.items()}, {n: s.labels for n, s in out.splits.items()},
                  codes.classes, what)
    print(f"--exclude {exclude}: leaving out {len(gone)} of {sum(len(s.paths) for s in codes.splits.values())} "
          "images" + (f"; {len(already)} more already excluded when the features were made" if already else ""),
          flush=True)
    return out


def check_fresh(codes: Codes, data: Path) -> None:
    """Refuse codes that no longer describe the images under `data` (less any the features stage
    was told to exclude: they are recorded as skipped, 'excluded by ...')."""
    rule = codes.header.inputs.get("split_rule")  # split automatically: the same rule again
    s = scan(data, ("auto",), fractions_of(rule)) if rule else scan(data, tuple(codes.splits))
    gone = {p for sp in codes.splits.values() for p, why in sp.skipped if why.startswith("excluded by ")}
    if gone:
        s = replace(s, splits={n: replace(sp, items=[r for r in sp.items if r.path not in gone])
                               for n, sp in s.splits.items()})
    if s.classes != codes.classes or s.name != codes.header.dataset:
        raise UserError(f"{codes.path} holds codes of dataset {codes.header.dataset!r} {codes.classes}, "
                        f"not of {str(data)!r} {s.classes}")
    if s.digest() != codes.header.inputs.get("image_list"):
        raise UserError(
            f"{codes.path} is stale: images under {str(data)!r} changed since extraction; re-run `make features`"
        )
