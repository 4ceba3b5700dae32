"""Format recommendations: the best exponent/mantissa split per bit width, with evidence.

For each total width P (sign + E + M) every split is ranked by the loss a scaling law predicts for
the user's model size N, tokens D and scaling block B.  The ranking itself does not depend on N,
D or B (the quantization penalty is proportional to 1/((E+0.5)^δ (M+0.5)^ν)); the *gaps* between
the best split and the runners-up do, so they are stated at the user's setting.  Beside the law:
the critical data size of each candidate at N, the compute-optimal precision for a budget, a
hardware-cost proxy (:mod:`explorer.hwcost`), the accuracy/cost Pareto front, and optionally
measured emulator facts (:mod:`explorer.metrics`).

Everything returns frozen dataclasses with ``to_dict()`` for JSON.  Layouts are named ``"e2m1"``
and carry ``exp_bits`` / ``man_bits`` fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import hwcost
from .laws import DEFAULT_K, CapybaraLaw, ComputeOptimum, layout_name, log2_block
from .metrics import format_metrics

DEFAULT_BITS = tuple(range(3, 17))
DEFAULT_PARAMS = 1e9
TOKENS_PER_PARAM = 20.0
MEASURE_BLOCK = 32


@dataclass(frozen=True)
class Candidate:
    """One (E, M) layout of a width.  ``predicted_loss`` in nats/token at the recommendation's
    (N, D, B); ``loss_gap`` = its loss minus the best of the same width (0 for the best);
    ``critical_data_size`` in tokens at N; ``hw_cost`` relative MAC area (E4M3 = 1)."""

    name: str
    exp_bits: int
    man_bits: int
    bits: int
    rank: int
    predicted_loss: float
    loss_gap: float
    critical_data_size: float
    hw_cost: float
    metrics: Any = None          # explorer.metrics.FormatMetrics when measured

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "exp_bits", "man_bits", "bits", "rank",
                                           "predicted_loss", "loss_gap", "critical_data_size",
                                           "hw_cost")}
        if not np.isfinite(self.critical_data_size):
            d["critical_data_size"] = None
        if self.metrics is not None:
            d["metrics"] = self.metrics.to_dict()
        return d


@dataclass(frozen=True)
class WidthRecommendation:
    """The best layout of ``bits`` total bits and its runners-up (best first)."""

    bits: int
    best: Candidate
    runners_up: tuple[Candidate, ...]

    def to_dict(self) -> dict:
        return {"bits": self.bits, "best": self.best.to_dict(),
                "runners_up": [c.to_dict() for c in self.runners_up]}


@dataclass(frozen=True)
class Recommendation:
    """Everything ``fpx recommend`` prints.  ``pareto`` names the layouts (among every split of
    every requested width) that no other layout beats in both hardware cost and predicted loss,
    cheapest first."""

    law: CapybaraLaw
    law_source: str
    params: float
    tokens: float
    block: str
    log2_block: float
    base_loss: float
    widths: tuple[WidthRecommendation, ...]
    compute: ComputeOptimum | None
    pareto: tuple[str, ...]
    hw_model: hwcost.HwCostModel

    def best(self, bits: int) -> Candidate:
        for w in self.widths:
            if w.bits == bits:
                return w.best
        raise KeyError(f"bits: {bits} was not requested")

    def to_dict(self) -> dict:
        return {
            "law": {"source": self.law_source, "constants": self.law.to_dict()},
            "params": self.params, "tokens": self.tokens, "block": self.block,
            "log2_block": self.log2_block, "base_loss": self.base_loss,
            "widths": [w.to_dict() for w in self.widths],
            "compute_optimal": None if self.compute is None else self.compute.to_dict(),
            "pareto_front": list(self.pareto),
            "hw_cost": {"source": hwcost.SOURCE, "model": self.hw_model.to_dict()},
        }


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points that no other point beats in both coordinates (cost, error), lower
    being better in each; sorted by cost (ties by error)."""
    order = sorted(points, key=lambda n: points[n])
    front, best = [], np.inf
    for name in order:
        if points[name][1] < best:
            front.append(name)
            best = points[name][1]
    return front


def _block_label(block: Any) -> str:
    if isinstance(block, str):
        return block.strip().lower()
    return str(int(block)) if float(block) == int(block) else str(block)


