"""Measured effects of a sweep, next to the law's predictions: paired differences with intervals.

A run's loss carries seed noise (initialisation and batch order) comparable to the effects a
small CPU sweep can produce, so every effect here is a *paired* difference: two runs that share
N, D, the GEMM inputs quantized and the seed (hence the initialisation and the data order) and
differ in one thing only.  Three kinds:

* **E/M split**: at equal total bits P = 1 + E + M, the format with one exponent bit more minus
  the one with one exponent bit fewer (same block size), e.g. ``e2m1 − e1m2``;
* **block size**: the same element format at block B minus at the smallest block measured;
* **quantization gap**: a quantized run minus the unquantized run (same N, D, seed).

Each effect is grouped by the cell (N, D, block, GEMM inputs) and summarised by its mean over
seeds with a two-sided 95 % Student-t interval (:func:`mean_interval`; none from one pair).  The
law's prediction of the same difference is the difference of its quantization penalties
(:meth:`explorer.laws.CapybaraLaw.penalty`; the unquantized part cancels); the law knows
nothing of which GEMM inputs were quantized (it was fitted to Sun et al.'s three).

Losses are validation losses in nats per token.  Figures are PNG bytes drawn like those of
:mod:`explorer.report.figures` (Agg canvas, no pyplot, reproducible).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from explorer import results

from . import figures as fig
from .document import Figure, Para, Section, Table
from .runs import Run

#: Confidence level of every interval in this module.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided :data:`LEVEL` Student-t interval ``[lo, hi]``
    (NaN when ``n < 2``: one value has no spread to measure); ``sd`` with ddof 1."""

    mean: float
    lo: float
    hi: float
    sd: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero (False without an interval)."""
        return bool(self.lo > 0 or self.hi < 0)


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` and its :data:`LEVEL` t-interval (``mean ± t·sd/√n``).

    ValueError when ``values`` is empty or holds a non-finite number."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("values: need at least one value, got none")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"values: every value must be finite, got {a.tolist()}")
    m = float(a.mean())
    if a.size < 2:
        return Interval(m, float("nan"), float("nan"), float("nan"), 1)
    sd = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, a.size - 1) * sd / np.sqrt(a.size))
    return Interval(m, m - half, m + half, sd, int(a.size))


@dataclass(frozen=True)
class Effect:
    """One paired effect in one cell: ``label`` (e.g. ``"e2m1 − e1m2"``), the cell
    (N, D, block, targets), the paired differences (first minus second, one per seed, in seed
    order), their :class:`Interval`, and the law's predicted difference (nats)."""

    kind: str                    # "em", "block" or "gap"
    label: str
    n_params: int | None         # None: pooled over cells (see :func:`pooled`)
    tokens: int | None
    block: str | None
    targets: str | None
    diffs: tuple[float, ...]
    interval: Interval
    predicted: float
    cells: int = 1

    @property
    def cell(self) -> str:
        """``"N=25.1K D=1.05M @32"``: where the pair was measured (``"pooled, 12 cells"``)."""
        b = f" @{self.block}" if self.block else ""
        if self.n_params is None or self.tokens is None:
            return f"pooled, {self.cells} cells{b}"
        return f"N={_si(self.n_params)} D={_si(self.tokens)}{b}"


def _si(x: float) -> str:
    """25088 -> '25.1K', 1048576 -> '1.05M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:g}"


def _block_order(block: str | None) -> float:
    return results.run_log2_block(block)


def _penalty(law, r: Run) -> float:
    """The law's quantization penalty of run ``r`` (0 for an unquantized run)."""
    if not r.quantized:
        return 0.0
    return float(law.penalty(r.n_params, r.tokens, r.exp_bits, r.man_bits,
                             2.0 ** r.log2_block))


def _effects(kind: str, pairs: dict, law) -> list[Effect]:
    """Effects from ``{(label, N, D, block, targets): [(seed, first, second), ...]}``."""
    out = []
    for (label, n, d, block, targets), items in pairs.items():
        items = sorted(items, key=lambda t: -1 if t[0] is None else t[0])
        diffs = tuple(a.val_loss - b.val_loss for _, a, b in items)
        pred = float(np.mean([_penalty(law, a) - _penalty(law, b) for _, a, b in items]))
        out.append(Effect(kind, label, n, d, block, targets, diffs, mean_interval(diffs), pred))
    out.sort(key=lambda e: (e.n_params, e.tokens, _block_order(e.block), e.label))
    return out


