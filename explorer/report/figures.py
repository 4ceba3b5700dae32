"""Matplotlib figures of the report, drawn off-screen with the Agg canvas.

Every function takes plain numbers (no law objects) and returns PNG bytes, so figures can be
tested on their own and the report module decides what to plot.  No pyplot: figures are built
from :class:`matplotlib.figure.Figure` and an Agg canvas, leaving the caller's backend alone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 100
# Tableau colours without red: red is reserved for highlighted (proposed) formats.
_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#393b79"]
HIGHLIGHT = "#d62728"


def _new(width: float = 7.2, height: float = 4.2, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def to_png(fig: Figure) -> bytes:
    """Encode a figure as PNG (tight layout, no timestamp metadata, so output is reproducible)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------------- law figures
def loss_heatmap(exp_bits: Sequence[int], man_bits: Sequence[int], loss: np.ndarray,
                 floor: float, optima: Mapping[int, tuple[int, int]], title: str) -> bytes:
    """Predicted loss over (E, M): ``loss[i, j]`` for ``man_bits[i]``, ``exp_bits[j]``.

    Colour is log10 of the quantization penalty ``loss - floor`` (``floor`` = the unquantized
    loss); every cell is annotated with the loss; the optimum of each total width P = E + M + 1
    in ``optima`` is outlined, and the constant-P anti-diagonals are labelled.
    """
    loss = np.asarray(loss, dtype=float)
    E = np.asarray(exp_bits)
    M = np.asarray(man_bits)
    pen = np.log10(np.maximum(loss - floor, 1e-12))
    fig, (ax,) = _new(7.6, 5.4)
    im = ax.imshow(pen, origin="lower", cmap="viridis_r", aspect="auto",
                   extent=(E[0] - .5, E[-1] + .5, M[0] - .5, M[-1] + .5))
    cb = fig.colorbar(im, ax=ax, pad=0.02)
    cb.set_label("log10 (loss − unquantized loss)")
    norm = Normalize(np.nanmin(pen), np.nanmax(pen))
    for i, m in enumerate(M):
        for j, e in enumerate(E):
            light = norm(pen[i, j]) > 0.55
            ax.text(e, m, f"{loss[i, j]:.4f}", ha="center", va="center", fontsize=5.8,
                    color="black" if light else "white")
    for P, (e, m) in optima.items():
        if E[0] <= e <= E[-1] and M[0] <= m <= M[-1]:
            ax.add_patch(_rect(e, m))
            ax.annotate(f"P={P}", (e - .46, m + .47), fontsize=5.5, color=HIGHLIGHT,
                        ha="left", va="top", fontweight="bold")
    ax.set_xticks(E)
    ax.set_yticks(M)
    ax.set_xlabel("exponent bits E")
    ax.set_ylabel("mantissa bits M")
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def _rect(e: float, m: float):
    return Rectangle((e - .5, m - .5), 1, 1, fill=False, edgecolor=HIGHLIGHT, linewidth=2.0)


def loss_gap_bars(labels_by_p: Mapping[int, Sequence[str]],
                  gaps_by_p: Mapping[int, Sequence[float]], title: str) -> bytes:
    """For each bit width P, the predicted loss gap of the runners-up to the best layout."""
    fig, (ax,) = _new(7.2, 3.8)
    ps = sorted(gaps_by_p)
    width = 0.8 / max(max(len(gaps_by_p[p]) for p in ps), 1)
    for p_i, p in enumerate(ps):
        for k, (lab, g) in enumerate(zip(labels_by_p[p], gaps_by_p[p])):
            x = p_i - 0.4 + width * (k + .5)
            ax.bar(x, max(g, 1e-6), width * .9, color=_COLORS[k % len(_COLORS)])
            ax.text(x, max(g, 1e-6), lab, rotation=90, ha="center", va="bottom", fontsize=6.5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ps)), [f"P={p}" for p in ps])
    ax.set_ylabel("loss gap to best layout")
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.25)
    return to_png(fig)


