"""Which audit findings each backbone's codes flag: a sweep audits every fully coded backbone's codes
(`cnncodes audit`, one folder each, named in sweep.json), and the report shows, per kind of finding,
how many each backbone flags and how many of those no other backbone does, and a grid of the flagged
images (rows) by backbone (columns), so that a label issue only one backbone sees is visible.

"Flagged" is each audit's own decision, read from its files (they list only what it flagged:
audit/findings.py): label_issues.csv and outliers.csv by image, duplicates.csv by pair (a pair in one
split a near-duplicate, across two a leak). Images a backbone could not code, left out of every
comparison (sweep.json's left_out), are left out here too. The audits are read, never recomputed.
No torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from ..core.files import read_json
from .blocks import Block, FigureFile, Table, md_code, md_text
from .on_test import read_audit_csv

KINDS = ("label", "outlier", "duplicate", "leak")
NAMES = {"label": "Suspected label issues", "outlier": "Outliers", "duplicate": "Near-duplicate pairs (one split)",
         "leak": "Leaks across splits (pairs)"}
LETTERS = {"label": "L", "outlier": "O", "duplicate": "D", "leak": "X"}
COLORS = {"label": "#d62728", "outlier": "#9467bd", "duplicate": "#1f77b4", "leak": "#ff7f0e"}
ONLY_COLOR = "#fff6cc"  # the band behind an image only one backbone flags
SHOWN = 40  # images drawn at most (ordered_images says in what order, shown_images which)
FIGURE = "backbones-audit-findings.png"
FILES = ("label_issues.csv", "outliers.csv", "duplicates.csv", "audit.json")  # audit.json is written last


@dataclass
class Flags:
    """One backbone's findings: per kind what it flags (an image's path; a pair as its two paths,
    sorted), per image the kinds it is flagged for, its split, and its best place in any findings
    file as a share of that file (0 = the file's first row: its most suspect)."""

    label: str
    keys: dict[str, set] = field(default_factory=lambda: {k: set() for k in KINDS})
    kinds: dict[str, set[str]] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)
    rank: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None

    def note(self, path: str, split: str, kind: str, rank: float) -> None:
        self.kinds.setdefault(path, set()).add(kind)
        self.split[path] = split
        self.rank[path] = min(self.rank.get(path, 1.0), rank)


def read_flags(label: str, audit: Path, left_out: set[str]) -> Flags:
    """One backbone's audit folder as its findings, without the images left out of the sweep."""
    f = Flags(label)
    for kind, name in (("label", "label_issues.csv"), ("outlier", "outliers.csv")):
        rows = [r for r in read_audit_csv(audit / name) if r["path"] not in left_out]
        for i, r in enumerate(rows):
            f.keys[kind].add(r["path"])
            f.note(r["path"], r["split"], kind, i / len(rows))
    pairs = [r for r in read_audit_csv(audit / "duplicates.csv") if not {r["path"], r["other"]} & left_out]
    for i, r in enumerate(pairs):
        kind = "duplicate" if r["split"] == r["other_split"] else "leak"
        f.keys[kind].add(tuple(sorted((r["path"], r["other"]))))
        f.note(r["path"], r["split"], kind, i / len(pairs))
        f.note(r["other"], r["other_split"], kind, i / len(pairs))
    about = read_json(audit / "audit.json", "audit record")
    sim = ((about.get("rules") or {}).get("duplicates") or {}).get("similarity") if isinstance(about, dict) else None
    f.threshold = float(sim) if isinstance(sim, (int, float)) else None
    return f


def audited(sweep: dict) -> tuple[list[Flags], list[str]]:
    """The findings of each backbone whose audit folder is whole, and the labels of those whose
    recorded folder is gone (said in the report rather than read as 'nothing flagged')."""
    left = set(sweep.get("left_out") or [])
    found, missing = [], []
    for b in sweep.get("backbones") or []:
        if not b.get("audit"):
            continue
        where = Path(b["audit"])
        if all((where / n).is_file() for n in FILES):
            found.append(read_flags(b["label"], where, left))
        else:
            missing.append(b["label"])
    return found, missing


