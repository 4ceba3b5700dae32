"""`fpx fit`: fit the Capybara law (and the QiD law) to training runs."""

from __future__ import annotations

import json

from explorer.fit import (
    MAX_BOOTSTRAP,
    REDUCED_FREE,
    check_bootstrap,
    fit_capybara_supported,
    fit_qid_from_results,
    fit_steps,
    load_runs_arrays,
    save_fit,
)
from explorer.progress import Progress
from fpformat.files import check_output_path


def add_parser(sub):
    p = sub.add_parser("fit", help="fit the scaling law to runs (results DB or CSV)",
                       description="Fit the Capybara law of Sun et al. to finished quantized "
                                   "runs (robust Huber fit on log loss, multi-start, bounded), "
                                   "with bootstrap intervals, leave-one-model-size-out error and "
                                   "residuals. From a results database it also fits the QiD law "
                                   "to its ptq rows when there are enough.")
    p.add_argument("runs", help="results database (runs.db) or CSV with N,D,E,M,B,loss columns")
    p.add_argument("-o", "--out", default=None, help="write the fit as JSON here (for --law)")
    p.add_argument("--bootstrap", type=int, default=200,
                   help=f"bootstrap resamples (default 200; 0 = none; at most {MAX_BOOTSTRAP})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--huber", type=float, default=1e-3,
                   help="Huber scale on log loss (default 1e-3)")
    p.add_argument("--include-baseline", action="store_true",
                   help="also use unquantized runs (as block size 1: no quantization penalty)")
    p.add_argument("--free", default="all", metavar="NAMES",
                   help="constants to fit, comma-separated among n,alpha,d,beta,eps,gamma,delta,nu "
                        "(default all); the others keep the paper's values. For a handful of small "
                        "runs try --free n,d,eps,gamma")
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    return p


def run(args) -> int:
    try:
        check_bootstrap(args.bootstrap)
    except ValueError as exc:
        raise ValueError(f"--{exc}") from None
    if args.out:
        check_output_path(args.out)        # before the fit: a bad -o fails at once
    a = load_runs_arrays(args.runs, include_baseline=args.include_baseline)
    with Progress(fit_steps(a["N"], args.bootstrap), "fitting", unit="fit") as bar:
        def step(done, total):
            bar.total = total          # grows when a reduced fit follows the full one
            bar.update(1)
        fits = fit_capybara_supported(**a, bootstrap=args.bootstrap, seed=args.seed,
                                      huber_delta=args.huber, free=args.free, progress=step)
    doc = fits.to_dict()
    doc["source"] = str(args.runs)
    qid = fit_qid_from_results(args.runs)
    if qid is not None:
        doc["qid"] = qid.to_dict()
    if args.out:
        save_fit(fits, args.out, extra={k: doc[k] for k in ("source", "qid") if k in doc})
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    full = fits.full
    partial = (f" (fitted: {', '.join(full.free)}; others fixed at the paper's values)"
               if len(full.free) != 8 else "")
    print(f"Capybara law fitted to {full.n_points} runs from {args.runs}" + partial)
    _print_fit(full)
    if fits.reduced is not None:
        print(f"These runs do not identify the full law. The reduced fit they support "
              f"({', '.join(REDUCED_FREE)} free; the other constants held at the paper's "
              f"values):")
        _print_fit(fits.reduced)
    changed = [r for r in fits.layouts() if r.fitted != r.reference]
    if changed:
        where = "; ".join(f"{r.bits} bits: e{r.reference[0]}m{r.reference[1]} -> "
                          f"e{r.fitted[0]}m{r.fitted[1]}" for r in changed)
        unidentified = {k for k, why in full.identification().items() if why}
        trust = (" (but δ or ν is not identified: keep the paper's layouts)"
                 if {"delta", "nu"} & unidentified else "")
        print(f"best E/M per width under the full fit differs from the paper's: {where}{trust}")
    else:
        print("best E/M per width (3-16 bits): the same under the full fit as under the paper's "
              "law")
    if "qid" in doc:
        q = doc["qid"]
        print(f"QiD law (ptq rows): dL = {q['k']:.4g} D^{q['beta']:.4f} / "
              f"(N^{q['alpha']:.4f} P^{q['gamma']:.4f})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _print_fit(fit) -> None:
    """The constants with their intervals and identification marks, then the diagnostics."""
    why = fit.identification()
    print(f"{'constant':>9} {'value':>14}   {'95% interval':<26} "
          f"identified? ({fit.bootstrap} bootstrap resamples)")
    for name, v in fit.law.to_dict().items():
        lo_hi = fit.ci.get(name)
        iv = f"[{lo_hi[0]:.6g}, {lo_hi[1]:.6g}]" if lo_hi else "-"
        mark = ("held" if name not in fit.free
                else f"NOT IDENTIFIED by these runs: {why[name]}" if why[name]
                else "yes" if fit.ci else "no interval (--bootstrap 0)")
        print(f"{name:>9} {v:>14.6g}   {iv:<26} {mark}")
    if not fit.converged:
        print("the refinement stopped at its evaluation limit (explorer.fit.MAX_ITER) before "
              "meeting its tolerances: treat these constants as approximate")
    if fit.bootstrap and fit.resamples_converged < fit.bootstrap:
        print(f"{fit.bootstrap - fit.resamples_converged} of {fit.bootstrap} bootstrap "
              f"refits stopped at the evaluation limit")
    print(f"relative residuals: RMS {100 * fit.rms_rel:.3f}%, max {100 * fit.max_rel:.3f}%, "
          f"{fit.outliers} beyond 3 robust sigma")
    for h in fit.heldout:
        print(f"held out N = {h.N:.4g} ({h.count} runs): "
              f"mean |rel. error| {100 * h.mean_abs_rel:.3f}%, max {100 * h.max_abs_rel:.3f}%")
