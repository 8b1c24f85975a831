"""The backbones a sweep compared: `cnncodes sweep` leaves sweep.json in its runs folder, and the
report shows, from it and the table rows, what each backbone costs (parameters, ms per image on
the device that coded it) beside its best head, a figure of val accuracy against ms per image with
the Pareto front, what screening dropped (at what sample score, and the time saved) and which
images were left out so that every backbone is compared on the same ones; and, where the sweep audited
each backbone's codes, which findings each flags (backbone_audits). No torch.
"""
from __future__ import annotations

from pathlib import Path

from ..core.files import read_json
from .backbone_audits import audit_blocks
from .compute_plot import pareto_front
from .blocks import Block, FigureFile, Table, md_text
from .rows import fmt_pct

SWEEP_FILE = "sweep.json"
FIGURE = "backbones-accuracy-vs-ms.png"


def read_sweep(source: Path | str | None) -> dict | None:
    """The sweep record of a runs folder, or None (not a sweep's folder, or not readable as one)."""
    path = Path(source or "") / SWEEP_FILE
    if not path.is_file():
        return None
    doc = read_json(path, "sweep record")
    return doc if isinstance(doc, dict) and str(doc.get("schema", "")).startswith("cnncodes-sweep/") else None


def _runs_of(b: dict, rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "ours" and r["backbone"] == b["backbone"]
            and r["weights"] == b.get("weights_id")]


def _table(sweep: dict, rows: list[dict], rec: dict) -> Table:
    cells = []
    for b in sweep["backbones"]:
        mine = _runs_of(b, rows)
        top = max(mine, key=lambda r: r["accuracy"] or 0.0) if mine else None
        on_front = "dropped by screening" if b.get("dropped_by_screen") else ""
        cells.append([md_text(b["label"]), f"{b['parameters'] / 1e6:.1f} M" if b.get("parameters") else "–",
                      f"{b['ms_per_image']:.1f}" if b.get("ms_per_image") else "–", str(b.get("dim") or "–"),
                      md_text(top["name"]) if top else on_front or "–", fmt_pct(top["accuracy"]) if top else "–",
                      "★" if top and any(r["run"] == rec["run"] for r in mine) else ""])
    return Table(["Backbone (weights)", "Parameters", "ms / image", "Code", "Best head on val", "Val accuracy",
                  "Recommended"], cells, "lrrrlrl")


def _figure(sweep: dict, rows: list[dict], figdir: Path) -> FigureFile | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    from .figures import DPI, WIDE

    points = [{"seconds": b["ms_per_image"], "accuracy": r["accuracy"], "label": b["label"], "head": r["name"]}
              for b in sweep["backbones"] if b.get("ms_per_image") for r in _runs_of(b, rows)
              if r["accuracy"] is not None]
    if not points:
        return None
    fig = Figure(figsize=(WIDE, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for b in sweep["backbones"]:
        mine = [p for p in points if p["label"] == b["label"]]
        if mine:
            size = 20 + 200 * ((b.get("parameters") or 0) / 25e6) ** 0.5  # area ~ parameters
            ax.scatter([p["seconds"] for p in mine], [100 * p["accuracy"] for p in mine], s=size, alpha=0.6,
                       label=f"{b['label']}, {(b.get('parameters') or 0) / 1e6:.1f} M parameters")
    front, right = pareto_front(points), max(p["seconds"] for p in points) * 1.3
    ys = [100 * p["accuracy"] for p in front]
    ax.step([*(p["seconds"] for p in front), right], [*ys, ys[-1]], where="post", color="0.3", linestyle="--",
            linewidth=1, label="Pareto front: nothing both faster and more accurate")
    ax.set_xscale("log")
    ax.set_xlim(min(p["seconds"] for p in points) / 1.3, right)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("backbone ms per image when its codes were made (log scale)")
    ax.set_ylabel("val accuracy (%), every head")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    figdir.mkdir(parents=True, exist_ok=True)
    fig.savefig(figdir / FIGURE, dpi=DPI)
    return FigureFile(FIGURE, "Val accuracy of each (backbone, head) against the backbone's ms per image (the cost "
                              "of every future image); marker area follows the parameter count. The dashed step is "
                              "the Pareto front.")


def _screen_words(sweep: dict) -> str:
    sc = sweep.get("screen")
    if not sc:
        return ""
    d = sc["decisions"]
    best = next(k for k, v in d.items() if v["best"])
    dropped = [(k, v) for k, v in d.items() if v["dropped"]]
    said = (f"Screening coded a stratified sample of {sc['n']} train and {sc['n']} val images with every backbone "
            f"({sc['seconds']:.0f} s) and fitted a logistic-regression probe; **{md_text(best)}** scored best on the "
            f"sample ({fmt_pct(d[best]['accuracy'])} of {d[best]['n']}). ")
    if not dropped:
        return said + "No backbone was separable from it on the sample (exact McNemar, Holm), so none was dropped."
    gone = "; ".join(f"**{md_text(k)}** at {fmt_pct(v['accuracy'])} (b = {v['b']}, c = {v['c']}, Holm p = "
                     f"{v['p_holm']:.2g})" for k, v in dropped)
    saved = sc.get("saved_seconds")
    net = "" if saved is None else (
        f" Not coding them saved about {saved:.0f} s of extraction net of the screening's own cost." if saved >= 0
        else f" On this few images the screening cost about {-saved:.0f} s more than not coding them saved: the "
             "sample is a large share of the data.")
    return said + f"Dropped as worse on the sample, and never coded in full: {gone}." + net


def backbone_blocks(source: Path | str | None, rows: list[dict], rec: dict, figdir: Path) -> list[Block]:
    """The report's backbone section, when the runs folder is a sweep's; [] otherwise."""
    sweep = read_sweep(source)
    if sweep is None:
        return []
    n_left = len(sweep.get("left_out") or [])
    blocks = [Block("h2", "Which backbone"),
              Block("p", f"{len(sweep['backbones'])} backbones, each with the same heads on its cached codes; the "
                         "verdict above pairs every (backbone, head) on the same val images. "
                         + (f"{n_left} image{'s' * (n_left != 1)} that some backbone could not code "
                            f"{'were' if n_left != 1 else 'was'} left out of every backbone's runs."
                            if n_left else "Every backbone coded the same images: none was left out.")),
              Block("table", _table(sweep, rows, rec))]
    fig = _figure(sweep, rows, figdir)
    if fig:
        blocks.append(Block("figure", fig))
    words = _screen_words(sweep)
    return blocks + ([Block("p", words)] if words else []) + audit_blocks(sweep, figdir)
