"""Export a results database to CSV and summarise what a sweep shows.

    python -m explorer.train.export reports/data/microsweep.db reports/data/

writes ``microsweep_runs.csv`` (one row per finished run: N, D, format, E, M, block, targets,
validation loss, wall time, tokens/s) and ``microsweep_ptq.csv`` (post-training quantization
rows), and prints a summary: per (N, D) the unquantized loss and each format's loss gap to it,
the gap against total bits, and the PTQ degradation against training tokens (the QiD trend).
Reads the database with sqlite3 only (no torch).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import store

RUN_COLUMNS = ("key", "n_params", "tokens", "fmt", "exp_bits", "man_bits", "block", "targets",
               "val_loss", "wall_s", "tokens_per_s")
PTQ_COLUMNS = ("run_key", "n_params", "ckpt_tokens", "fmt", "bits", "method", "val_loss_before",
               "val_loss_after")


def export_csv(db: str | Path, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>_runs.csv`` and ``<stem>_ptq.csv`` into ``out_dir``; returns their paths."""
    db = Path(db)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or db.stem
    runs, ptq = store.load_runs(db), store.load_ptq(db)
    rp, pp = out / f"{stem}_runs.csv", out / f"{stem}_ptq.csv"
    for path, rows, cols in ((rp, runs, RUN_COLUMNS), (pp, ptq, PTQ_COLUMNS)):
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in rows:
                w.writerow([r.get(c) for c in cols])
    return rp, pp


def summarize(db: str | Path) -> str:
    """A plain-text summary of a sweep (see the module docstring)."""
    runs, ptq = store.load_runs(db), store.load_ptq(db)
    base = {(r["n_params"], r["tokens"]): r["val_loss"] for r in runs if r["exp_bits"] is None}
    gaps: dict[tuple, list[float]] = defaultdict(list)
    by_bits: dict[int, list[float]] = defaultdict(list)
    lines = [f"{len(runs)} finished runs, {len(ptq)} PTQ rows"]
    for r in runs:
        key = (r["n_params"], r["tokens"])
        if r["exp_bits"] is None or key not in base:
            continue
        g = r["val_loss"] - base[key]
        gaps[(r["fmt"], r["block"])].append(g)
        by_bits[r["exp_bits"] + r["man_bits"] + 1].append(g)
    lines.append("loss gap to the unquantized run of the same (N, D), mean ± sd over (N, D):")
    for (fmt, block), g in sorted(gaps.items()):
        a = np.array(g)
        lines.append(f"  {fmt:6s} block {block:8s} n={len(a):2d}  {a.mean():+.4f} ± {a.std():.4f}")
    lines.append("by total bits P:")
    for p, g in sorted(by_bits.items()):
        a = np.array(g)
        lines.append(f"  P={p}: {a.mean():+.4f} ± {a.std():.4f} (n={len(a)})")
    if ptq:
        lines.append("PTQ (RTN) loss increase by checkpoint tokens, mean over formats and runs:")
        d: dict[int, list[float]] = defaultdict(list)
        for r in ptq:
            d[r["ckpt_tokens"]].append(r["val_loss_after"] - r["val_loss_before"])
        for t, v in sorted(d.items()):
            lines.append(f"  {t:>9d} tokens: {np.mean(v):+.4f} (n={len(v)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m explorer.train.export RUNS.db OUT_DIR", file=sys.stderr)
        return 2
    rp, pp = export_csv(argv[0], argv[1])
    print(f"wrote {rp} and {pp}")
    print(summarize(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