def recommend(bits: Iterable[int] = DEFAULT_BITS, block: Any = "channel",
              law: CapybaraLaw | None = None, law_source: str | None = None,
              params: float | None = None, tokens: float | None = None,
              budget: float | None = None, k: float = DEFAULT_K, runners_up: int = 2,
              measure: bool = False, samples: int = 16384, seed: int = 0,
              hw_model: hwcost.HwCostModel = hwcost.DEFAULT_MODEL,
              tensors: dict[str, np.ndarray] | None = None) -> Recommendation:
    """Recommend a layout for each width in ``bits`` (each >= 1; a split may have E = 0).

    ``params`` N (default 1e9) and ``tokens`` D (default 20 N, Chinchilla's tokens per
    parameter) set the predicted losses, gaps and critical data sizes; ``block`` is
    the scaling block (int, ``'channel'`` or ``'tensor'``); ``budget`` C (k·P·N·D units) adds
    the compute-optimal precision; ``measure`` adds emulator metrics (SQNR/MSE per tensor and per
    ``block`` if it is an int, else per 32) on ``samples`` seeded values per distribution and on
    ``tensors``."""
    law = law or CapybaraLaw.paper()
    source = law_source or ("paper" if law == CapybaraLaw.paper() else "custom")
    widths = _check_bits(bits)
    if isinstance(runners_up, bool) or int(runners_up) < 0:
        raise ValueError(f"runners_up: expected an integer >= 0, got {runners_up!r}")
    params = DEFAULT_PARAMS if params is None else _positive("params", params)
    tokens = _positive("tokens", tokens) if tokens is not None else TOKENS_PER_PARAM * params
    lb = float(log2_block(block))
    label = _block_label(block)
    mblock = int(block) if not isinstance(block, str) or label.isdigit() else MEASURE_BLOCK
    compute = None
    if budget is not None:
        compute = law.optimal_precision(_positive("budget", budget), block,
                                        k=_positive("k", k))

    def candidate(e: int, m: int, rank: int, best_loss: float | None) -> Candidate:
        loss = float(law.loss(params, tokens, e, m, block))
        met = None
        if measure:
            met = format_metrics(layout_name(e, m), samples=samples, seed=seed, block=mblock,
                                 tensors=tensors)
        return Candidate(name=layout_name(e, m), exp_bits=e, man_bits=m, bits=e + m + 1, rank=rank,
                         predicted_loss=loss,
                         loss_gap=0.0 if best_loss is None else loss - best_loss,
                         critical_data_size=float(law.critical_data_size(params, e, m, block)),
                         hw_cost=hw_model.cost(e, m), metrics=met)

    out = []
    points: dict[str, tuple[float, float]] = {}
    for P in widths:
        ranked = law.ranked_layouts(P)
        best = candidate(*ranked[0], rank=1, best_loss=None)
        others = tuple(candidate(e, m, rank=i + 2, best_loss=best.predicted_loss)
                       for i, (e, m) in enumerate(ranked[1:1 + int(runners_up)]))
        out.append(WidthRecommendation(bits=P, best=best, runners_up=others))
        for e, m in ranked:
            points[layout_name(e, m)] = (hw_model.cost(e, m),
                                         float(law.loss(params, tokens, e, m, block)))
    return Recommendation(law=law, law_source=source, params=params, tokens=tokens, block=label,
                          log2_block=lb, base_loss=float(law.base_loss(params, tokens)),
                          widths=tuple(out), compute=compute, pareto=tuple(pareto_front(points)),
                          hw_model=hw_model)


def _check_bits(bits: Iterable[int]) -> list[int]:
    if isinstance(bits, (int, np.integer)):
        bits = [bits]
    out: list[int] = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"bits: expected integers, got {b!r}")
        if not 1 <= b <= 64:
            raise ValueError(f"bits: each width must be in 1..64, got {b}")
        if int(b) not in out:
            out.append(int(b))
    if not out:
        raise ValueError("bits: give at least one width")
    return out


def _positive(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {v!r}") from None
    if not np.isfinite(f) or f <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {v!r}")
    return f


def format_text(rec: Recommendation) -> str:
    """The human-readable table ``fpx recommend`` prints."""
    lines = [f"law: {rec.law_source}   N = {rec.params:.3g} params   "
             f"D = {rec.tokens:.3g} tokens   block = {rec.block} "
             f"(log2 B = {rec.log2_block:.4g})   unquantized loss = {rec.base_loss:.4f}",
             "",
             f"{'P':>3}  {'best':<7} {'loss':>8} {'D_crit':>10} {'cost':>6}  "
             "runners-up (loss gap, nats)"]
    for w in rec.widths:
        b = w.best
        ru = ", ".join(f"{c.name} (+{c.loss_gap:.2e})" for c in w.runners_up) or "-"
        dc = f"{b.critical_data_size:.3g}" if np.isfinite(b.critical_data_size) else "inf"
        lines.append(f"{w.bits:>3}  {b.name:<7} {b.predicted_loss:>8.4f} {dc:>10} "
                     f"{b.hw_cost:>6.2f}  {ru}")
        if b.metrics is not None:
            s = b.metrics.sqnr_db
            lines.append("     SQNR dB " + "  ".join(f"{k} {v:.1f}" for k, v in s.items())
                         + f"   range {b.metrics.dynamic_range_log2:.1f} binades")
    if rec.compute is not None:
        c = rec.compute
        e, m = c.layout
        lines += ["", f"compute-optimal at C = {c.C:.3g} (k = {c.k:.4g}): P = {c.P:.2f} bits, "
                      f"N = {c.N:.3g}, D = {c.D:.3g}, loss = {c.loss:.4f} (real-valued layout)",
                  f"  best integer width: {c.P_int} bits, {layout_name(e, m)}, N = {c.N_int:.3g}, "
                  f"D = {c.D_int:.3g}, loss = {c.loss_int:.4f}"]
    lines += ["", "accuracy/cost Pareto front (cheapest first): " + ", ".join(rec.pareto),
              f"cost: {hwcost.SOURCE}"]
    return "\n".join(lines)
