"""`build_report`: compute every section of the recommendation report and write it to disk.

The report is assembled as a :class:`~explorer.report.document.Document` by one function per
section (``_section_*``), each taking the shared :class:`_Context`; `build_report` runs them under
a progress bar and writes ``report.md``, ``index.html`` and ``figures/*.png``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import importlib.metadata as md
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numba
import numpy as np
import scipy

import explorer
import fpformat
from explorer.accumulation import accumulation_png, accumulation_study
from explorer.blocks import CHANNEL_LOG2B
from explorer.laws import CapybaraLaw, choose_law
from explorer.progress import Progress
from explorer.units_study import designer_notes, unit_png, unit_study
from fpformat import get_format
from fpformat.files import atomic_write

from . import effects as fx
from . import figures as fig
from . import lawview
from . import recipes as rx
from .config import ReportConfig
from .document import (
    Bullets,
    Code,
    Document,
    Figure,
    Para,
    Section,
    Table,
    render_html,
    render_markdown,
)
from .formats import PROPERTY_HEADERS, differences, neighbours, properties_row, scale_sweep
from .runs import Run, load_runs


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written."""

    out_dir: Path
    markdown: Path
    html: Path
    figures: tuple[Path, ...]


@dataclass
class _Context:
    config: ReportConfig
    law: object
    law_source: str
    runs: list[Run] = field(default_factory=list)
    proposed: list = field(default_factory=list)       # FloatFormat per config.propose


def build_report(out_dir: str | Path, config: ReportConfig | None = None, *,
                 progress: bool = True) -> ReportPaths:
    """Write the recommendation report for ``config`` into ``out_dir`` (created if missing).

    Returns the paths of ``report.md``, the self-contained ``index.html`` and the figure files.
    Raises ValueError for a bad proposed format or law file, FileNotFoundError for a missing
    runs database or law file, and (before any work) the errors of :func:`check_report_dir`.

    Only the report's own files are written, each atomically (a temporary file renamed into
    place: a full disk leaves the previous report intact).  A symbolic link at one of those names
    is replaced by the new file, never followed; other files in ``out_dir`` are left alone.
    """
    config = config or ReportConfig()
    out = Path(out_dir)
    check_report_dir(out)
    chosen = choose_law(config.law, name="--law")
    law, source = chosen.law, chosen.citation
    proposed = []
    for spec in config.propose:
        f = get_format(spec)
        if not hasattr(f, "exp_bits"):
            raise ValueError(f"--propose {spec!r}: give an element format (e.g. 'e3m4b5'), "
                             f"not a block format")
        proposed.append(f)
    runs = load_runs(config.runs) if config.runs is not None else []
    ctx = _Context(config, law, source, runs, proposed)

    steps = [("summary", None), ("layouts", _section_layouts), ("critical data", _section_dcrit),
             ("precision", _section_precision), ("block size", _section_block),
             ("sqnr", _section_sqnr), ("pareto", _section_pareto)]
    steps += [(f"proposal {f}", _proposal_section(f)) for f in proposed]
    if config.accumulators:
        steps.append(("accumulation", _section_accumulation))
    if config.matrix_units:
        steps.append(("matrix units", _section_matrix_units))
    if runs:
        steps += [("sweep", _section_sweep), ("effects", _section_effects)]
        if len(rx.recipe_ids(runs)) >= rx.MIN_RECIPES:
            steps.append(("recipes", _section_recipes))
        steps.append(("fit", _section_fit))
    steps.append(("reproducibility", _section_repro))

    sections: list[Section] = []
    with Progress(len(steps), "fpx report", unit="step", enabled=progress) as bar:
        for name, fn in steps:
            if fn is not None:
                sections.append(fn(ctx))
            bar.update(1, step=name)
    sections.insert(0, _section_summary(ctx, sections))

    doc = Document(
        title="Number-format recommendation report",
        lead=(f"Which floating-point layout to build for each bit width, predicted with the "
              f"{source} and checked with the bit-exact fpformat emulator. Reference setting: "
              f"N = {_num(config.params)} parameters, D = {_num(config.tokens_or_default)} tokens, "
              f"{config.block_label}."),
        sections=sections)
    check_report_dir(out)                          # again: the computation took a while
    out.mkdir(parents=True, exist_ok=True)
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    fig_paths = []
    for f in doc.figures():
        p = out / f.filename
        _write(p, f.png)
        fig_paths.append(p)
    md = out / "report.md"
    _write(md, render_markdown(doc).encode("utf-8"))
    page = out / "index.html"                      # last: its presence means a whole report
    _write(page, render_html(doc).encode("utf-8"))
    return ReportPaths(out, md, page, tuple(fig_paths))