def pooled(effects: Sequence[Effect]) -> list[Effect]:
    """The effects of each (kind, label, block, targets) measured in two or more cells, pooled:
    every paired difference of those cells in one :class:`Interval` (the cells' different N and
    D then add to the spread), the law's prediction averaged over the pairs."""
    groups: dict = defaultdict(list)
    for e in effects:
        groups[(e.kind, e.label, e.block, e.targets)].append(e)
    out = []
    for (kind, label, block, targets), es in groups.items():
        if len(es) < 2:
            continue
        diffs = tuple(d for e in es for d in e.diffs)
        pred = float(sum(e.predicted * len(e.diffs) for e in es) / len(diffs))
        out.append(Effect(kind, label, None, None, block, targets, diffs, mean_interval(diffs),
                          pred, len(es)))
    out.sort(key=lambda e: (_block_order(e.block), e.label))
    return out


def shown(effects: Sequence[Effect], max_rows: int = 30) -> list[Effect]:
    """What a figure or table shows of ``effects``: the cells measured with two or more seeds
    (each has its own interval), then the pooled effects (:func:`pooled`); when that is more than
    ``max_rows``, the pooled effects only."""
    replicated = [e for e in effects if e.interval.n > 1]
    pool = pooled(effects)
    rows = replicated + pool
    if not rows:
        rows = list(effects)
    return rows if len(rows) <= max_rows else (pool or rows[:max_rows])


def em_effects(runs: Sequence[Run], law) -> list[Effect]:
    """Paired E/M differences: at equal bits, ``e(E)m(M) − e(E-1)m(M+1)`` for every such pair of
    quantized runs sharing (N, D, block, targets, seed).  Positive: the extra exponent bit (one
    mantissa bit fewer) costs loss."""
    index = {(r.n_params, r.tokens, r.exp_bits, r.man_bits, r.block, r.targets, r.seed): r
             for r in runs if r.quantized}
    pairs: dict = defaultdict(list)
    for (n, d, e, m, b, t, s), r in index.items():
        other = index.get((n, d, e - 1, m + 1, b, t, s))
        if other is not None:
            pairs[(f"{r.fmt} − {other.fmt}", n, d, b, t)].append((s, r, other))
    return _effects("em", pairs, law)


def block_effects(runs: Sequence[Run], law) -> list[Effect]:
    """Paired block-size differences: a format at block B minus the same format at the smallest
    block measured in that cell (same N, D, targets, seed).  Positive: the larger block costs
    loss."""
    by_cell: dict = defaultdict(dict)
    for r in runs:
        if r.quantized and r.block is not None:
            by_cell[(r.n_params, r.tokens, r.fmt, r.targets, r.seed)][r.block] = r
    pairs: dict = defaultdict(list)
    for (n, d, f, t, s), blocks in by_cell.items():
        ref = min(blocks, key=_block_order)
        for b, r in blocks.items():
            if b != ref:
                pairs[(f"{f} @{b} − @{ref}", n, d, None, t)].append((s, r, blocks[ref]))
    return _effects("block", pairs, law)


def gap_effects(runs: Sequence[Run], law) -> list[Effect]:
    """Paired quantization gaps: every quantized run minus the unquantized run of the same
    (N, D, seed).  The law's prediction is the run's quantization penalty.  Recipe runs are
    neither (:attr:`Run.baseline`); :mod:`explorer.report.recipes` compares them."""
    base = {(r.n_params, r.tokens, r.seed): r for r in runs if r.baseline}
    pairs: dict = defaultdict(list)
    for r in runs:
        b = base.get((r.n_params, r.tokens, r.seed))
        if r.quantized and b is not None:
            pairs[(r.fmt, r.n_params, r.tokens, r.block, r.targets)].append((r.seed, r, b))
    return _effects("gap", pairs, law)


