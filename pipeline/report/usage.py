"""What each method costs to USE on a new image, from what its run recorded: milliseconds per image at
predict time on the machine that made the run, the parameters it trained and the code dimension.
Pure functions of the loaded runs; a head's model.npz is read for its array shapes only (no pickle),
and a fine-tune's final.pt is never opened (that needs torch). What was not recorded stays None.

Runs made with the cost harness (core.timing; a run's `cost`) are measured, not sampled: a head costs
its trunk's pass (timed by `features`, the same Encoder predict runs) times its test-time views plus
its head (timed by classify on a batch of codes); a fine-tune its whole network (timed through
predict's scorer). Identical models get one figure: the median of every measurement of the same
network (`model_key`: the same backbone and part, crop, device, precision and batch; a head's own
part by head, code size and classes), so two runs of one model never differ by timing noise.

Older runs (no `cost`) are estimated from the passes they made:
- A head on codes: each new image needs its code (the backbone pass: the extraction seconds per
  image of the codes file, times T with test-time views) and then the head (its predict seconds per
  val image). The extraction per image comes from a run on the same codes without views (its
  extract seconds cover every image of the file once) or from the codes file itself.
- A fine-tune: its last val pass per val image (the forward pass; the fast loop decodes beforehand).
  A frozen trunk's fast and cached-views loops score val from codes made once, so that pass is the
  new layer alone: the backbone pass per image is added (from a head's run on codes of the same
  backbone and weights, or the cached views' codes file); not known, the cost is not recorded.
"""
from __future__ import annotations

import zipfile

import numpy as np

from ..runs.read import Run, existing


def _images(m: dict) -> int | None:
    n = (m.get("n_train") or 0) + (m.get("n_val") or 0)
    return n or None


def _plain(m: dict) -> bool:
    return not m.get("views") and (m.get("tta") or 1) == 1


def extract_per_image(run: Run, runs: list[Run]) -> float | None:
    """Seconds of backbone pass per image for the codes this head used (one view), or None."""
    m = run.m
    same = [r.m for r in runs if r.m.get("stage") == "classify" and r.m.get("features_file") == m.get("features_file")]
    for o in [m, *same]:
        ext = (o.get("seconds") or {}).get("extract")
        if _plain(o) and isinstance(ext, (int, float)) and ext > 0 and _images(o):
            return ext / _images(o)
    return _header_extract(run)


def _trunk_per_image(run: Run, runs: list[Run]) -> float | None:
    """Seconds of backbone pass per image for a frozen fine-tune: as a head's on the same backbone."""
    m, model = run.m, (run.m.get("backbone"), run.m.get("weights"))
    for o in runs:
        if o.m.get("stage") == "classify" and (o.m.get("backbone"), o.m.get("weights")) == model:
            found = extract_per_image(o, runs)
            if found is not None:
                return found
    return _header_extract(run, (m.get("config") or {}).get("features") or None)


def _header_extract(run: Run, file: str | None = None) -> float | None:
    """From the codes file's own header, when it is still there."""
    f = existing(file or run.m.get("features_file"), run)
    if f is None:
        return None
    try:
        from ..codes.store import Header, read_attrs

        h = Header.from_attrs(read_attrs(f))
    except Exception:  # a moved, damaged or foreign file: the cost is then not known  # noqa: BLE001
        return None
    return h.extract_seconds / _images(run.m) if h.extract_seconds and _images(run.m) else None


def model_key(cost: dict | None, *more) -> tuple | None:
    """What makes two measurements ones of the same computation (module docstring); None: none."""
    if not isinstance(cost, dict) or not isinstance(cost.get("ms_per_image"), (int, float)):
        return None
    return (cost.get("part"), cost.get("crop"), cost.get("device"), cost.get("precision"), cost.get("batch"), *more)


def _parts(run: Run) -> list[tuple[tuple, float]]:
    """(key, ms per image) of each measured part of a run: a head's trunk and head, or a network."""
    m, c = run.m, run.m.get("cost") or {}
    if m.get("stage") == "classify":
        trunk, head = c.get("trunk"), c.get("head")
        knn_rows = m.get("n_train") if m.get("head") == "knn" else None  # a k-NN's cost grows with what it keeps
        found = [(model_key(trunk, m.get("backbone")), trunk),
                 (model_key(head, m.get("head"), len(m.get("classes") or []), knn_rows), head)]
    else:
        found = [(model_key(c, m.get("backbone"), len(m.get("classes") or [])), c)]
    return [(k, float(v["ms_per_image"])) for k, v in found if k is not None]


