"""The report's "Your data" section, from an audit folder (`cnncodes audit --out DIR`): the images
most likely mislabelled, the near-duplicates and train/val leaks, and the outliers, each with its
score, the suspects shown as thumbnails. The audit is read, never recomputed.
"""
from __future__ import annotations

from pathlib import Path

from .. import UserError
from ..core.files import read_json
from ..runs.read import Run
from .blocks import Block, FigureFile, Table, md_code, md_text
from .choice import ALPHA, TWIN, recommend, twins
from .on_test import read_audit_csv
from .rows import DASH, fmt_acc, fmt_pct

SHOWN = 5  # suspects listed (and drawn) per finding


AUDIT_FILES = ("label_issues.csv", "duplicates.csv", "outliers.csv", "audit.json")


def check_audit(audit: Path, dataset: str, classes: list[str], val_paths: set[str] = frozenset()) -> None:
    """UserError unless `audit` is a whole audit folder of this dataset: a missing or partial folder
    would read as '0 findings', another dataset's audit would be cited as this one's. An audit too
    old to record its dataset is checked by its val images: some must be the runs' (`val_paths`)."""
    what = f"--audit {str(audit)!r}"
    if not audit.is_dir():
        raise UserError(f"{what} is {'a file' if audit.exists() else 'missing'}: give the folder `cnncodes audit "
                        "--out DIR` wrote")
    lacking = [f for f in AUDIT_FILES if not (audit / f).is_file()]
    if lacking:
        raise UserError(f"{what} is not a whole audit folder (no {', '.join(lacking)}): run `cnncodes audit --out "
                        f"{audit}` again")
    about = read_json(audit / "audit.json", "audit record")
    if not isinstance(about, dict):
        raise UserError(f"{what}: audit.json is not an audit record")
    theirs = (about.get("dataset"), about.get("classes"))
    if theirs[0] is not None and theirs != (dataset, list(classes)):
        raise UserError(f"{what} audits dataset {theirs[0]!r} {theirs[1]}, not the runs' {dataset!r} {list(classes)}: "
                        "give the audit of this dataset's features")
    listed = {r["path"] for f in AUDIT_FILES[:3] for r in read_audit_csv(audit / f) if r.get("split") == "val"}
    if theirs[0] is None and listed and val_paths and not listed & val_paths:
        raise UserError(f"{what} names none of the runs' val images (e.g. {sorted(listed)[0]!r}): it audits other "
                        "images; give the audit of this dataset's features")


def your_data(audit: Path | None, data_root: Path | None, figdir: Path,
              results: tuple[list[dict], list[Run]] = ([], [])) -> list[Block]:
    """The section's blocks; [] without an audit folder. `results` (the table rows and the runs)
    adds what acting on the audit changed, where a run was repeated with --exclude."""
    if not audit or not Path(audit).is_dir():
        return []
    audit = Path(audit)
    issues, dups, odd = (read_audit_csv(audit / f) for f in ("label_issues.csv", "duplicates.csv", "outliers.csv"))
    blocks = [Block("h2", "Your data"),
              Block("p", f"From the audit in {md_code(str(audit))} (`cnncodes audit`, on the cached codes): "
                         f"{len(issues)} likely label issue{'s' * (len(issues) != 1)}, {len(dups)} near-duplicate or "
                         f"leak pair{'s' * (len(dups) != 1)}, {len(odd)} outlier{'s' * (len(odd) != 1)}. Acting on "
                         "them is one step: `features --exclude` or `classify --exclude` with its exclude.txt (runs "
                         "made so are named -excluded and sit beside these in the table).")]
    if issues:
        blocks += [Block("details", "Most likely mislabelled (highest score first)"),
                   Block("table", Table(["Image", "Split", "Labelled", "Looks like", "Score"],
                                        [[md_code(r["path"]), r["split"], md_text(r["label"]),
                                          md_text(r["suggested"]), r["score"]] for r in issues[:SHOWN]], "lllll"))]
    if dups:
        blocks += [Block("details", "Near-duplicates and leaks across splits"),
                   Block("table", Table(["Image", "Split", "Same photo as", "Its split", "Similarity"],
                                        [[md_code(r["path"]), r["split"], md_code(r["other"]), r["other_split"],
                                          r["similarity"]] for r in dups[:SHOWN]], "lllll"))]
    if odd:
        blocks += [Block("details", "Outliers: far from every class"),
                   Block("table", Table(["Image", "Split", "Label", "Score"],
                                        [[md_code(r["path"]), r["split"], md_text(r["label"]), r["score"]]
                                         for r in odd[:SHOWN]], "llll"))]
    grid = _suspects_grid(issues[:SHOWN] + odd[:SHOWN], data_root, figdir)
    return blocks + ([Block("figure", grid)] if grid else []) + exclusion_effect(*results)


