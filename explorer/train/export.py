"""Export a results database to CSV and summarise what a sweep shows.

    python -m explorer.train.export reports/data/microsweep.db reports/data/ [--json]

writes ``microsweep_runs.csv`` (one row per finished run: N, D, format, E, M, block, targets,
seed, validation loss, wall time, CPU time, tokens/s) and ``microsweep_ptq.csv``
(post-training quantization rows, with ``delta = val_loss_after - val_loss_before``), and
prints a summary (:func:`summarize`): the loss gap of every quantized run to the unquantized run
of the same (N, D, seed), by format, by total bits, by D; paired exponent/mantissa and block
comparisons; the spread between seeds; PTQ degradation by checkpoint tokens and bits.
Reads the database with sqlite3 only (no torch).  Losses are nats per byte-token.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import results
from . import store

RUN_COLUMNS = ("key", "n_params", "tokens", "fmt", "exp_bits", "man_bits", "block", "targets",
               "seed", "val_loss", "wall_s", "cpu_s", "tokens_per_s")
PTQ_COLUMNS = ("run_key", "n_params", "ckpt_tokens", "fmt", "bits", "method", "val_loss_before",
               "val_loss_after", "delta")


def _flat(r: dict) -> dict:
    """A runs row with ``seed`` and ``cpu_s`` lifted out of its JSON columns."""
    cfg = (r.get("config") or {}).get("train", {})
    return dict(r, seed=cfg.get("seed"), cpu_s=(r.get("env") or {}).get("cpu_s"))


def export_csv(db: str | Path, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>_runs.csv`` and ``<stem>_ptq.csv`` into ``out_dir`` (stem: the database's
    file stem); returns their paths.  Only finished runs are written."""
    db = Path(db)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or db.stem
    runs = sorted((_flat(r) for r in store.load_runs(db)),
                  key=lambda r: (r["n_params"], r["tokens"], r["fmt"], str(r["block"]),
                                 r["seed"] or 0))
    ptq = [dict(r, delta=r["val_loss_after"] - r["val_loss_before"]) for r in store.load_ptq(db)]
    ptq.sort(key=lambda r: (r["n_params"], r["run_key"], r["ckpt_tokens"], r["fmt"], r["method"]))
    rp, pp = out / f"{stem}_runs.csv", out / f"{stem}_ptq.csv"
    for path, rows, cols in ((rp, runs, RUN_COLUMNS), (pp, ptq, PTQ_COLUMNS)):
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in rows:
                w.writerow([r.get(c) for c in cols])
    return rp, pp


def _stats(v) -> dict:
    """mean, sd (ddof 1), standard error and n of a list (NaN where undefined)."""
    a = np.asarray(v, dtype=float)
    n = len(a)
    sd = float(a.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": float(a.mean()) if n else float("nan"), "sd": sd,
            "sem": sd / np.sqrt(n) if n > 1 else float("nan"), "n": n}


def _order(k) -> tuple:
    """Sort key: numbers numerically, everything else as text."""
    parts = k if isinstance(k, tuple) else (k,)
    return tuple((0, p, "") if isinstance(p, (int, float)) else (1, 0, str(p)) for p in parts)


