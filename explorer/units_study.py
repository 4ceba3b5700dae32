"""Dot-product error of matrix units against the reduction length K: the data, figure, table and
reading of the report's matrix-unit section (``fpx report --matrix-unit h100 b200 SPEC ...``).

    from explorer.units_study import unit_study, unit_png, markdown_table, designer_notes
    study = unit_study(["h100", "v100", "fma16/x-8/rtz"], ks=(16, 256, 4096))
    study.to_dict()                       # JSON-ready numbers
    png = unit_png(study)                 # the figure, PNG bytes (Agg canvas, no pyplot)
    md = markdown_table(study)            # one row per (unit, K)
    notes = designer_notes(study)         # sentences on what the differences mean

Data: ``trials`` x ``K`` and ``K`` x ``trials`` standard Gaussian matrices rounded (RNE) into the
units' input format, so each (unit, K) point summarises ``trials**2`` dot products of length K,
the same data for every unit.  Each is computed by :func:`fpformat.gemm.mma` (``c = 0``, K cut
into the unit's blocks, each block's result the next one's addend, as a GEMM built from the
instruction does) and compared with the exact dot product: the products are exact in float64
(at most 11 significant bits per input) and their sum is ``math.fsum``, correctly rounded, so the
reference's own error is at most 2**-53 relative.

Measures, per dot product ``d`` with exact value ``x`` and products ``p_k``: the *relative error*
``|d - x| / |x|`` (``x == 0`` left out) and the *normalised error* ``|d - x| / sum_k |p_k|``;
each point reports their medians and the 95th percentile of the relative error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from explorer.accumulation import MEASURES, figure_png, series_of
from fpformat import FloatFormat, get_format
from fpformat.gemm import mma
from fpformat.units import MatrixUnit, get_unit

DEFAULT_UNITS = ("v100", "a100", "h100", "fma16/x-8/rtz", "fma16/x2/rne")
DEFAULT_KS = (16, 64, 256, 1024, 4096)


@dataclass(frozen=True)
class UnitPoint:
    """The error statistics of one unit at one K (see the module docstring)."""
    unit: str                 # the name or spec as given
    spec: str                 # MatrixUnit.spec
    k: int
    median_relative: float
    p95_relative: float
    median_normalized: float
    samples: int


@dataclass(frozen=True)
class UnitStudy:
    """Every (unit, K) point of one study, with its inputs and the units' parameters."""
    in_format: str
    out_format: str
    trials: int
    seed: int
    ks: tuple[int, ...]
    units: tuple[str, ...]
    described: tuple[dict, ...]        # MatrixUnit.describe() of each unit
    unit_roundoff: tuple[float, ...]   # 2**-(p+1), p the fraction bits of each unit's result
    points: tuple[UnitPoint, ...]

    def series(self, measure: str = "median_relative") -> dict[str, np.ndarray]:
        """``{unit: values over ks}`` of one measure (a numeric field of the points)."""
        if measure not in ("median_relative", "p95_relative", "median_normalized"):
            raise ValueError(f"measure must be one of median_relative, p95_relative, "
                             f"median_normalized; got {measure!r}")
        return series_of(self.points, "unit", self.units, self.ks, measure)

    def growth(self, measure: str = "median_relative") -> dict[str, float]:
        """``{unit: slope}`` of log(error) against log(K) between the smallest and largest K
        (about 0: flat; 0.5: a random walk; 1: errors adding up in one direction).  NaN where
        an end point has no error."""
        out = {}
        k0, k1 = self.ks[0], self.ks[-1]
        for u, v in self.series(measure).items():
            ok = v[0] > 0 and v[-1] > 0 and k1 > k0
            out[u] = math.log(v[-1] / v[0]) / math.log(k1 / k0) if ok else math.nan
        return out

    def to_dict(self) -> dict:
        """JSON-ready: the inputs, the units' parameters and a list of point dicts."""
        return {"in_format": self.in_format, "out_format": self.out_format,
                "trials": self.trials, "seed": self.seed, "ks": list(self.ks),
                "units": list(self.units), "described": [dict(d) for d in self.described],
                "unit_roundoff": list(self.unit_roundoff),
                "points": [asdict(p) for p in self.points]}