def only(flags: list[Flags], kind: str) -> dict[str, set]:
    """By backbone, what it flags of this kind that no other backbone does."""
    return {f.label: f.keys[kind] - set().union(*(g.keys[kind] for g in flags if g is not f)) for f in flags}


def counts_table(flags: list[Flags]) -> Table:
    """Per kind (rows) and backbone (columns): how many it flags, and how many of those only it (when
    there are others to compare with)."""
    rows = []
    for kind in KINDS:
        alone = only(flags, kind)
        rows.append([NAMES[kind], *(f"{len(f.keys[kind])}" + (f" ({len(alone[f.label])} only here)"
                                                               if len(flags) > 1 else "") for f in flags)])
    rows.append(["Duplicate threshold (cosine, read off its codes)",
                 *(f"{f.threshold:.3f}" if f.threshold is not None else "–" for f in flags)])
    return Table(["Finding", *(md_text(f.label) for f in flags)], rows, "l" + "r" * len(flags))


def ordered_images(flags: list[Flags]) -> list[str]:
    """Every image any backbone flags: those several backbones flag first (the most agreeing first,
    then the most suspect: its best place in any backbone's findings files, each a share of its file
    so that a long file and a short one weigh alike), then those one backbone alone flags, taken in
    turn from each backbone, most suspect first, so that a backbone flagging many (a random one)
    cannot crowd the others' lone findings out of the figure."""
    images = set().union(*(f.kinds for f in flags))
    agree = {p: sum(p in f.kinds for f in flags) for p in images}
    best = {p: min(f.rank[p] for f in flags if p in f.rank) for p in images}
    shared = sorted((p for p in images if agree[p] > 1), key=lambda p: (-agree[p], best[p], p))
    alone = [sorted((p for p in f.kinds if agree[p] == 1), key=lambda p: (best[p], p)) for f in flags]
    return shared + [p for turn in zip_longest(*alone) for p in turn if p is not None]


def shown_images(flags: list[Flags], images: list[str], n: int = SHOWN) -> list[str]:
    """The first n of `images` (ordered_images), except that when there are more, up to half the
    rows go to images one backbone alone flags: on thousands of images the agreed ones would
    otherwise fill every row and hide what the figure is for."""
    if len(images) <= n:
        return images
    alone = [p for p in images if _alone(p, flags)]
    shared = [p for p in images if not _alone(p, flags)]
    k = min(len(alone), max(n // 2, n - len(shared)))
    return shared[:n - k] + alone[:k]


def _short(path: str, split: str, width: int = 34) -> str:
    name = Path(path).name
    name = name if len(name) <= width else name[:width - 1] + "…"
    return f"{name} [{split}]"


def _alone(p: str, flags: list[Flags]) -> bool:
    return len(flags) > 1 and sum(p in f.kinds for f in flags) == 1


def _cells(ax, flags: list[Flags], shown: list[str]) -> None:
    """A band behind each image one backbone alone flags, and a cell lettered by kind per flag."""
    from matplotlib.patches import Rectangle

    for y, p in enumerate(shown):
        if _alone(p, flags):
            ax.add_patch(Rectangle((-0.5, y - 0.5), len(flags), 1, color=ONLY_COLOR, zorder=0))
        for x, f in enumerate(flags):
            kinds = [k for k in KINDS if k in f.kinds.get(p, ())]
            if kinds:
                ax.add_patch(Rectangle((x - 0.42, y - 0.38), 0.84, 0.76, color=COLORS[kinds[0]], zorder=1))
                ax.text(x, y, "·".join(LETTERS[k] for k in kinds), ha="center", va="center", color="white",
                        fontsize=9, fontweight="bold", zorder=2)


def _labels(ax, flags: list[Flags], shown: list[str]) -> None:
    """Backbones across the top, images down the side (bold: one backbone alone flags it), the legend."""
    from matplotlib.patches import Patch

    from .figures import _literal

    split = {p: s for f in flags for p, s in f.split.items()}
    ax.set_xlim(-0.5, len(flags) - 0.5)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    # 'backbone (weights)' on two lines: the weights' tags are long and the columns narrow
    ax.set_xticks(range(len(flags)), [_literal(f.label.replace(" (", "\n(", 1)) for f in flags], fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(shown)), [_literal(_short(p, split.get(p, "?"))) for p in shown], fontsize=9)
    for tick, p in zip(ax.get_yticklabels(), shown):
        tick.set_fontweight("bold" if _alone(p, flags) else "normal")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [Patch(color=COLORS[k], label=f"{LETTERS[k]}: {NAMES[k].split(' (')[0].lower()}") for k in KINDS]
    handles += [Patch(color=ONLY_COLOR, label="flagged by one backbone only")] if len(flags) > 1 else []
    ax.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles),
              frameon=False)


