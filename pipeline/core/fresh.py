"""The one "up to date" rule, for every file or folder a stage makes (a features file, a run):

- made from the same inputs: a hit, nothing is redone;
- made from other inputs: refused with a one-line error saying what changed, unless `--force`,
  which recomputes it (the old one stays until the new one is complete);
- absent: made.

A stage never silently replaces work made from other inputs: that work may be the only copy of an
honest result (another split, another seed), and recomputing it may cost hours.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import UserError
from .files import _jsonable, json_digest


def differences(old, new, name: str = "") -> list[str]:
    """'name old -> new' for each leaf that differs (transform.crop 224 -> 200), not whole dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(old.keys() | new.keys())
                for d in differences(old.get(k), new.get(k), f"{name}.{k}" if name else str(k))]
    return [] if old == new else [f"{name} {old!r} -> {new!r}"]


def is_current(path: Path | str, recorded: dict | None, inputs: dict, force: bool, why: str = "") -> bool:
    """True when `path` was made from `inputs` (its `recorded` inputs); False when there is nothing
    (recorded None) or `force`; a UserError naming what changed (`why`, else the differing leaves)
    when it was made from other inputs."""
    if force or recorded is None:
        return False
    if json_digest(recorded) == json_digest(inputs):
        return True
    # compared as JSON, as they were recorded: a tuple and the list it was saved as are the same
    now = json.loads(json.dumps(inputs, default=_jsonable))
    raise stale(path, why or "; ".join(differences(recorded, now)) or "inputs differ")


def stale(path: Path | str, why: str) -> UserError:
    """The one message for work made from other inputs."""
    return UserError(f"{path} was made from other inputs ({why}); re-run with --force to replace it "
                     "(the old one stays until the new one is complete)")
