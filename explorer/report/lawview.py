"""What the report needs from the analyzer, in one place.

Thin functions over the analyzer's public API (``explorer.laws.CapybaraLaw``,
``explorer.fit.fit_capybara_supported``, ``explorer.hwcost``, ``explorer.metrics``) plus the few
derived quantities the report shows that the analyzer does not return directly (all layouts of
one width ranked by predicted loss, a Pareto front, SQNR with the report's scaling cases, the
fit-diagnostics blocks).  Block sizes are passed around as log2 B (channel-wise = 13.1567).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass

import numpy as np

from explorer import hwcost
from explorer.fit import REDUCED_FREE, SPAN_FACTOR, fit_capybara_supported
from explorer.metrics import scaled_quantize as _scaled_quantize
from explorer.metrics import test_data as _test_data
from fpformat import get_format

from . import figures as fig
from .document import Figure, Para, Table
from .formats import sqnr_db
from .runs import fit_arrays


# ----------------------------------------------------------------------------------- the law
def _B(log2_block: float) -> float:
    return float(2.0 ** log2_block)


def loss(law, N: float, D: float, E: int, M: int, log2_block: float) -> float:
    """Predicted validation loss (nats/token) of a run quantized with (E, M, B)."""
    return float(law.loss(N, D, E, M, _B(log2_block)))


def floor_loss(law, N: float, D: float) -> float:
    """Predicted loss without quantization (B = 1 zeroes the quantization term)."""
    return float(law.loss(N, D, 1, 1, 1.0))


def critical_data_size(law, N: float, E: int, M: int, log2_block: float) -> float:
    """Tokens beyond which more data raises the loss of this format."""
    return float(law.critical_data_size(N, E, M, _B(log2_block)))


def optimal_layout(law, P: int) -> tuple[int, int]:
    e, m = law.optimal_layout(int(P))
    return int(e), int(m)


def optimal_precision(law, C: float, log2_block: float) -> float:
    """Compute-optimal precision P (bits, continuous) at budget C."""
    r = law.optimal_precision(float(C), _B(log2_block))
    return float(getattr(r, "P", r))


def ranked_layouts(law, P: int, N: float, D: float,
                   log2_block: float) -> list[tuple[int, int, float]]:
    """Every split of P = E + M + 1 bits with E >= 1 as (E, M, predicted loss), best first."""
    out = [(e, P - 1 - e, loss(law, N, D, e, P - 1 - e, log2_block)) for e in range(1, P)]
    out.sort(key=lambda t: (t[2], -t[0]))
    return out


def constants(law) -> dict[str, float]:
    """The law's named constants, in the paper's order where present."""
    items = asdict(law) if is_dataclass(law) else dict(vars(law))
    return {k: float(v) for k, v in items.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ----------------------------------------------------------------------------------- cost, front
def hw_cost(E: int, M: int) -> float:
    """Relative area of a multiply-accumulate unit for the (E, M) format (analyzer's proxy)."""
    return float(hwcost.mac_cost(E, M))


def hw_cost_doc() -> str:
    return hwcost.SOURCE


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats in both coordinates (lower cost, lower error),
    sorted by cost."""
    names = sorted(points, key=lambda n: points[n])
    front, best = [], np.inf
    for n in names:
        if points[n][1] < best - 1e-15:
            front.append(n)
            best = points[n][1]
    return front


# ----------------------------------------------------------------------------------- SQNR
DISTRIBUTIONS = ("Gaussian", "Laplace", "Student-t(3)")
SCALINGS = ("per-tensor", "block 32")


@dataclass(frozen=True)
class SqnrTable:
    columns: tuple[str, ...]
    values: dict[str, dict[str, float]]      # format -> column -> dB


# The analyzer's generators and quantizer (explorer.metrics), under the report's display names.
_DIST_KEYS = {"Gaussian": "gaussian", "Laplace": "laplace", "Student-t(3)": "student_t3"}


def test_data(dist: str, n: int, seed: int) -> np.ndarray:
    """``n`` float64 samples of a named distribution (seeded, reproducible)."""
    if dist not in _DIST_KEYS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    return _test_data(_DIST_KEYS[dist], n, seed)


def scaled_quantize(fmt, x: np.ndarray, block: int | None) -> np.ndarray:
    """Sun et al.'s amax scaling per tensor (``block=None``) or per ``block`` elements."""
    return _scaled_quantize(fmt, x, block)


def sqnr_table(names: list[str], samples: int, seed: int) -> SqnrTable:
    """SQNR (dB) of each format for every distribution and scaling case."""
    samples -= samples % 32
    data = {d: test_data(d, samples, seed + i) for i, d in enumerate(DISTRIBUTIONS)}
    cols = tuple(f"{d}, {s}" for d in DISTRIBUTIONS for s in SCALINGS)
    values: dict[str, dict[str, float]] = {}
    for name in names:
        f = get_format(name)
        row = {}
        for d in DISTRIBUTIONS:
            for s in SCALINGS:
                q = scaled_quantize(f, data[d], None if s == "per-tensor" else 32)
                row[f"{d}, {s}"] = sqnr_db(data[d], q)
        values[name] = row
    return SqnrTable(cols, values)


# ----------------------------------------------------------------------------------- fit
MIN_FIT_RUNS = 12


def fit_blocks(runs, paper_law, bootstrap: int, seed: int = 0) -> list:
    """Blocks of the fit-diagnostics section: the Capybara law fitted to the quantized runs with
    bootstrap intervals (``bootstrap`` resamples) and identification marks beside the paper's
    constants; where the runs do not identify the full law, a sentence saying so and the
    reduced fit they support with its held-out error; whether the best layouts per width change
    under the fit; predicted against measured loss and the relative residuals."""
    a = fit_arrays(runs)
    n = len(a["loss"])
    if n < MIN_FIT_RUNS:
        return [Para(f"Only {n} finished quantized runs: too few to fit the law's 8 constants "
                     f"(the report fits from {MIN_FIT_RUNS} runs on). Add runs with `fpx sweep`.")]
    fits = fit_capybara_supported(**a, bootstrap=bootstrap, seed=seed, fixed=paper_law)
    full = fits.full
    blocks: list = [Para(
        f"The Capybara law fitted to the {n} quantized runs (`fpx fit`: robust multi-start fit, "
        f"{bootstrap} bootstrap resamples for the 95% intervals, leave-one-model-size-out "
        f"refits): relative residuals have RMS {100 * full.rms_rel:.2f}% and maximum "
        f"{100 * full.max_rel:.2f}%. A constant on a bound of the fit, or whose interval spans "
        f"more than {SPAN_FACTOR:g}x, is not identified by these runs: its value is not a "
        f"measurement.")]
    blocks.append(_constants_table(full, paper_law, "Fitted constants beside the published "
                                                    "ones."))
    blocks += _heldout_table(full)
    if fits.reduced is not None:
        lost = ", ".join(k for k, why in full.identification().items() if why)
        blocks.append(Para(
            f"**These runs do not identify the full law** (not identified: {lost}). The "
            f"reduced fit below frees only {', '.join(REDUCED_FREE)} and holds the paper's "
            f"exponents; its held-out error says how well even that carries to an unseen model "
            f"size."))
        blocks.append(_constants_table(fits.reduced, paper_law, "The reduced fit these runs "
                                                                "support."))
        blocks += _heldout_table(fits.reduced)
        still = [k for k, why in fits.reduced.identification().items() if why]
        if still:
            blocks.append(Para(f"Even the reduced fit leaves {', '.join(still)} not identified: "
                               f"the runs do not resolve that part of the law."))
    blocks.append(_layouts_block(fits))
    pred = np.asarray(full.law.loss(a["N"], a["D"], a["E"], a["M"], a["B"]), dtype=float)
    groups = [f"N={x:.3g}" for x in a["N"]]
    blocks.append(Figure("fit_diagnostics", fig.fit_diagnostics(
        a["loss"], pred, groups, "Capybara law fitted to the runs"),
        "Left: predicted against measured validation loss (dotted: equality). Right: relative "
        "residual per run, coloured by model size."))
    return blocks


def _constants_table(fit, paper_law, caption: str) -> Table:
    why = fit.identification()
    paper, mine = constants(paper_law), constants(fit.law)
    rows = []
    for k in paper:
        lo_hi = fit.ci.get(k)
        interval = f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi and k in fit.free else "—"
        mark = ("held at the paper's value" if k not in fit.free
                else f"**not identified**: {why[k]}" if why[k] else "yes")
        rows.append((k, f"{paper[k]:.6g}", f"{mine[k]:.6g}", interval, mark))
    return Table(("constant", "paper", "fitted", "95% interval", "identified by these runs"),
                 tuple(rows), caption=caption)


def _heldout_table(fit) -> list:
    if not fit.heldout:
        return []
    return [Table(("held-out model size N", "runs", "mean |relative error|", "max"),
                  tuple((f"{h.N:.3g}", str(h.count), f"{100 * h.mean_abs_rel:.2f}%",
                         f"{100 * h.max_abs_rel:.2f}%") for h in fit.heldout),
                  caption="Leave-one-model-size-out: fit without that size, predict it.")]


def _layouts_block(fits):
    rows = fits.layouts()
    changed = [r for r in rows if r.fitted != r.reference]
    why = fits.full.identification()
    if not changed:
        return Para(f"The best E/M split of every width from {rows[0].bits} to {rows[-1].bits} "
                    f"bits is the same under the fitted law as under the paper's: the "
                    f"recommendations do not change.")
    trust = ("δ and ν, which alone decide the split, are not both identified by these runs, so "
             "the recommendations stay on the paper's law."
             if why.get("delta") or why.get("nu") else
             "δ and ν, which alone decide the split, are identified by these runs.")
    return Table(("bits", "paper's best", "fitted law's best"),
                 tuple((str(r.bits), layout_name(*r.reference), layout_name(*r.fitted))
                       for r in rows),
                 caption=f"The best E/M split per width changes under the fitted law at "
                         f"{len(changed)} of {len(rows)} widths. {trust}")


def layout_name(e: int, m: int) -> str:
    """How the report names a layout: ``e3m2``."""
    return f"e{e}m{m}"