def analyse(db: str | Path) -> dict:
    """The numbers behind :func:`summarize`, as a JSON-able dict.

    gap: quantized val_loss minus the unquantized run of the same (N, D, seed).
    by_format / by_bits / by_tokens: stats of gaps grouped that way.
    em_pairs: at equal total bits, paired differences (more exponent bits minus fewer) at the
        same (N, D, block, seed).  block_pairs: channel minus 32 at the same (N, D, format, seed).
    seeds: per (N, D, format, block) with several seeds, the sd of val_loss across seeds.
    d_monotone: per (N, format, block) with >= 3 token counts, whether loss falls with D
        (a loss that rises with D would be the sign of a critical data size).
    ptq_*: stats of PTQ deltas by (bits, method), by checkpoint tokens, by both.
    Runs trained with a recipe count in ``runs`` and the times only: they have no single format,
    and are no baseline (:func:`explorer.results.is_recipe_run`).
    """
    every = [_flat(r) for r in store.load_runs(db)]
    runs = [r for r in every if not results.is_recipe_run(r)]
    base = {(r["n_params"], r["tokens"], r["seed"]): r["val_loss"] for r in runs
            if results.is_baseline_run(r)}
    quant = [r for r in runs if r["exp_bits"] is not None]
    gaps = [(r, r["val_loss"] - base[(r["n_params"], r["tokens"], r["seed"])]) for r in quant
            if (r["n_params"], r["tokens"], r["seed"]) in base]

    def group(keyf) -> dict:
        g: dict = defaultdict(list)
        for r, v in gaps:
            g[keyf(r)].append(v)
        return {str(k): _stats(v) for k, v in sorted(g.items(), key=lambda kv: _order(kv[0]))}

    rows = {(r["n_params"], r["tokens"], r["fmt"], r["block"], r["seed"]): r for r in runs}
    em: dict = defaultdict(list)
    blk: dict = defaultdict(list)
    for (n, d, fmt, b, s), r in rows.items():
        if r["exp_bits"] is None:
            continue
        other = f"e{r['exp_bits'] - 1}m{r['man_bits'] + 1}"    # same bits, one exponent bit fewer
        if (n, d, other, b, s) in rows:
            em[f"{fmt}-{other}"].append(r["val_loss"] - rows[(n, d, other, b, s)]["val_loss"])
        if b == "channel" and (n, d, fmt, "32", s) in rows:
            blk[fmt].append(r["val_loss"] - rows[(n, d, fmt, "32", s)]["val_loss"])

    by_cfg: dict = defaultdict(list)
    for r in runs:
        by_cfg[(r["n_params"], r["tokens"], r["fmt"], r["block"])].append(r["val_loss"])
    seeds = {f"N={n} D={d} {fmt}@{b}": _stats(v) for (n, d, fmt, b), v in sorted(
        by_cfg.items(), key=lambda kv: _order(kv[0])) if len(v) > 1}

    curves: dict = defaultdict(dict)
    for r in runs:
        if r["seed"] in (0, None):
            curves[(r["n_params"], r["fmt"], r["block"])][r["tokens"]] = r["val_loss"]
    monotone = {}
    for (n, fmt, b), c in sorted(curves.items(), key=lambda kv: _order(kv[0])):
        if len(c) >= 3:
            ls = [c[d] for d in sorted(c)]
            monotone[f"N={n} {fmt}@{b}"] = bool(all(y < x for x, y in zip(ls, ls[1:])))

    ptq_rows = store.load_ptq(db)
    pb: dict = defaultdict(list)
    pt: dict = defaultdict(list)
    pbt: dict = defaultdict(list)
    for r in ptq_rows:
        dlt = r["val_loss_after"] - r["val_loss_before"]
        pb[f"P={r['bits']} {r['method']}"].append(dlt)
        pt[r["ckpt_tokens"]].append(dlt)
        pbt[(r["bits"], r["ckpt_tokens"])].append(dlt)
    return {
        "runs": len(every), "ptq_rows": len(ptq_rows),
        "cpu_minutes": sum(r["cpu_s"] or 0 for r in every) / 60,
        "runs_with_cpu": sum(r["cpu_s"] is not None for r in every),
        "wall_minutes": sum(r["wall_s"] or 0 for r in every) / 60,
        "by_format": group(lambda r: f"{r['fmt']}@{r['block']}"),
        "by_bits": group(lambda r: r["exp_bits"] + r["man_bits"] + 1),
        "by_tokens": group(lambda r: r["tokens"]),
        "by_bits_and_tokens": group(lambda r: (r["exp_bits"] + r["man_bits"] + 1, r["tokens"])),
        "em_pairs": {k: _stats(v) for k, v in sorted(em.items())},
        "block_pairs": {k: _stats(v) for k, v in sorted(blk.items())},
        "seeds": seeds,
        "d_monotone": monotone,
        "ptq_by_bits": {k: _stats(v) for k, v in sorted(pb.items())},
        "ptq_by_tokens": {str(k): _stats(v) for k, v in sorted(pt.items())},
        "ptq_by_bits_and_tokens": {f"P={b} D={t}": _stats(v) for (b, t), v in sorted(pbt.items())},
    }


def summarize(db: str | Path) -> str:
    """A plain-text summary of a sweep (see :func:`analyse` for the definitions)."""
    a = analyse(db)
    f = lambda s: f"{s['mean']:+.4f} ± {s['sem']:.4f} (sd {s['sd']:.4f}, n={s['n']})"  # noqa: E731
    lines = [f"{a['runs']} finished runs, {a['ptq_rows']} PTQ rows; training time "
             f"{a['wall_minutes']:.1f} wall-minutes, {a['cpu_minutes']:.1f} CPU-minutes "
             f"({a['runs_with_cpu']} runs record CPU time)"]
    for title, k in (("loss gap to the unquantized run of the same (N, D, seed), by format:",
                      "by_format"),
                     ("by total bits P:", "by_bits"), ("by training tokens D:", "by_tokens"),
                     ("by (P, D):", "by_bits_and_tokens"),
                     ("E/M trade-off at equal bits (paired: first minus second):", "em_pairs"),
                     ("block: channel minus 32 (paired):", "block_pairs")):
        lines.append(title)
        lines += [f"  {name:24s} {f(s)}" for name, s in a[k].items()]
    lines.append("seed-to-seed spread of val_loss (sd over seeds):")
    lines += [f"  {name:34s} mean {s['mean']:.4f} sd {s['sd']:.4f} (n={s['n']})"
              for name, s in a["seeds"].items()]
    mono = a["d_monotone"]
    lines.append(f"loss falls monotonically with D in {sum(mono.values())} of {len(mono)} "
                 f"(N, format, block) series; not in: {[k for k, v in mono.items() if not v]}")
    lines.append("PTQ loss increase (val_loss_after - val_loss_before), by bits and method:")
    lines += [f"  {name:24s} {f(s)}" for name, s in a["ptq_by_bits"].items()]
    lines.append("PTQ loss increase by checkpoint tokens (all formats):")
    lines += [f"  {name:>24s} {f(s)}" for name, s in a["ptq_by_tokens"].items()]
    lines.append("PTQ loss increase by bits and checkpoint tokens:")
    lines += [f"  {name:24s} {f(s)}" for name, s in a["ptq_by_bits_and_tokens"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m explorer.train.export DB OUT_DIR [--json]``."""
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if len(args) != 2:
        print("usage: python -m explorer.train.export RUNS.db OUT_DIR [--json]", file=sys.stderr)
        return 2
    if not Path(args[0]).is_file():
        print(f"error: results database not found: {args[0]}", file=sys.stderr)
        return 2
    rp, pp = export_csv(args[0], args[1])
    if as_json:
        print(json.dumps(dict(analyse(args[0]), runs_csv=str(rp), ptq_csv=str(pp))))
    else:
        print(f"wrote {rp} and {pp}")
        print(summarize(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