#: The subdirectory of the output directory that holds the figures.
FIGURES_DIR = "figures"


def check_report_dir(out: Path) -> None:
    """Refuse an output directory the report cannot own, before any work: ``out``, or the
    nearest of its parents that exists, is not a directory (``NotADirectoryError``);
    ``out/figures`` is not a directory (``NotADirectoryError``) or is a symbolic link, through
    which the figures would land outside ``out`` (``ValueError`` naming it)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory; give --out a new "
                                                "or an existing directory", str(out))
    existing = next((p for p in out.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory, so --out cannot "
                                                f"be created there", str(out))
    figs = out / FIGURES_DIR
    if figs.is_symlink():
        raise ValueError(f"--out {out}: {figs} is a symbolic link; the report writes only inside "
                         f"--out and will not follow it (remove the link or choose another --out)")
    if figs.exists() and not figs.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is not a directory (the report keeps its figures "
                                                "there); remove it or choose another --out",
                                 str(figs))


def _write(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


# ----------------------------------------------------------------------------------- helpers
def _num(x: float) -> str:
    """1.5e9 -> '1.5e9'; small integers plainly."""
    x = float(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    m, e = f"{x:.3g}".split("e") if "e" in f"{x:.3g}" else (f"{x:.3g}", "0")
    return f"{m}e{int(e)}"


def _gap(x: float) -> str:
    """A loss difference with a sign, readable from 1e-6 to 1."""
    return f"{x:+.4f}" if abs(x) >= 1e-3 else f"{x:+.1e}"


def _layout(e: int, m: int) -> str:
    return lawview.layout_name(e, m)


# ----------------------------------------------------------------------------------- sections
def _section_summary(ctx: _Context, sections: list[Section]) -> Section:
    c = ctx.config
    law = ctx.law
    items = []
    for P in c.bits:
        e, m = lawview.optimal_layout(law, P)
        items.append(f"**{P} bits:** build `{_layout(e, m)}` (E = {e}, M = {m}).")
    N = c.params
    P_opt = lawview.optimal_precision(law, c.budget, c.log2_block)
    items.append(f"**Compute-optimal precision** at budget C = {_num(c.budget)}: "
                 f"P ≈ {P_opt:.2f} bits.")
    for P in c.bits[:1] + c.bits[-1:] if len(c.bits) > 1 else c.bits:
        e, m = lawview.optimal_layout(law, P)
        dc = lawview.critical_data_size(law, N, e, m, c.log2_block)
        items.append(f"**Critical data size** of `{_layout(e, m)}` at N = {_num(N)}: "
                     f"D_crit = {_num(dc)} tokens (more data than this makes the loss worse).")
    for f in ctx.proposed:
        items.append(f"**Proposed `{f}`:** see its section.")
    s = Section("Summary", anchor="summary")
    s.add(Para("The headline numbers; each section below shows how they were obtained."),
          Bullets(tuple(items)))
    return s


def _section_layouts(ctx: _Context) -> Section:
    c, law = ctx.config, ctx.law
    N, D, lb = c.params, c.tokens_or_default, c.log2_block
    s = Section("Recommended layout per bit width", anchor="layouts")
    s.add(Para(f"For a total width of P bits (1 sign + E exponent + M mantissa bits), the law "
               f"predicts the training loss of every split; the best split is the same at any "
               f"N, D and block size (it maximises (E+0.5)^δ·(M+0.5)^ν), but how much a worse "
               f"split costs depends on them. Losses below are at N = {_num(N)}, "
               f"D = {_num(D)}, {c.block_label}; the loss without quantization would be "
               f"{lawview.floor_loss(law, N, D):.4f}."))
    rows = []
    for P in c.bits:
        ranked = lawview.ranked_layouts(law, P, N, D, lb)
        best = ranked[0]
        runners = ", ".join(f"`{_layout(e, m)}` {_gap(l - best[2])}" for e, m, l in ranked[1:4])
        rows.append((str(P), f"**`{_layout(best[0], best[1])}`**", f"{best[2]:.4f}",
                     runners or "—"))
    s.add(Table(("P (bits)", "best layout", "predicted loss", "runners-up (loss gap)"),
                tuple(rows), caption="Best (E, M) per width and the loss gap of the runners-up."))
    allp = range(2, 17)
    s.add(Table(tuple(["P"] + [str(p) for p in allp]),
                (tuple(["best"] + [_layout(*lawview.optimal_layout(law, p)) for p in allp]),),
                caption="Optimal layout for every width from 2 to 16 bits."))
    Es, Ms = np.arange(0, 9), np.arange(0, 11)
    grid = np.array([[lawview.loss(law, N, D, e, m, lb) for e in Es] for m in Ms])
    optima = {P: lawview.optimal_layout(law, P) for P in range(3, 17)}
    s.add(Figure("loss_heatmap", fig.loss_heatmap(
        Es, Ms, grid, lawview.floor_loss(law, N, D), optima,
        f"Predicted loss over (E, M) at N={_num(N)}, D={_num(D)}, {c.block_label}"),
        "Predicted loss for each exponent/mantissa split. Colour: how far above the unquantized "
        "loss (log scale); outlined: the best split for each total width P = E + M + 1."))
    labels, gaps = {}, {}
    for P in c.bits:
        ranked = lawview.ranked_layouts(law, P, N, D, lb)
        labels[P] = [_layout(e, m) for e, m, _ in ranked[1:5]]
        gaps[P] = [l - ranked[0][2] for _, _, l in ranked[1:5]]
    if any(gaps.values()):
        s.add(Figure("loss_gaps", fig.loss_gap_bars(labels, gaps,
                     "Loss gap of each runner-up to the best layout"),
                     "How much predicted loss each alternative split gives up (log scale)."))
    return s


def _section_dcrit(ctx: _Context) -> Section:
    c, law = ctx.config, ctx.law
    lb = c.log2_block
    Ns = np.logspace(7, 11, 41)
    layouts = _candidate_layouts(ctx)
    series = {name: np.array([lawview.critical_data_size(law, n, e, m, lb) for n in Ns])
              for name, (e, m) in layouts.items()}
    s = Section("Critical data size", anchor="critical-data-size")
    s.add(Para("With low-precision training, loss stops improving and then rises once the "
               "number of training tokens passes the critical data size D_crit: the quantization "
               "penalty grows with D. Train below D_crit, or spend bits on mantissa. The dotted "
               "line is the Chinchilla-optimal D = 20·N for comparison."))
    s.add(Figure("critical_data_size", fig.lines_loglog(
        Ns, series, xlabel="model size N (parameters)", ylabel="critical data size D_crit (tokens)",
        title=f"Critical data size against model size ({c.block_label})",
        marker_x=c.params, marker_label=f"N = {_num(c.params)}",
        reference=("D = 20·N", 20 * Ns), highlight=[str(f) for f in ctx.proposed]),
        "Critical data size per format: beyond this many tokens, more data hurts."))
    rows = [(f"`{name}`", str(e + m + 1), _num(lawview.critical_data_size(law, c.params, e, m, lb)))
            for name, (e, m) in layouts.items()]
    s.add(Table(("format", "P", f"D_crit at N = {_num(c.params)} (tokens)"), tuple(rows)))
    return s


def _candidate_layouts(ctx: _Context) -> dict[str, tuple[int, int]]:
    """Named (E, M) layouts the per-format figures show: the best per requested width, common
    standard layouts, and the proposed formats (the law sees only E and M)."""
    out: dict[str, tuple[int, int]] = {}
    for P in ctx.config.bits:
        e, m = lawview.optimal_layout(ctx.law, P)
        out[_layout(e, m)] = (e, m)
    for name, em in (("e2m1", (2, 1)), ("e2m3", (2, 3)), ("e3m2", (3, 2)), ("e4m3", (4, 3)),
                     ("e5m2", (5, 2))):
        out.setdefault(name, em)
    for f in ctx.proposed:
        out[str(f)] = (f.exp_bits, f.man_bits)
    return out


def _section_precision(ctx: _Context) -> Section:
    c, law = ctx.config, ctx.law
    lb = c.log2_block
    Cs = np.logspace(18, 27, 37)
    P = np.array([lawview.optimal_precision(law, C, lb) for C in Cs])
    s = Section("Compute-optimal precision", anchor="precision")
    s.add(Para("For a fixed compute budget C = k·P·N·D (k = 6/16: a P-bit multiply costs P/16 of "
               "a 16-bit one), fewer bits buy a larger model or more data; more bits buy a smaller "
               "quantization penalty. The law puts the optimum between 4 and 8 bits across many "
               "orders of magnitude of compute."))
    s.add(Figure("optimal_precision", fig.precision_vs_budget(
        Cs, P, (4, 8), f"Compute-optimal precision against budget ({c.block_label})",
        marker_C=c.budget, P_int=np.round(P)),
        "Precision that minimises predicted loss at each budget; the green band is 4–8 bits."))
    budgets = sorted(set([1e20, 1e22, 1e24, 1e26, c.budget]))
    rows = []
    for C in budgets:
        p = lawview.optimal_precision(law, C, lb)
        e, m = lawview.optimal_layout(law, int(round(p)))
        rows.append((_num(C) + (" (yours)" if C == c.budget else ""), f"{p:.2f}",
                     str(int(round(p))), f"`{_layout(e, m)}`"))
    s.add(Table(("budget C", "optimal P", "nearest integer P", "its best layout"), tuple(rows)))
    return s


_BLOCKS = (16, 32, 64, 128, 256, 512)


def _section_block(ctx: _Context) -> Section:
    c, law = ctx.config, ctx.law
    N, D = c.params, c.tokens_or_default
    lbs = np.array([np.log2(b) for b in _BLOCKS] + [CHANNEL_LOG2B])
    ticks = [str(b) for b in _BLOCKS] + ["channel"]
    floor = lawview.floor_loss(law, N, D)
    layouts = {n: em for n, em in _candidate_layouts(ctx).items()}
    series = {n: np.array([lawview.loss(law, N, D, e, m, lb) - floor for lb in lbs])
              for n, (e, m) in layouts.items()}
    s = Section("Block-size effect", anchor="block-size")
    s.add(Para("Smaller scaling blocks (more scale factors, each covering fewer elements) track "
               "local magnitudes better. In the law the quantization penalty is proportional to "
               "log2 B, so halving the block size removes a fixed fraction of the penalty; "
               "channel-wise scaling acts like log2 B ≈ 13.2. The cost is one scale per block "
               "(e.g. 8 bits per 32 elements = 0.25 bits per element for MX formats)."))
    s.add(Figure("block_size", fig.block_effect(
        lbs, ticks, series, "predicted loss − unquantized loss",
        f"Quantization penalty against block size (N={_num(N)}, D={_num(D)})"),
        "Predicted loss penalty per format as the scaling block grows."))
    rows = []
    for n, (e, m) in layouts.items():
        rows.append((f"`{n}`",) + tuple(f"{v:.4f}" for v in series[n]))
    s.add(Table(("format",) + tuple(f"B={t}" for t in ticks), tuple(rows),
                caption="Predicted loss penalty (loss − unquantized loss) per block size."))
    return s


def _section_sqnr(ctx: _Context) -> Section:
    c = ctx.config
    names = _sqnr_formats(ctx)
    res = lawview.sqnr_table(names, c.sqnr_samples, c.seed)
    s = Section("Measured quantization error (SQNR)", anchor="sqnr")
    s.add(Para(f"Signal-to-quantization-noise ratio, 10·log10(Σx²/Σ(x−q(x))²) in dB (higher is "
               f"better, +6 dB per mantissa bit), measured with the bit-exact emulator on "
               f"{c.sqnr_samples} samples per distribution (seed {c.seed}), round-to-nearest-even; "
               f"data scaled so that max|x| maps to the format's max (per tensor), and with one "
               f"float32 scale per 32 elements. Student-t has 3 degrees of freedom: heavy tails, "
               f"like activations and gradients."))
    groups = list(res.columns)
    series = {n: [res.values[n][g] for g in groups] for n in names}
    s.add(Figure("sqnr", fig.grouped_bars(groups, series, "SQNR (dB)",
                                          "SQNR of candidate formats",
                                          highlight=[str(f) for f in ctx.proposed]),
                 "Measured SQNR per distribution and scaling (bars grouped by test case)."))
    rows = [(f"`{n}`", str(_bits(n))) + tuple(f"{res.values[n][g]:.2f}" for g in groups)
            for n in names]
    s.add(Table(("format", "bits") + tuple(groups), tuple(rows), caption="SQNR in dB."))
    return s


def _bits(name: str) -> int:
    return get_format(name).bits


def _sqnr_formats(ctx: _Context) -> list[str]:
    names = []
    for P in ctx.config.bits:
        e, m = lawview.optimal_layout(ctx.law, P)
        names.append(_layout(e, m))
    for n in ("float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "float8_e4m3fn", "float8_e5m2"):
        if n not in names:
            names.append(n)
    names += [str(f) for f in ctx.proposed if str(f) not in names]
    return names


def _section_pareto(ctx: _Context) -> Section:
    c, law = ctx.config, ctx.law
    N, D, lb = c.params, c.tokens_or_default, c.log2_block
    pts: dict[str, tuple[float, float]] = {}
    for P in range(4, 9):
        for e in range(1, P - 1):
            m = P - 1 - e
            pts[_layout(e, m)] = (lawview.hw_cost(e, m), lawview.loss(law, N, D, e, m, lb))
    for f in ctx.proposed:
        pts[str(f)] = (lawview.hw_cost(f.exp_bits, f.man_bits),
                       lawview.loss(law, N, D, f.exp_bits, f.man_bits, lb))
    front = lawview.pareto_front(pts)
    s = Section("Accuracy against hardware cost", anchor="pareto")
    s.add(Para(f"Each point is one layout from 4 to 8 bits: the hardware-cost proxy of a "
               f"multiply-accumulate in that format ({lawview.hw_cost_doc()}) against the "
               f"predicted loss. Layouts on the green line are Pareto-optimal: nothing is both "
               f"cheaper and more accurate."))
    s.add(Figure("pareto", fig.pareto(pts, front, xlabel="hardware cost proxy (relative area)",
                                      ylabel="predicted loss", title="Accuracy/cost trade-off",
                                      highlight=[str(f) for f in ctx.proposed]),
                 "Predicted loss against hardware cost; the Pareto front in green."))
    s.add(Para("Pareto-optimal layouts: " + ", ".join(f"`{n}`" for n in front) + "."))
    return s


def _section_accumulation(ctx: _Context) -> Section:
    """Accumulation error of the dot-product unit against K and accumulator width."""
    study = accumulation_study(ctx.config.accumulators, seed=ctx.config.seed, progress=False)
    s = Section("Accumulator precision", anchor="accumulation")
    s.add(Para("A format is half of a chip's numerics; the other half is how its multiply-"
               "accumulate unit rounds. Each line is one accumulator (format / rounding / "
               "promotion), emulated bit-exactly by `fpformat.gemm`: products of e4m3 Gaussian "
               "operands are exact, each addition is rounded into the accumulator, and with "
               "`chunkN` the partial sum is promoted into float32 every N products (the scheme "
               "DeepSeek-V3 used on Hopper's FP8 tensor cores). The error is normalised by the "
               "sum of |products|; a rising line means rounding errors pile up with K."))
    s.add(Figure("accumulation", accumulation_png(study),
                 "Median normalised accumulation error against dot-product length K; dotted: "
                 "each accumulator's unit roundoff."))
    s.add(Table(("accumulator", "K", "median err / Σ|p|", "p95 err / Σ|p|", "median rel. err"),
                tuple((f"`{p.accumulator}`", str(p.k), f"{p.median_normalized:.2e}",
                       f"{p.p95_normalized:.2e}", f"{p.median_relative:.2e}")
                      for p in study.points),
                caption=f"{study.trials}² dot products per point, {study.element_format} operands, "
                        f"seed {study.seed}."))
    return s


def _section_matrix_units(ctx: _Context) -> Section:
    """Dot-product error of matrix units (tensor cores, presets or proposals) against K."""
    c = ctx.config
    study = unit_study(c.matrix_units, in_format=c.matrix_unit_format, seed=c.seed)
    s = Section("Matrix units", anchor="matrix-units")
    s.add(Para("A tensor core does not round each addition the way a scalar multiply-accumulate "
               "does: it multiplies a block of `fma` pairs exactly, aligns every product (and the "
               "running sum, its addend) to the block's largest exponent, keeps a window of a "
               "fixed number of fraction bits below it (truncating the rest), adds the aligned "
               "significands as integers and rounds the block's result once. Each line is one "
               "unit emulated bit-exactly by `fpformat.gemm.mma` (presets reproduce measured "
               "V100, A100 and H100 outputs bit for bit; docs/gemm.md): Gaussian operands "
               f"rounded into {study.in_format}, K cut into the unit's blocks, each block's "
               f"{study.out_format} result the next block's addend, compared with the exact dot "
               "product."))
    s.add(Figure("matrix_units", unit_png(study),
                 "Median relative error of the dot product against K, one line per unit; "
                 "dotted: each unit's result unit roundoff."))
    s.add(Table(("unit", "spec", "K", "median rel. err", "p95 rel. err", "median err / Σ|p|"),
                tuple((f"`{p.unit}`", f"`{p.spec}`", str(p.k), f"{p.median_relative:.2e}",
                       f"{p.p95_relative:.2e}", f"{p.median_normalized:.2e}")
                      for p in study.points),
                caption=f"{study.trials}² dot products per point, {study.in_format} operands, "
                        f"{study.out_format} results, seed {study.seed}. Spec: "
                        "fma<products per block>/x<window bits beyond 23>/<result rounding>"
                        "[/p<result bits>][/min<lowest anchor exponent>]."))
    s.add(Para("What the differences mean for a designer:"))
    s.add(Bullets(tuple(designer_notes(study))))
    return s


def _section_effects(ctx: _Context) -> Section:
    """The measured effects of the runs (paired differences, loss against D) beside the law's
    predictions (:mod:`explorer.report.effects`)."""
    s = fx.section(ctx.runs, ctx.law, ctx.law_source)
    if s is None:
        s = Section("Measured effects", anchor="effects")
        s.add(Para("The runs hold no paired comparison (two runs of the same N, D and seed that "
                   "differ only in format or block size, or a format and the unquantized run) "
                   "and no format measured at three or more D, so no effect can be measured."))
    return s


def _section_recipes(ctx: _Context) -> Section:
    """Recipes side by side and against the unquantized run (:mod:`explorer.report.recipes`);
    only built when the runs hold two or more recipes."""
    s = rx.section(ctx.runs)
    if s is None:
        raise ValueError(f"the runs hold fewer than {rx.MIN_RECIPES} recipes: no Recipes "
                         "section to build")
    return s


def _proposal_section(f):
    def build(ctx: _Context) -> Section:
        return _section_proposal(ctx, f)
    return build


def _section_proposal(ctx: _Context, f) -> Section:
    c, law = ctx.config, ctx.law
    N, D, lb = c.params, c.tokens_or_default, c.log2_block
    name = str(f)
    slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    nbrs = neighbours(f)
    s = Section(f"Proposed format {name}", anchor=f"proposal-{slug}")
    e, m = f.exp_bits, f.man_bits
    P = e + m + 1
    best = lawview.optimal_layout(law, P)
    ranked = lawview.ranked_layouts(law, P, N, D, lb)
    mine = lawview.loss(law, N, D, e, m, lb)
    rank = 1 + sum(1 for _, _, l in ranked if l < mine - 1e-15)
    verdict = ("is the law's optimal split for its width" if (e, m) == tuple(best) else
               f"is ranked {rank} of {len(ranked)} splits for {P} bits; the optimum is "
               f"`{_layout(*best)}` (predicted loss gap {mine - ranked[0][2]:+.3g})")
    s.add(Para(f"`{name}`: {f.bits} bits, E = {e}, M = {m}, bias {f.bias}, max {f.max:g}, "
               f"smallest positive {f.min_subnormal:g}. Its E/M split {verdict}. The scaling law "
               f"sees only E and M; the bias and special-value layout matter when data are not "
               f"rescaled (see the SQNR-against-scale figure)."))
    rows = [properties_row(name)] + [properties_row(n) for n in nbrs]
    s.add(Table(PROPERTY_HEADERS, tuple(rows), caption=f"`{name}` beside its standard neighbours."))
    s.add(Bullets(tuple(f"vs `{n}`: {differences(f, _fmt(n))}" for n in nbrs)))
    grids = {name: f.values()}
    grids.update({n: _fmt(n).values() for n in nbrs})
    s.add(Figure(f"value_grid_{slug}", fig.value_grids(
        grids, f"Representable positive values: {name} and its neighbours", highlight=[name]),
        f"Every positive value of `{name}` (red) and of its standard neighbours on a log2 axis."))
    sweep = scale_sweep([name] + nbrs[:4], max(c.sqnr_samples // 8, 256), c.seed)
    s.add(Figure(f"sqnr_scale_{slug}", fig.lines_loglog(
        2.0 ** sweep.log2_sigma, sweep.sqnr_db,
        xlabel="standard deviation σ of unscaled Gaussian data", ylabel="SQNR (dB)",
        title=f"SQNR against input scale, no scaling factor ({name})", highlight=[name],
        logy=False),
        "Where each format is accurate without a scale factor: the plateau width is the usable "
        "dynamic range, its height the precision, its position the bias."))
    pts = {}
    for Pq in sorted({P, 4, 6, 8}):
        for ee in range(1, Pq - 1):
            pts[_layout(ee, Pq - 1 - ee)] = (lawview.hw_cost(ee, Pq - 1 - ee),
                                             lawview.loss(law, N, D, ee, Pq - 1 - ee, lb))
    pts[name] = (lawview.hw_cost(e, m), mine)
    front = lawview.pareto_front(pts)
    cost = pts[name][0]
    beaters = [n for n, (cx, lx) in pts.items()
               if n != name and cx <= cost and lx <= mine and (cx, lx) != pts[name]]
    if name in front:
        where = "lies on the Pareto front: no layout is both cheaper and more accurate."
    elif beaters:
        where = ("is not on the Pareto front: " + ", ".join(f"`{n}`" for n in beaters[:4])
                 + " " + ("is" if len(beaters) == 1 else "are") + " at most as costly and at "
                 "least as accurate.")
    else:
        where = "is not on the Pareto front (a layout with the same E and M is listed first)."
    s.add(Para(f"On the accuracy/cost plane (hardware-cost proxy {cost:.3g}, predicted loss "
               f"{mine:.4f}; see the Pareto figure) `{name}` {where}"))
    cmd = f"fpx vectors --format {name} --rounding rne --count 1000 --seed 0 --out vectors.csv"
    s.add(Para("Golden vectors for RTL verification (inputs, expected codes and values, "
               "bit-exact):"), Code(cmd))
    return s


def _fmt(name: str):
    return get_format(name)


def _section_sweep(ctx: _Context) -> Section:
    runs = ctx.runs
    s = Section("Measured sweep", anchor="sweep")
    curves = {f"{r.label} N={_num(r.n_params)}": (np.array([t for t, _ in r.curve]),
                                                  np.array([v for _, v in r.curve]))
              for r in runs if r.curve}
    n_recipe = sum(r.recipe is not None for r in runs)
    s.add(Para(f"{len(runs)} finished runs from `{ctx.config.runs}` "
               f"({sum(r.quantized for r in runs)} quantized"
               + (f" with one format, {n_recipe} with a training recipe" if n_recipe else "")
               + ")."))
    if curves:
        s.add(Figure("sweep_curves", fig.sweep_curves(curves, "Validation loss during training"),
                     "Validation loss against tokens for every run in the database."))
    rows = tuple((r.key[:12], _num(r.n_params), _num(r.tokens),
                  r.fmt if r.recipe is None else r.label, r.block or "—",
                  f"{r.val_loss:.4f}") for r in runs)
    s.add(Table(("run", "N", "D", "format", "block", "val loss"), rows))
    return s


def _section_fit(ctx: _Context) -> Section:
    s = Section("Fit diagnostics", anchor="fit")
    s.add(*lawview.fit_blocks(ctx.runs, CapybaraLaw.paper(), ctx.config.fit_bootstrap,
                              ctx.config.seed))
    return s


def _section_repro(ctx: _Context) -> Section:
    c = ctx.config
    s = Section("Reproducibility", anchor="reproducibility")
    consts = lawview.constants(ctx.law)
    s.add(Para(f"Law: {ctx.law_source}."))
    s.add(Table(("constant", "value"), tuple((k, f"{v:.6g}") for k, v in consts.items()),
                caption="Constants of the law used for every prediction in this report."))
    s.add(Para("Command line that produced this report:"),
          Code(c.command_line or "fpx report " + " ".join(shlex.quote(a) for a in sys.argv[1:])))
    s.add(Table(("item", "value"), tuple(_versions()),
                caption="Software versions and date."))
    return s


def _versions() -> list[tuple[str, str]]:
    rows = [("date (UTC)", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")),
            ("python", platform.python_version()), ("platform", platform.platform()),
            ("explorer", explorer.__version__), ("fpformat", fpformat.__version__),
            ("numpy", np.__version__), ("numba", numba.__version__), ("scipy", scipy.__version__),
            ("matplotlib", matplotlib.__version__)]
    try:
        rows.insert(3, ("fpx-explorer (installed)", md.version("fpx-explorer")))
    except md.PackageNotFoundError:
        pass
    return rows
