"""Section streaming: peak RSS of the out-of-core sgd head at N and 10N synthetic 512-d codes
(100,000 and 1,000,000; quick: 20,000 and 200,000) must not grow (within 10%)."""
from __future__ import annotations

from pipeline.codes.synthetic import Synthetic, write_synthetic_codes

from .common import Setup, Shared, log, row
from .memory import GROWTH, peak_rss


def bench_streaming(s: Setup, shared: Shared | None = None) -> list[dict]:
    """`classify --head sgd` in a fresh process on each size; codes written a block at a time."""
    sizes = s.stream_counts
    got = {}
    for n in sizes:
        f = s.tmp / f"stream-{n}.h5"
        log(f"streaming: writing {n:,} synthetic 512-d codes to {f.name}")
        write_synthetic_codes(f, Synthetic(n, min(10_000, n // 10), 512, tuple(f"c{i}" for i in range(10)), 0.12,
                                           s.seed, overlap=True, list_files=False, dataset=f.stem))
        log(f"streaming: classify --head sgd on {n:,} codes in a fresh process")
        got[n], secs = peak_rss(["classify", "--features", str(f), "--head", "sgd", "--label-curve", "off",
                                 "--out", str(s.tmp / "stream-runs")], s.tmp / f"stream-{n}.log")
        got[n]["seconds"] = secs
        f.unlink()
    a, b = got[sizes[0]], got[sizes[1]]
    return [row(f"sgd head peak RSS: {sizes[1]:,} vs {sizes[0]:,} codes (512-d)", b["peak"], a["peak"], "MB", "lower",
                GROWTH, note=f"classify --head sgd, codes read 65,536 rows at a time; {a['seconds']:.0f}s and "
                             f"{b['seconds']:.0f}s; met when within 10%")]