@dataclass(frozen=True)
class Series:
    """Loss against D for one (N, format@block, targets): per D, the :class:`Interval` of the
    loss over seeds, the losses themselves (``values``, in seed order) and the law's
    quantization penalty at that D."""

    label: str
    n_params: int
    tokens: tuple[int, ...]
    loss: tuple[Interval, ...]
    predicted_penalty: tuple[float, ...]
    values: tuple[tuple[float, ...], ...] = ()


def d_series(runs: Sequence[Run], law, min_points: int = 3) -> list[Series]:
    """Every (N, format, block, targets) measured at ``min_points`` or more token counts, with
    the loss over seeds at each D (the data for a critical data size: a loss that stops falling,
    or rises, with D).  Only single-format runs and baselines: a recipe run has no format
    (:mod:`explorer.report.recipes` shows its loss against D)."""
    if min_points < 2:
        raise ValueError(f"min_points must be >= 2 (a series needs two D), got {min_points}")
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.quantized or r.baseline:
            groups[(r.n_params, r.label, r.targets)][r.tokens].append(r)
    out = []
    for (n, label, _), by_d in groups.items():
        if len(by_d) < min_points:
            continue
        ds = tuple(sorted(by_d))
        vals = tuple(tuple(r.val_loss for r in sorted(by_d[d], key=lambda r: r.seed or 0))
                     for d in ds)
        out.append(Series(label, n, ds, tuple(mean_interval(v) for v in vals),
                          tuple(_penalty(law, by_d[d][0]) for d in ds), vals))
    out.sort(key=lambda s: (s.n_params, s.label != "none", s.label))
    return out


# ----------------------------------------------------------------------------------- figures
def _err(iv: Interval, min_n: int = 2) -> tuple[float, float]:
    """Error-bar lengths below and above the mean: none from fewer than ``min_n`` values."""
    if iv.n < max(min_n, 2):
        return 0.0, 0.0
    return iv.mean - iv.lo, iv.hi - iv.mean


#: Loss-against-D panels draw interval bars from this many seeds on; with two, a 95 % t-interval
#: is ±12.7 standard errors wide and would set the axis, so those points show their seeds only.
MIN_BAR_SEEDS = 3


def _seed_dots(ax, x: float, values: Sequence[float], color: str) -> None:
    """Each seed's value at ``x``: small open circles behind the mean."""
    ax.scatter([x] * len(values), values, s=10, facecolors="none", edgecolors=color,
               linewidths=.6, alpha=.7, zorder=2)


def _d_axis(ax, tokens: Sequence[int]) -> None:
    """Log D axis ticked at the measured token counts only (labels like 262K, 1.05M)."""
    ax.set_xscale("log")
    ticks = sorted(set(tokens))
    ax.set_xticks(ticks, [_si(t) for t in ticks])
    ax.minorticks_off()


def loss_vs_d_png(series: Sequence[Series], gaps: Sequence[Effect], title: str) -> bytes:
    """Two panels for one N: left, mean validation loss against D per format; right, the paired
    gap to the unquantized run against D with the law's predicted penalty dashed in the same
    colour.  Open circles: each seed; bars: 95 % interval over seeds where there are at least
    :data:`MIN_BAR_SEEDS`."""
    f, (a1, a2) = fig._new(10.0, 4.2, ncols=2)
    all_d: list[int] = []
    for k, s in enumerate(series):
        col = fig._COLORS[k % len(fig._COLORS)]
        all_d += s.tokens
        y = np.array([iv.mean for iv in s.loss])
        err = np.array([_err(iv, MIN_BAR_SEEDS) for iv in s.loss]).T
        a1.errorbar(s.tokens, y, yerr=err, marker="o", ms=4, capsize=2, color=col, label=s.label)
        for d, v in zip(s.tokens, s.values):
            _seed_dots(a1, d, v, col)
        g = sorted((e for e in gaps if e.n_params == s.n_params
                    and e.label == s.label.split("/")[0] and (e.block or None) == _blk(s.label)),
                   key=lambda e: e.tokens)
        if g:
            x = np.array([e.tokens for e in g])
            a2.errorbar(x, [e.interval.mean for e in g],
                        yerr=np.array([_err(e.interval, MIN_BAR_SEEDS) for e in g]).T,
                        marker="o", ms=4, capsize=2, color=col, label=f"{s.label} measured")
            for e in g:
                _seed_dots(a2, e.tokens, e.diffs, col)
            a2.plot(x, [e.predicted for e in g], linestyle="--", color=col, linewidth=1.2,
                    label=f"{s.label} law")
    for ax in (a1, a2):
        _d_axis(ax, all_d)
        ax.set_xlabel("training tokens D")
        ax.grid(True, alpha=.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, ncol=2)
    a2.axhline(0, color="black", linewidth=.8)
    a1.set_ylabel("validation loss (nats/token)")
    a2.set_ylabel("loss − unquantized loss (paired)")
    f.suptitle(title, fontsize=10)
    return fig.to_png(f)


