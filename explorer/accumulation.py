"""Accumulation error against the reduction length K and the accumulator: the data and figure of
the report's accumulator section (``fpx report --accumulator ...``).

    from explorer.accumulation import accumulation_study, accumulation_figure, parse_accumulator
    study = accumulation_study(["e8m23", "e8m13/rtz", "e8m13/rtz/chunk128"], ks=(256, 1024, 4096))
    study.to_dict()                         # JSON-ready numbers
    png = accumulation_png(study)           # the figure, PNG bytes (Agg canvas, no pyplot)
    md = markdown_table(study)              # one row per (accumulator, K)

Data: ``trials`` x ``K`` and ``K`` x ``trials`` standard Gaussian matrices rounded (RNE, saturating)
into ``element_format``, so each (accumulator, K) point summarises ``trials**2`` dot products of
length K.  Each is computed by :func:`fpformat.gemm.matmul` and compared with the exact dot product
(float64 ``numpy`` dot of the exactly representable products; its own error, below 1e-13 relative
to the sum of magnitudes, is far below every accumulator studied).

Measures, per dot product ``y`` with exact value ``x`` and products ``p_k``:

* *normalised error* ``|y - x| / sum_k |p_k|``: the quantity rounding-error bounds speak of
  (at most about ``K * 2**-(M+1)`` for a sequential accumulator with M mantissa bits, about
  ``log2(K) * 2**-(M+1)`` for pairwise), and well defined when ``x`` is near zero;
* *relative error* ``|y - x| / |x|`` (dot products with ``x == 0`` left out).

Each point reports the median and the 95th percentile over the dot products.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from explorer.progress import Progress
from fpformat import get_format
from fpformat.gemm import Accumulator, matmul
from fpformat.rounding import MODES

#: Axis labels of the error measures the accumulation and matrix-unit studies plot.
MEASURES = {"median_normalized": "median |error| / Σ|products|",
            "p95_normalized": "95th pct |error| / Σ|products|",
            "median_relative": "median relative error",
            "p95_relative": "95th pct relative error"}

DEFAULT_ACCUMULATORS = ("e8m23", "e8m13/rtz", "e8m13/rtz/chunk128", "e8m10", "e8m7")
DEFAULT_KS = (64, 256, 1024, 4096)

_SPEC_HELP = ("FORMAT[/ROUNDING][/chunkN][/pairwise][/fusedW], e.g. 'e8m13/rtz/chunk128', "
              "'float32', 'e8m10/rne/pairwise', 'e8m23/fused4'")


def parse_accumulator(spec: str) -> Accumulator:
    """An :class:`~fpformat.gemm.Accumulator` from ``FORMAT[/ROUNDING][/chunkN][/pairwise]
    [/fusedW]`` (parts after the format in any order).  ``ValueError`` names the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"accumulator spec must be a non-empty string like {_SPEC_HELP}")
    parts = [p.strip().lower() for p in spec.split("/")]
    kw: dict = {"acc_format": parts[0]}
    for p in parts[1:]:
        if p in MODES:
            kw["rounding"] = p
        elif p in ("pairwise", "sequential"):
            kw["order"] = p
        elif m := re.fullmatch(r"chunk(\d+)", p):
            kw["chunk"] = int(m.group(1))
        elif m := re.fullmatch(r"fused(\d+)", p):
            kw["fused_width"] = int(m.group(1))
        else:
            raise ValueError(f"accumulator spec {spec!r}: unknown part {p!r}; "
                             f"expected {_SPEC_HELP}")
    try:
        return Accumulator(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"accumulator spec {spec!r}: {e}") from None


@dataclass(frozen=True)
class AccumulationPoint:
    """The error statistics of one accumulator at one K (see the module docstring)."""
    accumulator: str          # the spec as given
    label: str                # Accumulator.label()
    k: int
    median_normalized: float
    p95_normalized: float
    median_relative: float
    p95_relative: float
    samples: int


@dataclass(frozen=True)
class AccumulationStudy:
    """Every (accumulator, K) point of one study, with its inputs."""
    element_format: str
    trials: int
    seed: int
    ks: tuple[int, ...]
    accumulators: tuple[str, ...]
    points: tuple[AccumulationPoint, ...]
    unit_roundoff: tuple[float, ...]     # 2**-(M+1) of each accumulator's format

    def series(self, measure: str = "median_normalized") -> dict[str, np.ndarray]:
        """``{accumulator spec: values over ks}`` of one measure (a field of the points)."""
        if (measure not in AccumulationPoint.__dataclass_fields__
                or measure in ("accumulator", "label", "k")):
            raise ValueError(f"measure must be one of median_normalized, p95_normalized, "
                             f"median_relative, p95_relative; got {measure!r}")
        return series_of(self.points, "accumulator", self.accumulators, self.ks, measure)

    def to_dict(self) -> dict:
        """JSON-ready: the inputs and a list of point dicts."""
        return {"element_format": self.element_format, "trials": self.trials, "seed": self.seed,
                "ks": list(self.ks), "accumulators": list(self.accumulators),
                "unit_roundoff": list(self.unit_roundoff),
                "points": [asdict(p) for p in self.points]}