def _exact_dots(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact dot products (correctly rounded: ``math.fsum`` of the exact float64 products)
    and the sums of |products|, both (trials, trials)."""
    P = (A[:, None, :] * B.T[None, :, :]).reshape(-1, A.shape[1])
    exact = np.array([math.fsum(row) for row in P.tolist()]).reshape(A.shape[0], B.shape[1])
    return exact, np.abs(A) @ np.abs(B)


def unit_study(units: Sequence[str | MatrixUnit] = DEFAULT_UNITS,
               ks: Sequence[int] = DEFAULT_KS, in_format: str = "float16",
               out_format: str = "float32", trials: int = 32, seed: int = 0) -> UnitStudy:
    """Measure the dot-product error of each unit (preset name, spec or MatrixUnit; presets
    taken for ``in_format`` -> ``out_format``) at each K.

    Cost: ``trials**2 * sum(ks)`` multiply-accumulates per unit (the defaults: about 5.6M each,
    a few hundredths of a second) plus the exact reference (about a second in all).
    ``ValueError`` names a unit without a preset for the formats, or a bad argument."""
    if isinstance(units, (str, MatrixUnit)):
        units = [units]
    if not units:
        raise ValueError("units must name at least one matrix unit")
    fi, fo = get_format(in_format), get_format(out_format)
    for f, pname, given in ((fi, "in_format", in_format), (fo, "out_format", out_format)):
        if not isinstance(f, FloatFormat):
            raise ValueError(f"{pname} must be an element format, got {given!r}")
    names, built = [], []
    for u in units:
        unit = get_unit(u, fi, fo)
        unit.tuples(fi, fo)                           # the unit can take these formats
        names.append(str(u) if not isinstance(u, MatrixUnit) else str(unit))
        built.append(unit)
    if len(set(names)) != len(names):
        raise ValueError(f"units must be distinct, got {', '.join(names)}")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks) or list(ks) != sorted(set(ks)):
        raise ValueError(f"ks must be increasing positive ints, got {ks}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an int >= 2, got {trials!r}")
    rng = np.random.default_rng(seed)
    data = {}
    for k in ks:
        A = np.asarray(fi.quantize(rng.standard_normal((trials, k)), saturate=True), np.float64)
        B = np.asarray(fi.quantize(rng.standard_normal((k, trials)), saturate=True), np.float64)
        data[k] = (A, B, *_exact_dots(A, B))
    points = []
    for name, unit in zip(names, built):
        for k in ks:
            A, B, exact, mags = data[k]
            d = mma(A, B, 0.0, unit, fi, fo).astype(np.float64)
            err = np.abs(d - exact)
            nz = exact != 0
            rel = err[nz] / np.abs(exact[nz]) if nz.any() else np.zeros(1)
            norm = np.where(mags > 0, err / np.where(mags > 0, mags, 1.0), 0.0)
            points.append(UnitPoint(name, unit.spec, k, float(np.median(rel)),
                                    float(np.percentile(rel, 95)), float(np.median(norm)),
                                    int(err.size)))
    roundoff = tuple(2.0 ** -((fo.man_bits if u.result_bits is None
                               else min(u.result_bits, fo.man_bits)) + 1) for u in built)
    return UnitStudy(str(in_format), str(out_format), trials, seed, ks, tuple(names),
                     tuple(u.describe() for u in built), roundoff, tuple(points))


def unit_figure(study: UnitStudy, measure: str = "median_relative"):
    """A log-log figure of ``measure`` against K, one line per unit, with each unit's result
    unit roundoff ``2**-(p+1)`` dotted.  Returns a :class:`matplotlib.figure.Figure` on an Agg
    canvas (no pyplot)."""
    # matplotlib is heavy and only this figure needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.2, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ks = np.array(study.ks, dtype=float)
    markers = "osD^v<>ph*"
    for i, (name, vals) in enumerate(study.series(measure).items()):
        color = f"C{i % 10}"
        shown = np.where(vals > 0, vals, np.nan)
        spec = study.described[i]["spec"]
        label = name if name == spec else f"{name} ({spec})"
        if not np.any(vals > 0):
            label += " (error 0 at every K)"
        ax.plot(ks, shown, marker=markers[i % len(markers)], color=color, label=label,
                alpha=0.85)
        ax.axhline(study.unit_roundoff[i], color=color, linestyle=":", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("K (products per dot product)")
    ax.set_ylabel(MEASURES[measure])
    ax.set_title(f"Matrix units, {study.in_format} inputs -> {study.out_format} "
                 f"(dotted: result unit roundoff)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def unit_png(study: UnitStudy, measure: str = "median_relative") -> bytes:
    """:func:`unit_figure` as PNG bytes."""
    return figure_png(unit_figure(study, measure))


def markdown_table(study: UnitStudy) -> str:
    """The study as a Markdown table: unit, spec, K, median and p95 relative error, median
    normalised error."""
    rows = ["| unit | spec | K | median rel. err | p95 rel. err | median err/Σ\\|p\\| |",
            "|---|---|---:|---:|---:|---:|"]
    for p in study.points:
        rows.append(f"| `{p.unit}` | `{p.spec}` | {p.k} | {p.median_relative:.2e} | "
                    f"{p.p95_relative:.2e} | {p.median_normalized:.2e} |")
    return "\n".join(rows) + "\n"


def _aligned(d: dict) -> bool:
    return d.get("summation", "aligned") == "aligned"


def _window(d: dict) -> int:
    return 23 + d["extra_bits"]


def _summation(d: dict) -> str:
    """How a unit sums a block, in words."""
    how = d.get("summation", "aligned")
    if how == "exact":
        return "an exact sum of each block"
    if how == "pairwise":
        return "a float32 adder tree in each block"
    if how in ("late", "odd-even"):
        groups = " in even and odd groups" if how == "odd-even" else ""
        return (f"the products aligned{groups} in a window of {23 + d['extra_bits']} fraction "
                f"bits, the addend joined after them rounding toward -inf")
    return f"a window of {_window(d)} fraction bits below the block's largest exponent"


def designer_notes(study: UnitStudy) -> list[str]:
    """Sentences on what the measured differences mean for a designer: units with the same
    model, the error at the largest K against the best unit, how the error grows with K, and
    the parameter that explains it (window width, truncation or rounding, block size)."""
    notes: list[str] = []
    by_spec: dict[str, list[str]] = {}
    for name, d in zip(study.units, study.described):
        by_spec.setdefault(d["spec"], []).append(name)
    same = [names for names in by_spec.values() if len(names) > 1]
    for names in same:
        spec = study.described[study.units.index(names[0])]["spec"]
        notes.append(f"{', '.join(f'`{n}`' for n in names)} share one model for "
                     f"{study.in_format} inputs (`{spec}`), "
                     f"so they give the same results bit for bit; their differences lie in other "
                     f"input formats (e.g. FP8) or outside the numerics.")
    last = study.series()
    kmax = study.ks[-1]
    growth = study.growth()
    errs = {u: float(v[-1]) for u, v in last.items()}
    best = min(errs, key=lambda u: errs[u])
    for name, d in zip(study.units, study.described):
        e, g = errs[name], growth[name]
        trend = ("does not grow with K" if not math.isfinite(g) or g < 0.2 else
                 f"grows about like K^{g:.1f}" + (" (errors of one sign add up)" if g > 0.7
                                                  else " (errors partly cancel)"))
        ratio = "" if name == best or errs[best] == 0 else \
            f", {e / errs[best]:.1f}x the best unit's"
        bits = "" if d["result_bits"] is None else f" to {d['result_bits']} bits"
        notes.append(f"`{name}`: fma {d['fma']}, {_summation(d)}, result rounding "
                     f"{d['rounding']}{bits}: "
                     f"median relative error {e:.2e} at K = {kmax}{ratio}; it {trend}.")
    truncating = [n for n, d in zip(study.units, study.described) if d["rounding"] == "rtz"]
    nearest = [n for n, d in zip(study.units, study.described) if d["rounding"] in ("rne", "rna")]
    if truncating and nearest:
        gt = np.nanmedian([growth[n] for n in truncating])
        gn = np.nanmedian([growth[n] for n in nearest])
        notes.append(f"Truncating the block's result (rtz) moves the running sum toward zero at "
                     f"every block, so those errors add up with the number of blocks K/fma "
                     f"(median slope of the rtz units here {gt:.2f}); round-to-nearest results "
                     f"make errors of both signs that partly cancel (median slope {gn:.2f}).")
    if truncating:
        notes.append("Truncation inside the window acts on each term's magnitude, so it errs "
                     "toward zero for positive and negative products alike and largely cancels "
                     "over mixed-sign data; extra window bits move the truncation from the terms "
                     "to the result, where it is biased. That is why a window exactly as wide as "
                     "the result (V100's 23 bits) can beat a wider one followed by a truncated "
                     "result at large K, and why a unit that truncates its result gains more "
                     "from round-to-nearest than from more window bits.")
    windows = sorted({_window(d) for d in study.described if _aligned(d)})
    if len(windows) > 1:
        notes.append(f"Windows range from {windows[0]} to {windows[-1]} fraction bits: a window "
                     f"narrower than the result's precision drops the low bits of every product "
                     f"smaller than the block's largest term, and that error dominates at every "
                     f"K; wider than the result precision, the window matters little and the "
                     f"result rounding dominates.")
    return notes