def _blk(label: str) -> str | None:
    return label.split("/", 1)[1] if "/" in label else None


def paired_png(effects: Sequence[Effect], title: str, xlabel: str) -> bytes:
    """One row per effect: the mean paired difference with its 95 % interval (dots and bars),
    each paired difference (small open circles), the law's predicted difference (red cross),
    zero dotted."""
    n = len(effects)
    f, (ax,) = fig._new(7.6, 1.2 + 0.32 * max(n, 1))
    y = np.arange(n)[::-1]
    for yi, e in zip(y, effects):
        lo, hi = _err(e.interval)
        ax.scatter(e.diffs, [yi - 0.22] * len(e.diffs), s=9, facecolors="none",
                   edgecolors="#555", linewidths=.6, zorder=2)
        ax.errorbar([e.interval.mean], [yi], xerr=[[lo], [hi]], fmt="o", ms=4, capsize=2,
                    color=fig._COLORS[0] if e.interval.excludes_zero else "#999")
        ax.scatter([e.predicted], [yi], marker="x", s=30, color=fig.HIGHLIGHT, zorder=3)
    ax.scatter([], [], marker="o", color=fig._COLORS[0], label="measured, interval excludes 0")
    ax.scatter([], [], marker="o", color="#999", label="measured, interval includes 0 (or n=1)")
    ax.scatter([], [], s=9, facecolors="none", edgecolors="#555", label="each paired difference")
    ax.scatter([], [], marker="x", color=fig.HIGHLIGHT, label="law")
    ax.axvline(0, color="black", linestyle=":", linewidth=1)
    ax.set_yticks(y, [f"{e.label}  {e.cell}  (n={e.interval.n})" for e in effects], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=.3)
    ax.legend(fontsize=7, loc="best")
    return fig.to_png(f)


# ----------------------------------------------------------------------------------- section
def _fmt_iv(iv: Interval) -> str:
    if iv.n < 2:
        return f"{iv.mean:+.4f} (n=1)"
    return f"{iv.mean:+.4f} [{iv.lo:+.4f}, {iv.hi:+.4f}]"


def _targets(targets: str | None) -> str:
    """A run's quantized GEMM inputs for a table: "all six" (each of the three GEMMs of a linear
    layer has two inputs) or the comma-separated names."""
    if not targets:
        return "—"
    names = {t.strip() for t in targets.split(",") if t.strip()}
    return "all six" if len(names) == 6 else ", ".join(sorted(names))


def _rows(effects: Sequence[Effect]) -> tuple:
    return tuple((e.label, e.cell, _targets(e.targets), str(e.interval.n), _fmt_iv(e.interval),
                  f"{e.predicted:+.2e}",
                  ("yes" if e.interval.excludes_zero else "no") if e.interval.n > 1 else "—")
                 for e in effects)


_HEAD = ("pair", "cell", "GEMM inputs", "seeds", "measured mean [95 % interval]", "law",
         "interval excludes 0")


def seed_spread(runs: Sequence[Run]) -> list[Interval]:
    """For every configuration run with two or more seeds, the :class:`Interval` of its loss."""
    by: dict = defaultdict(list)
    for r in runs:
        by[(r.n_params, r.tokens, r.label, r.targets)].append(r.val_loss)
    return [mean_interval(v) for v in by.values() if len(v) > 1]