def grid_figure(flags: list[Flags], figdir: Path) -> FigureFile | None:
    """The flagged images (rows, SHOWN at most) by backbone (columns): a filled cell where that
    backbone flags the image, coloured and lettered by kind; an image only one backbone flags sits on
    a yellow band, its name in bold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .figures import WIDE, _save, legible

    images = ordered_images(flags)
    if not images:
        return None
    shown = shown_images(flags, images)

    @legible
    def draw() -> Path:
        fig = Figure(figsize=(WIDE, 1.6 + 0.26 * len(shown)))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        _cells(ax, flags, shown)
        _labels(ax, flags, shown)
        fig.tight_layout()
        return _save(fig, figdir / FIGURE)

    figdir.mkdir(parents=True, exist_ok=True)
    draw()
    more = f" ({len(shown)} of the {len(images)} flagged shown)" if len(images) > len(shown) else ""
    return FigureFile(FIGURE, f"The images any backbone's audit flags{more}: those several backbones flag first (the "
                              "most agreeing, then the most suspect), then those one backbone alone flags (on the "
                              "yellow band; up to half the rows when not all fit), taken in turn from each "
                              "backbone; a filled cell where that backbone's codes flag the image, lettered by kind "
                              "(a pair's two images are both marked).")


def audit_blocks(sweep: dict, figdir: Path) -> list[Block]:
    """The backbone section's part on the audits; [] when the sweep audited nothing (an older sweep,
    or --no-audit)."""
    flags, missing = audited(sweep)
    gone = (f" The audit folder of {', '.join(md_text(m) for m in missing)} is missing, so it is not shown."
            if missing else "")
    if not flags:
        return [Block("p", gone.strip())] if gone else []
    where = ", ".join(md_code(b["audit"]) for b in sweep["backbones"] if b.get("audit"))
    blocks = [Block("p", f"**What each backbone's codes flag.** Each backbone's codes were audited (`cnncodes "
                         f"audit`: label issues, near-duplicates and leaks, outliers; in {where}). Per kind, how "
                         "many each flags" + (", and in brackets how many of those no other backbone flags"
                                              if len(flags) > 1 else "")
                         + "; images left out of the comparison are left out here too." + gone),
              Block("table", counts_table(flags))]
    fig = grid_figure(flags, figdir)
    if fig:
        blocks += [Block("figure", fig),
                   Block("p", "What this cannot tell you: each audit draws its own lines from its own codes (its "
                              "label model, its duplicate threshold), so a finding only one backbone makes may be "
                              "that backbone's weakness (classes its codes do not separate, a random or ill-suited "
                              "backbone above all) rather than the image's; and agreement is no proof either, since "
                              "backbones trained on the same data share blind spots. Look at the image before "
                              "acting on it.")]
    return blocks