def exclusion_effect(rows: list[dict], runs: list[Run]) -> list[Block]:
    """What removing the audit's exclusions changed: each method run both on every image and with
    `--exclude` (its run named ...-excluded), paired by exact McNemar on the val images both scored,
    and the recommendation made on each set of runs. [] when no method was run both ways."""
    ours = {r["run"]: r for r in rows if r["kind"] == "ours"}
    pairs = twins(rows, runs)
    if not pairs:
        return []
    by_slug, cells = {r.slug: r for r in runs}, []
    for a, b, t, p_holm in pairs:
        gone = len((by_slug[b["run"]].m.get("inputs") or {}).get("exclude") or [])
        change = DASH if a["accuracy"] is None or b["accuracy"] is None else \
            f"{100 * (b['accuracy'] - a['accuracy']):+.1f} points"
        test = f"{t['only_a']} / {t['only_b']} of {t['n']}, p = {t['p_value']:.2g} → {p_holm:.2g}" if t else \
            "no image in common"
        setting = f"{a['settings'] or DASH} → {b['settings'] or DASH}" if a["settings"] != b["settings"] else \
            (a["settings"] or DASH)
        cells.append([md_text(a["name"]), str(gone), md_text(setting), fmt_acc(a), fmt_acc(b), change, test])
    as_is = recommend([r for r in rows if not r["run"].endswith(TWIN)], runs).use
    cleaned = recommend([r for r in rows if r["kind"] != "ours" or r["run"] + TWIN not in ours], runs).use
    same = as_is["run"] + TWIN == cleaned["run"]
    words = (f"The recommendation stays **{md_text(as_is['name'])}** ({fmt_pct(as_is['accuracy'])} as is, "
             f"{fmt_pct(cleaned['accuracy'])} without the excluded images)." if same else
             f"The recommendation changes: **{md_text(as_is['name'])}** ({fmt_pct(as_is['accuracy'])}) on every "
             f"image, **{md_text(cleaned['name'])}** ({fmt_pct(cleaned['accuracy'])}) without the excluded images.")
    return [Block("details", "What acting on the audit changes"),
            Block("p", "Each method below was run twice: on every image, and with the audit's exclude.txt "
                       "(`--exclude`: of each pair the copy in the earlier split leaves, so a leaked val image "
                       "stays in val and its copy leaves train). Paired on the val images both scored (exact "
                       f"McNemar, then Holm-corrected over the {len(pairs)} pairs; a change is more than noise at "
                       f"corrected p < {ALPHA}, and only then is the run on fewer images recommended). A change "
                       "comes from the images left out or from the setting CV chose without them (an arrow in "
                       "Setting), or both. "
                       f"{words} Methods run only one way count as they are in both recommendations."),
            Block("table", Table(["Method", "Images left out", "Setting", "Every image", "Without them", "Change",
                                  "Only one right (every / without), p → Holm"], cells, "lrlllll"))]


def _file_name(path: str, most: int = 26) -> str:
    """A suspect's file name as its thumbnail's caption: the name, its middle cut when long (a
    thumbnail is a fifth of the page wide)."""
    name = Path(str(path)).name
    return name if len(name) <= most else name[: most // 2 - 1] + "…" + name[-(most // 2):]


def _suspects_grid(suspects: list[dict], data_root: Path | None, figdir: Path) -> FigureFile | None:
    """Thumbnails of the top suspects: label issues framed red (label, then what the codes suggest)."""
    if not suspects or data_root is None:
        return None
    from . import figures

    items = [({"path": r["path"], "pred": r["suggested"], "true": r["label"]}, _file_name(r["path"]) + "\n" + (
              f"{r['label']} → {r['suggested']}" if r["label"] != r["suggested"] else f"{r['label']} (outlier)"))
             for r in suspects]
    path = figures.image_grid(items, data_root, "The audit's top suspects", figdir / "audit-suspects.png")
    return FigureFile(path.name, "The audit's top suspects, each under its file name: red, labelled one class and "
                                 "closer to another (label → what the codes suggest); the rest are outliers, far from "
                                 "every class.") \
        if path else None