def lines_loglog(x: np.ndarray, series: Mapping[str, np.ndarray], *, xlabel: str, ylabel: str,
                 title: str, marker_x: float | None = None, marker_label: str = "",
                 reference: tuple[str, np.ndarray] | None = None,
                 highlight: Sequence[str] = (), logy: bool = True) -> bytes:
    """Lines on log-log axes (critical data size against model size, loss against budget)."""
    fig, (ax,) = _new()
    for k, (name, y) in enumerate(series.items()):
        hl = name in highlight
        ax.plot(x, y, label=name, color=HIGHLIGHT if hl else _COLORS[k % len(_COLORS)],
                linewidth=2.6 if hl else 1.5, linestyle="-" if hl or k < 7 else "--")
    if reference is not None:
        ax.plot(x, reference[1], color="black", linestyle=":", linewidth=1.2, label=reference[0])
    if marker_x is not None:
        ax.axvline(marker_x, color="#555", linestyle="--", linewidth=1)
        ax.text(marker_x, 0.02, f" {marker_label}", transform=ax.get_xaxis_transform(),
                fontsize=8, color="#333")
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=.3)
    ax.legend(fontsize=7.5, ncol=2)
    return to_png(fig)


def precision_vs_budget(C: np.ndarray, P: np.ndarray, band: tuple[float, float], title: str,
                        marker_C: float | None = None, P_int: np.ndarray | None = None,
                        extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Compute-optimal precision against compute budget, with the shaded ``band`` of bit widths."""
    fig, (ax,) = _new()
    ax.axhspan(band[0], band[1], color="#2ca02c", alpha=.12,
               label=f"{band[0]:g}–{band[1]:g} bit band")
    ax.plot(C, P, color=_COLORS[0], linewidth=2, label="optimal P (continuous)")
    if P_int is not None:
        ax.step(C, P_int, where="mid", color=_COLORS[1], linewidth=1.2, label="optimal P (integer)")
    for k, (name, y) in enumerate((extra or {}).items()):
        ax.plot(C, y, color=_COLORS[(k + 2) % len(_COLORS)], linewidth=1.2, linestyle="--",
                label=name)
    if marker_C is not None:
        ax.axvline(marker_C, color="#555", linestyle="--", linewidth=1)
        ax.text(marker_C, 0.02, " your budget", transform=ax.get_xaxis_transform(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("compute budget C = k·P·N·D (bit-FLOP units, k = 6/16)")
    ax.set_ylabel("precision P (bits)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def block_effect(log2_b: np.ndarray, tick_labels: Sequence[str], series: Mapping[str, np.ndarray],
                 ylabel: str, title: str) -> bytes:
    """A quantity (predicted loss penalty) against log2 of the block size, one line per format."""
    fig, (ax,) = _new()
    for k, (name, y) in enumerate(series.items()):
        ax.plot(log2_b, y, marker="o", color=_COLORS[k % len(_COLORS)], label=name)
    ax.set_xticks(log2_b, tick_labels)
    ax.set_yscale("log")
    ax.set_xlabel("scaling block size B (elements sharing one scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=.3)
    ax.legend(fontsize=8, ncol=2)
    return to_png(fig)


# ----------------------------------------------------------------------------------- format figures
def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str,
                 title: str, highlight: Sequence[str] = ()) -> bytes:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series (format)."""
    fig, (ax,) = _new(7.6, 4.2)
    n = max(len(series), 1)
    width = 0.84 / n
    for k, (name, vals) in enumerate(series.items()):
        x = np.arange(len(groups)) - 0.42 + width * (k + .5)
        hl = name in highlight
        ax.bar(x, vals, width * .92, label=name, color=_COLORS[k % len(_COLORS)],
               edgecolor="black" if hl else "none", linewidth=1.6 if hl else 0,
               hatch="//" if hl else None)
    ax.set_xticks(np.arange(len(groups)), [g.replace(", ", "\n") for g in groups], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return to_png(fig)


def value_grids(grids: Mapping[str, np.ndarray], title: str,
                highlight: Sequence[str] = ()) -> bytes:
    """The positive finite values of each format as ticks on a log2 axis, one row per format."""
    names = list(grids)
    fig, (ax,) = _new(7.6, 0.9 + 0.55 * len(names))
    for row, name in enumerate(names):
        v = np.asarray(grids[name], dtype=float)
        v = v[v > 0]
        hl = name in highlight
        color = HIGHLIGHT if hl else _COLORS[row % len(_COLORS)]
        y = len(names) - 1 - row
        ax.vlines(np.log2(v), y - .32, y + .32, color=color, linewidth=.8)
        ax.plot([np.log2(v.min()), np.log2(v.max())], [y, y], color=color, alpha=.35, linewidth=4)
        ax.text(np.log2(v.max()) + .25, y, f"{v.max():g}", va="center", fontsize=7, color=color)
    ax.set_yticks(range(len(names)), names[::-1])
    for lab in ax.get_yticklabels():
        if lab.get_text() in highlight:
            lab.set_color(HIGHLIGHT)
            lab.set_fontweight("bold")
    ax.set_xlabel("log2 |value| (each tick is one representable positive value; max at right)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=.3)
    ax.margins(x=0.08)
    return to_png(fig)


def pareto(points: Mapping[str, tuple[float, float]], front: Sequence[str], *, xlabel: str,
           ylabel: str, title: str, highlight: Sequence[str] = ()) -> bytes:
    """Scatter of (cost, error) per format, the Pareto front joined, ``highlight`` in red."""
    fig, (ax,) = _new()
    for name, (x, y) in points.items():
        hl = name in highlight
        ax.scatter([x], [y], s=70 if hl else 22, color=HIGHLIGHT if hl else _COLORS[0],
                   marker="*" if hl else "o", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                    color=HIGHLIGHT if hl else "#333")
    fp = sorted((points[n] for n in front if n in points))
    if fp:
        ax.plot([p[0] for p in fp], [p[1] for p in fp], color="#2ca02c", linewidth=1.4,
                label="Pareto front", zorder=2)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=.3)
    return to_png(fig)


# ----------------------------------------------------------------------------------- run figures
def fit_diagnostics(measured: np.ndarray, predicted: np.ndarray, groups: Sequence[str],
                    title: str, lo: np.ndarray | None = None,
                    hi: np.ndarray | None = None) -> bytes:
    """Two panels: predicted against measured loss (with optional interval bars) and relative
    residuals ``(measured - predicted) / measured`` per run, coloured by ``groups``."""
    measured = np.asarray(measured, float)
    predicted = np.asarray(predicted, float)
    fig, (a1, a2) = _new(9.0, 4.0, ncols=2)
    keys = list(dict.fromkeys(groups))
    col = {g: _COLORS[i % len(_COLORS)] for i, g in enumerate(keys)}
    for g in keys:
        idx = np.array([i for i, gg in enumerate(groups) if gg == g])
        if lo is not None and hi is not None:
            a1.errorbar(measured[idx], predicted[idx],
                        yerr=[predicted[idx] - np.asarray(lo)[idx],
                              np.asarray(hi)[idx] - predicted[idx]],
                        fmt="o", ms=4, color=col[g], label=g, elinewidth=.8)
        else:
            a1.scatter(measured[idx], predicted[idx], s=16, color=col[g], label=g)
        a2.scatter(idx, 100 * (measured[idx] - predicted[idx]) / measured[idx], s=16, color=col[g])
    lim = [min(measured.min(), predicted.min()), max(measured.max(), predicted.max())]
    a1.plot(lim, lim, color="black", linestyle=":", linewidth=1)
    a1.set_xlabel("measured validation loss")
    a1.set_ylabel("predicted loss")
    a1.legend(fontsize=7)
    a1.grid(True, alpha=.3)
    a2.axhline(0, color="black", linewidth=1)
    a2.set_xlabel("run index")
    a2.set_ylabel("residual (measured − predicted) / measured, %")
    a2.grid(True, alpha=.3)
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def sweep_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str,
                 final: Mapping[str, tuple[float, float]] | None = None) -> bytes:
    """Validation loss against training tokens, one line per run label."""
    fig, (ax,) = _new()
    for k, (name, (t, l)) in enumerate(curves.items()):
        ax.plot(t, l, color=_COLORS[k % len(_COLORS)], linewidth=1.3, label=name,
                linestyle="-" if k < len(_COLORS) else "--")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("validation loss")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=.3)
    ax.legend(fontsize=6.5, ncol=2)
    return to_png(fig)