def accumulation_study(accumulators: Sequence[str | Accumulator] = DEFAULT_ACCUMULATORS,
                       ks: Sequence[int] = DEFAULT_KS, element_format: str = "e4m3",
                       trials: int = 32, seed: int = 0,
                       progress: bool = False) -> AccumulationStudy:
    """Measure accumulation error for each accumulator (spec string or Accumulator) and each K.

    Cost: ``trials**2 * sum(ks)`` emulated multiply-accumulates per accumulator (the defaults:
    about 5.5M each, a second or two on one core once numba's cache is warm).
    """
    if isinstance(accumulators, (str, Accumulator)):
        accumulators = [accumulators]
    if not accumulators:
        raise ValueError("accumulators must name at least one accumulator")
    specs, accs = [], []
    for a in accumulators:
        if isinstance(a, Accumulator):
            specs.append(a.label())
            accs.append(a)
        else:
            specs.append(str(a))
            accs.append(parse_accumulator(a))
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an int >= 2, got {trials!r}")
    fmt = get_format(element_format)
    if getattr(fmt, "element", None) is not None or not hasattr(fmt, "quantize"):
        raise ValueError(f"element_format must be an element format, got {element_format!r}")
    rng = np.random.default_rng(seed)
    data = {}
    for k in ks:
        A = np.asarray(fmt.quantize(rng.standard_normal((trials, k)), saturate=True),
                       dtype=np.float64)
        B = np.asarray(fmt.quantize(rng.standard_normal((k, trials)), saturate=True),
                       dtype=np.float64)
        data[k] = (A, B, A @ B, np.abs(A) @ np.abs(B))
    bar = None
    if progress:
        bar = Progress(len(accs) * sum(ks), "accumulation study", unit="k", force=False)
    points = []
    try:
        for spec, acc in zip(specs, accs):
            for k in ks:
                A, B, exact, mags = data[k]
                y = matmul(A, B, accumulator=acc, seed=seed)
                err = np.abs(y - exact)
                with np.errstate(divide="ignore", invalid="ignore"):
                    norm = np.where(mags > 0, err / mags, 0.0).ravel()
                    nz = exact != 0
                    rel = (err[nz] / np.abs(exact[nz])).ravel()
                rel = rel if rel.size else np.zeros(1)
                points.append(AccumulationPoint(
                    spec, acc.label(), k, float(np.median(norm)), float(np.percentile(norm, 95)),
                    float(np.median(rel)), float(np.percentile(rel, 95)), int(norm.size)))
                if bar is not None:
                    bar.update(k)
    finally:
        if bar is not None:
            bar.close()
    units = tuple(2.0 ** -(a.acc_format.man_bits + 1) for a in accs)
    return AccumulationStudy(str(element_format), trials, seed, ks, tuple(specs), tuple(points),
                             units)


def accumulation_figure(study: AccumulationStudy, measure: str = "median_normalized"):
    """A log-log figure of ``measure`` against K, one line per accumulator, with the unit
    roundoff ``2**-(M+1)`` of each accumulator format as a dotted level.  Returns a
    :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot)."""
    # matplotlib is heavy and only this figure needs it: training imports this module too.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.2, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ks = np.array(study.ks, dtype=float)
    for i, (spec, vals) in enumerate(study.series(measure).items()):
        color = f"C{i % 10}"
        shown = np.where(vals > 0, vals, np.nan)
        label = spec if np.any(vals > 0) else f"{spec} (error 0 at every K)"
        ax.plot(ks, shown, marker="o", color=color, label=label)
        ax.axhline(study.unit_roundoff[i], color=color, linestyle=":", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("K (products per dot product)")
    ax.set_ylabel(MEASURES[measure])
    ax.set_title(f"Accumulation error, {study.element_format} inputs (dotted: unit roundoff)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def series_of(points, group: str, groups, ks, measure: str) -> dict[str, np.ndarray]:
    """``{g: measure over ks}`` for each ``g`` of ``groups``, from points that carry the
    attributes ``group``, ``k`` and ``measure`` (one point per group and K)."""
    out = {}
    for g in groups:
        pts = {p.k: getattr(p, measure) for p in points if getattr(p, group) == g}
        out[g] = np.array([pts[k] for k in ks], dtype=float)
    return out


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (reproducible: no timestamp metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def accumulation_png(study: AccumulationStudy, measure: str = "median_normalized") -> bytes:
    """:func:`accumulation_figure` as PNG bytes."""
    return figure_png(accumulation_figure(study, measure))


def markdown_table(study: AccumulationStudy) -> str:
    """The study as a Markdown table: accumulator, K, median and p95 of both error measures."""
    rows = ["| accumulator | K | median err/Σ\\|p\\| | p95 err/Σ\\|p\\| | median rel. err "
            "| p95 rel. err |",
            "|---|---:|---:|---:|---:|---:|"]
    for p in study.points:
        rows.append(f"| `{p.accumulator}` | {p.k} | {p.median_normalized:.2e} | "
                    f"{p.p95_normalized:.2e} | {p.median_relative:.2e} | {p.p95_relative:.2e} |")
    return "\n".join(rows) + "\n"