def pooled(runs: list[Run]) -> dict[tuple, float]:
    """key -> the median ms per image over every distinct measurement of that computation."""
    seen: dict[tuple, set[float]] = {}
    for r in runs:
        for k, ms in _parts(r):
            seen.setdefault(k, set()).add(ms)  # a trunk timed once is carried by every head on its codes
    return {k: float(np.median(sorted(v))) for k, v in seen.items()}


def measured_ms(run: Run, pool: dict[tuple, float]) -> float | None:
    """The harness's cost of a run (module docstring), or None when it was not measured."""
    parts = {k[0]: pool[k] for k, _ in _parts(run)}
    if run.m.get("stage") == "classify":
        if "backbone" not in parts or "head" not in parts:
            return None
        return parts["backbone"] * (run.m.get("tta") or 1) + parts["head"]
    return parts.get("model")


def ms_per_image(run: Run, runs: list[Run], pool: dict[tuple, float] | None = None) -> float | None:
    """Milliseconds to classify one new image, at predict time, on the machine that made the run:
    measured by the harness when the run was (pooled over identical models), else estimated (a run
    made before the harness, or a head on a features file made before it)."""
    measured = measured_ms(run, pooled(runs) if pool is None else pool)
    if measured is not None:
        return measured
    m = run.m
    predict, n = (m.get("seconds") or {}).get("predict"), m.get("n_val")
    if not isinstance(predict, (int, float)) or not n:
        return None
    if m.get("stage") != "classify":
        if m.get("mode") == "frozen" and m.get("loop") in ("fast", "codes"):  # val scored from codes made once
            trunk = _trunk_per_image(run, runs)
            return None if trunk is None else 1000 * (trunk + predict / n)
        return 1000 * predict / n
    ext = extract_per_image(run, runs)
    return None if ext is None else 1000 * (ext * (m.get("tta") or 1) + predict / n)


def _head_arrays(run: Run) -> dict[str, tuple] | None:
    f = run.dir / "model.npz"
    if not f.is_file():
        return None
    try:
        with np.load(f, allow_pickle=False) as a:
            return {k: a[k].shape for k in a.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def head_numbers(run: Run, runs: list[Run]) -> tuple[int | None, int | None, str]:
    """(trained parameters, code dimension, a note) of one run; None where not recorded."""
    m = run.m
    if m.get("stage") == "classify":
        shapes = _head_arrays(run) or {}
        dims = [s[-1] for k, s in shapes.items() if k.endswith(("coef_", "_fit_X", "mean_")) and s]
        dim = dims[0] if dims else None
        fit_x = next((s for k, s in shapes.items() if k.endswith("_fit_X")), None)
        if fit_x:  # k-NN trains nothing: it keeps the training codes
            return 0, dim, f"keeps {fit_x[0]} codes"
        n = sum(int(np.prod(s)) for k, s in shapes.items() if k.endswith(("coef_", "intercept_")))
        return (n or None), dim, ""
    dim = next((d for r in runs if r.m.get("stage") == "classify" and r.m.get("backbone") == m.get("backbone")
                and r.m.get("weights") == m.get("weights") for d in [head_numbers(r, [])[1]] if d), None)
    if isinstance(m.get("parameters"), int):
        return m["parameters"], dim, ""
    if m.get("mode") == "frozen" and dim:  # a new linear layer on the frozen trunk's codes
        k = len(m.get("classes") or [])
        return dim * k + k, dim, ""
    return None, dim, "whole network; not recorded" if m.get("mode") == "full" else ""


def usage(runs: list[Run]) -> dict[str, dict]:
    """By run slug: ms_per_image, tta, trained_params, code_dim, params_note."""
    out, pool = {}, pooled(runs)
    for r in runs:
        params, dim, note = head_numbers(r, runs)
        out[r.slug] = {"ms_per_image": ms_per_image(r, runs, pool), "ms_measured": measured_ms(r, pool) is not None,
                       "tta": r.m.get("tta") or 1, "views": r.m.get("views"),
                       "trained_params": params, "code_dim": dim, "params_note": note}
    return out


def fmt_count(n: int | None) -> str:
    """12,345 -> '12.3k'; 2,230,000 -> '2.23M'."""
    if n is None:
        return "not recorded"
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e4 else f"{n:,}"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "not recorded"
    return f"{ms:.2g}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"

