"""How long `fpx fit` takes: the Capybara fit of a results database, without and with bootstrap.

    python benchmarks/bench_fit.py [DB] [--bootstrap 200] [--repeat 3]
    python benchmarks/compare_trees.py --base /tmp/base --bench benchmarks/bench_fit.py

Times :func:`explorer.fit.fit_capybara_detailed` (multi-start fit plus leave-one-model-size-out
refits; then the same with ``--bootstrap`` resamples) on DB (default the committed micro-sweep,
reports/data/microsweep.db), best of ``--repeat`` wall and CPU times, and prints what the fit
found (constants, cost, held-out errors, interval ends), so that two trees' results can be
compared line by line.  Run it beside a base tree with compare_trees.py: this machine is shared,
and only the ratio of two runs in the same round means anything.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from explorer.fit import PARAM_NAMES, fit_capybara_detailed, load_runs_arrays

DEFAULT_DB = Path(__file__).resolve().parents[1] / "reports" / "data" / "microsweep.db"


def timed(repeat: int, **kwargs):
    """(best wall seconds, best CPU seconds of ``repeat`` calls, the last fit).  CPU time is the
    steadier figure on a loaded machine; wall time is what a user waits."""
    wall, cpu, fit = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_capybara_detailed(**kwargs)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", nargs="?", default=str(DEFAULT_DB))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = load_runs_arrays(args.db)
    print(f"{len(data['loss'])} runs from {args.db}")
    t0, c0, fit0 = timed(args.repeat, **data, bootstrap=0)
    law = fit0.law.to_dict()
    print(f"fit, no bootstrap: {t0:.3f} s wall, {c0:.3f} s CPU   cost {fit0.cost:.9g}")
    print("  constants  " + "  ".join(f"{k}={law[k]:.5g}" for k in PARAM_NAMES))
    print("  held out   " + "  ".join(f"N={h.N:.3g}: {100 * h.mean_abs_rel:.4f}%"
                                      for h in fit0.heldout))
    if args.bootstrap:
        tb, cb, fitb = timed(1, **data, bootstrap=args.bootstrap)
        print(f"fit, {args.bootstrap} resamples: {tb:.3f} s wall, {cb:.3f} s CPU")
        print("  95% ends   " + "  ".join(f"{k}=[{lo:.4g}, {hi:.4g}]"
                                          for k, (lo, hi) in fitb.ci.items()))


if __name__ == "__main__":
    main()