def section(runs: Sequence[Run], law,
            source: str = "Capybara law with Sun et al.'s constants") -> Section | None:
    """The "Measured effects" section: paired E/M, block and quantization-gap differences and
    loss against D, each beside ``law``'s prediction (``source`` names the law in the text);
    None when the runs hold no pair and no series (nothing to show)."""
    all_gaps = gap_effects(runs, law)
    em, blk, gaps = shown(em_effects(runs, law)), shown(block_effects(runs, law)), shown(all_gaps)
    series = d_series(runs, law)
    if not (em or blk or gaps or series):
        return None
    s = Section("Measured effects", anchor="effects")
    spread = seed_spread(runs)
    noise = (f" Seed noise: over the {len(spread)} configurations run with several seeds, the "
             f"standard deviation of the loss has median {np.median([i.sd for i in spread]):.4f}"
             f" nats (range {min(i.sd for i in spread):.4f}–{max(i.sd for i in spread):.4f})."
             if spread else "")
    s.add(Para("Every effect below is a paired difference of validation losses (nats/token): two "
               "runs with the same N, D, GEMM inputs and seed (so the same initialisation and "
               "data order) that differ in one thing. Intervals are two-sided 95 % Student-t "
               "intervals of the mean over seeds; an effect is shown by the runs when its "
               f"interval excludes zero. \"law\" is the difference predicted by the {source} "
               "(the difference of its quantization penalties; the law does not model which "
               "GEMM inputs are quantized). Cells measured with several seeds are shown one by "
               "one; effects measured in several cells are also pooled over them." + noise))
    if gaps:
        s.add(Figure("effects_gap", paired_png(
            gaps, "Quantization gap: quantized minus unquantized (paired by seed)",
            "loss − unquantized loss (nats/token)"),
            "Measured loss cost of each format (dots, 95 % intervals) and the law's predicted "
            "penalty (red crosses)."))
    if em:
        s.add(Figure("effects_em", paired_png(
            em, "Exponent/mantissa split at equal bits (paired by seed)",
            "loss difference: more exponent bits minus fewer (nats/token)"),
            "Paired E/M differences: positive means the split with the extra exponent bit (one "
            "mantissa bit fewer) trains worse. Red crosses: the law's prediction."))
        s.add(Table(_HEAD, _rows(em), caption="E/M split: paired differences."))
    if blk:
        s.add(Figure("effects_block", paired_png(
            blk, "Block size: larger block minus the smallest (paired by seed)",
            "loss difference (nats/token)"),
            "Paired block-size differences; positive means the larger block trains worse. Red "
            "crosses: the law's prediction (penalty ∝ log2 B)."))
        s.add(Table(_HEAD, _rows(blk), caption="Block size: paired differences."))
    for n in sorted({x.n_params for x in series}):
        ser = [x for x in series if x.n_params == n]
        s.add(Figure(f"effects_loss_vs_d_{n}", loss_vs_d_png(
            ser, [g for g in all_gaps if g.n_params == n],
            f"Loss against training tokens, N = {_si(n)}"),
            "Left: validation loss against D per format (open circles: each seed; bars: 95 % "
            f"intervals over seeds where there are {MIN_BAR_SEEDS} or more). Right: the paired "
            "gap to the unquantized run, with the law's predicted penalty dashed. A critical "
            "data size would show as a loss that stops falling or rises with D, or a gap that "
            "grows with D."))
        rows = []
        for x in ser:
            ls = [iv.mean for iv in x.loss]
            falls = all(b < a for a, b in zip(ls, ls[1:]))
            rows.append((x.label, ", ".join(f"{_si(d)}: {v:.4f}" for d, v in zip(x.tokens, ls)),
                         "yes" if falls else "no"))
        s.add(Table(("format", "D: mean loss", "falls at every step"), tuple(rows),
                    caption=f"Loss against D at N = {_si(n)} (means over seeds)."))
    if gaps:
        s.add(Table(("format",) + _HEAD[1:], _rows(gaps),
                    caption="Quantization gap: paired differences to the unquantized run."))
    return s
