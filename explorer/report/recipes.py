"""Training recipes side by side: the report's "Recipes" section.

A recipe run (``fpx train --recipe``, or a sweep's ``recipe`` axis) quantizes its GEMM inputs
with several formats, block shapes, roundings and transforms at once, so it has no single E/M:
it is neither a point of the format law nor the unquantized baseline (:attr:`Run.baseline`).
This section compares recipes with each other and with the unquantized run directly.

A recipe is identified by its name *and* its content hash (16 hex digits over what it does,
:attr:`explorer.train.recipes.Recipe.content_hash`): two runs of a recipe file edited between
them are two recipes.  For each cell (model size N, training tokens D) holding recipe runs, one
table: per recipe, the GEMM inputs it quantizes, its final validation loss (mean over seeds, with
a two-sided 95 % Student-t interval from two seeds on: :func:`explorer.report.effects.
mean_interval`) and its paired difference to the unquantized run of the same N, D and seed.
Losses are validation cross-entropy in nats per token.  Figures are PNG bytes drawn like those of
:mod:`explorer.report.figures` (Agg canvas, no pyplot, reproducible).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import effects as fx
from . import figures as fig
from .document import Figure, Para, Section, Table
from .runs import Run

#: Fewest distinct recipes (name, hash) for which the report has a "Recipes" section.
MIN_RECIPES = 2


@dataclass(frozen=True)
class RecipeCell:
    """One recipe in one cell (N, D): its runs' final validation losses over seeds
    (:class:`~explorer.report.effects.Interval`; ``values`` in seed order) and the paired
    differences to the unquantized run of the same (N, D, seed) (``gap``: None when no seed of
    it has one)."""

    recipe: str
    recipe_hash: str | None
    targets: str | None
    n_params: int
    tokens: int
    loss: fx.Interval
    values: tuple[float, ...]
    gap: fx.Interval | None
    diffs: tuple[float, ...] = ()


def recipe_ids(runs: Sequence[Run]) -> list[tuple[str, str | None]]:
    """The distinct recipes of ``runs`` as sorted ``(name, hash)`` pairs."""
    return sorted({(r.recipe, r.recipe_hash) for r in runs if r.recipe is not None},
                  key=lambda k: (k[0], k[1] or ""))


def _seed_order(r: Run) -> int:
    return -1 if r.seed is None else r.seed


def cells(runs: Sequence[Run]) -> list[RecipeCell]:
    """Every (N, D, recipe) measured, sorted by N, D and recipe name: its loss over seeds and its
    paired gap to the baseline (runs without a recorded seed pair with each other, as in
    :mod:`explorer.report.effects`)."""
    base = {(r.n_params, r.tokens, r.seed): r for r in runs if r.baseline}
    groups: dict = defaultdict(list)
    for r in runs:
        if r.recipe is not None:
            groups[(r.n_params, r.tokens, r.recipe, r.recipe_hash)].append(r)
    out = []
    for (n, d, name, digest), rs in groups.items():
        rs = sorted(rs, key=_seed_order)
        values = tuple(r.val_loss for r in rs)
        diffs = tuple(r.val_loss - base[(n, d, r.seed)].val_loss for r in rs
                      if (n, d, r.seed) in base)
        out.append(RecipeCell(name, digest, rs[0].targets, n, d, fx.mean_interval(values),
                              values, fx.mean_interval(diffs) if diffs else None, diffs))
    out.sort(key=lambda c: (c.n_params, c.tokens, c.recipe, c.recipe_hash or ""))
    return out


def _labels(ids: Sequence[tuple[str, str | None]]) -> dict[tuple[str, str | None], str]:
    """How the figures and tables name each recipe: its name, with its hash where two recipes
    share the name."""
    count: dict = defaultdict(int)
    for name, _ in ids:
        count[name] += 1
    return {(name, h): name if count[name] == 1 else f"{name} ({h or '?'})" for name, h in ids}


# ----------------------------------------------------------------------------------- figure
def recipes_png(runs: Sequence[Run], title: str) -> bytes:
    """Left: the validation-loss curves of every recipe (and the unquantized run, black dashed)
    at the largest N and, there, the largest D with recipe runs (one line per seed, one colour
    per recipe).  Right, where that N has recipe runs at two or more D: final validation loss
    against D per recipe (mean over seeds; open circles: each seed), the unquantized run in
    black."""
    ids = recipe_ids(runs)
    labels = _labels(ids)
    color = {k: fig._COLORS[i % len(fig._COLORS)] for i, k in enumerate(ids)}
    rec = [r for r in runs if r.recipe is not None]
    n_max = max(r.n_params for r in rec)
    d_max = max(r.tokens for r in rec if r.n_params == n_max)
    at_n = [r for r in runs if r.n_params == n_max and (r.recipe is not None or r.baseline)]
    ds = sorted({r.tokens for r in at_n if r.recipe is not None})
    f, axes = fig._new(10.0 if len(ds) > 1 else 6.4, 4.2, ncols=2 if len(ds) > 1 else 1)
    a1 = axes[0]
    drawn: set = set()
    for r in sorted((r for r in at_n if r.tokens == d_max and r.curve), key=_seed_order):
        key = None if r.recipe is None else (r.recipe, r.recipe_hash)
        t, v = zip(*r.curve)
        name = "unquantized" if key is None else labels[key]
        a1.plot(t, v, color="black" if key is None else color[key],
                linestyle="--" if key is None else "-", linewidth=1.2,
                label=None if name in drawn else name)
        drawn.add(name)
    a1.set_xscale("log")
    a1.set_xlabel("training tokens seen")
    a1.set_ylabel("validation loss (nats/token)")
    a1.set_title(f"Validation loss during training, N = {fx._si(n_max)}, D = {fx._si(d_max)}",
                 fontsize=9)
    if len(ds) > 1:
        a2 = axes[1]
        series = [(k, [r for r in at_n if r.recipe is not None
                       and (r.recipe, r.recipe_hash) == k]) for k in ids]
        series.append((None, [r for r in at_n if r.baseline and r.tokens in ds]))
        for key, rs in series:
            by_d: dict = defaultdict(list)
            for r in sorted(rs, key=_seed_order):
                by_d[r.tokens].append(r.val_loss)
            if not by_d:
                continue
            x = sorted(by_d)
            col = "black" if key is None else color[key]
            a2.plot(x, [float(np.mean(by_d[d])) for d in x], marker="o", ms=4, color=col,
                    linestyle="--" if key is None else "-",
                    label="unquantized" if key is None else labels[key])
            for d in x:
                fx._seed_dots(a2, d, by_d[d], col)
        fx._d_axis(a2, ds)
        a2.set_xlabel("training tokens D")
        a2.set_ylabel("final validation loss (nats/token)")
        a2.set_title(f"Loss against D, N = {fx._si(n_max)}", fontsize=9)
    for ax in axes:
        ax.grid(True, alpha=.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5)
    f.suptitle(title, fontsize=10)
    return fig.to_png(f)


# ----------------------------------------------------------------------------------- section
def _loss(iv: fx.Interval) -> str:
    if iv.n < 2:
        return f"{iv.mean:.4f}"
    return f"{iv.mean:.4f} [{iv.lo:.4f}, {iv.hi:.4f}]"


def _gap(c: RecipeCell) -> str:
    if c.gap is None:
        return "— (no unquantized run of the same N, D and seed)"
    return fx._fmt_iv(c.gap)


def section(runs: Sequence[Run]) -> Section | None:
    """The "Recipes" section: per cell (N, D) with recipe runs, a table of every recipe (name,
    content hash, quantized GEMM inputs, seeds, final validation loss, paired difference to the
    unquantized run) and one figure (:func:`recipes_png`).  None when the runs hold fewer than
    :data:`MIN_RECIPES` distinct recipes: there is nothing to compare."""
    ids = recipe_ids(runs)
    if len(ids) < MIN_RECIPES:
        return None
    labels = _labels(ids)
    all_cells = cells(runs)
    base = defaultdict(list)
    for r in runs:
        if r.baseline:
            base[(r.n_params, r.tokens)].append(r.val_loss)
    s = Section("Recipes", anchor="recipes")
    s.add(Para(
        f"{len(ids)} training recipes were run ({', '.join(f'`{labels[k]}`' for k in ids)}). "
        "A recipe quantizes each GEMM input with its own format, block shape, rounding and "
        "transform, so its runs have no single exponent/mantissa split: they are compared here "
        "with each other and with the unquantized run, and left out of the format law's fit and "
        "of the measured format effects. A recipe is named with its content hash (16 hex "
        "digits of what it does): runs with one name and two hashes ran two different recipes. "
        "The difference to the unquantized run is paired: the recipe run minus the unquantized "
        "run with the same N, D and seed (the same initialisation and data order); from two "
        "seeds on, 95 % Student-t intervals over seeds are given in brackets."))
    s.add(Figure("recipes", recipes_png(runs, "Training recipes"),
                 "Validation loss of each recipe at the largest model size and token count "
                 "run with recipes (one line per seed; the unquantized run dashed black) and, "
                 "where that model size was run at several D, final loss against D."))
    for n, d in sorted({(c.n_params, c.tokens) for c in all_cells}):
        rows = [(f"`{labels[(c.recipe, c.recipe_hash)]}`", f"`{c.recipe_hash or '?'}`",
                 fx._targets(c.targets), str(c.loss.n), _loss(c.loss), _gap(c))
                for c in all_cells if (c.n_params, c.tokens) == (n, d)]
        if base.get((n, d)):
            iv = fx.mean_interval(base[(n, d)])
            rows.append(("unquantized", "—", "—", str(iv.n), _loss(iv), "—"))
        s.add(Table(("recipe", "hash", "quantized GEMM inputs", "seeds", "final val loss",
                     "− unquantized (paired)"), tuple(rows),
                    caption=f"Recipes at N = {fx._si(n)}, D = {fx._si(d)} (nats/token)."))
    return s
