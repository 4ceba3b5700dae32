"""Scaling laws for low-precision training and quantization, with their closed-form optima.

The central law is the "Capybara" law of Sun et al., "Scaling Laws for Floating-Point Quantization
Training" (arXiv 2501.02423, ICML 2025), Eq. (1)/(26)::

    L(N, D, E, M, B) = n/N^α + d/D^β + ε + (D^β/N^α) · log2(B) / (γ (E+0.5)^δ (M+0.5)^ν)

with N the non-embedding parameter count, D the training tokens, E/M the exponent/mantissa bits of
the quantized GEMM inputs and B the number of elements that share one (high-precision) scaling
factor.  Losses are validation cross-entropy in nats per token.  The paper's closed forms
(optimal layout, critical data size, compute-optimal precision) are methods of
:class:`CapybaraLaw`; the tests check each against direct numerical optimisation.

Also here, for comparison: the Chinchilla base law (Hoffmann et al. 2022, Sun et al. Eq. 2), the
precision law of Kumar et al. (arXiv 2411.04330) in the form Sun et al. compare against (Eq. 6),
and the post-training-quantization degradation law of Ouyang et al. (arXiv 2411.17691).
Law files: :func:`save_law`, :func:`load_law`, and :func:`choose_law` (``"paper"`` or a fit file,
with how to cite it).  No torch here: numpy and scipy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import brentq

from . import blocks
from .blocks import block_log2

#: log2 B of channel-wise and tensor-wise scaling (see :mod:`explorer.blocks`).
CHANNEL_LOG2B = blocks.CHANNEL_LOG2B
TENSOR_LOG2B = blocks.TENSOR_LOG2B

#: Compute per parameter per token per bit, C = k·P·N·D (Sun et al. §4.4, Fig. 7: k = 6/16).
DEFAULT_K = 6.0 / 16.0
#: Integer widths considered for :attr:`ComputeOptimum.P_int`.
MIN_INT_BITS, MAX_INT_BITS = 2, 32

ArrayLike = float | int | np.ndarray
_UNSET: Any = object()     # marks an argument that was not passed
BlockLike = int | float | str | np.ndarray | None


def layout_name(E: int, M: int) -> str:
    """``"e{E}m{M}"``, the name of the design-space format family in :mod:`fpformat`."""
    return f"e{int(E)}m{int(M)}"


def log2_block(B: BlockLike) -> ArrayLike:
    """log2 of the scaling-block size: a number >= 1, an array of them, ``'channel'``/``'tensor'``
    (log2 B = 13.1567), a numeric string like ``'32'``, or a sequence mixing these.  B = 1 means
    every element has its own high-precision scale, i.e. no quantization penalty; ``None`` or
    ``'none'`` (an unquantized run) likewise give 0, so the law reduces to its base (BF16) part.
    One block is read by :func:`explorer.blocks.block_log2`."""
    if isinstance(B, (str, int, float, np.integer, np.floating)) or B is None:
        return block_log2(B)
    arr = np.asarray(B)
    if arr.dtype.kind in "iuf":
        if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr < 1)):
            raise ValueError("B: block sizes must be finite numbers >= 1")
        return np.log2(arr.astype(float))
    return np.array([block_log2(b) for b in arr.ravel()], dtype=float).reshape(arr.shape)


def _positive(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.size and not np.all(a > 0):
        raise ValueError(f"{name}: must be > 0, got {x!r}")
    return a


def _nonneg(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.size and not np.all(a >= 0):
        raise ValueError(f"{name}: must be >= 0, got {x!r}")
    return a


def _out(a: np.ndarray) -> ArrayLike:
    return float(a) if np.ndim(a) == 0 else a


def _check_P(P: int) -> int:
    if isinstance(P, bool) or not isinstance(P, (int, np.integer)):
        raise TypeError(f"P: expected an integer bit width, got {P!r}")
    if P < 1:
        raise ValueError(f"P: bit width must be >= 1 (sign bit included), got {P}")
    return int(P)


@dataclass(frozen=True)
class ComputeOptimum:
    """The compute-optimal configuration under C = k·P·N·D (Sun et al. §4.4, App. E.3).

    ``P`` is the real-valued optimal precision (bits, sign included) with the real-valued optimal
    layout (the paper's relaxation, Eq. 19/20); ``N`` (parameters) and ``D`` (tokens) the matching
    model and data size; ``loss`` the predicted loss there (nats/token).

    ``P_int`` is the best *integer* width: for each integer P near the real optimum the integer
    optimal layout of P bits is taken, N and D are re-optimised under the same budget
    (:meth:`CapybaraLaw.compute_optimal_ND` with that layout), and the width with the lowest loss
    wins; ``N_int``, ``D_int``, ``loss_int`` are its model size, tokens and loss, and ``layout``
    its (E, M)."""

    C: float
    k: float
    log2_block: float
    P: float
    N: float
    D: float
    loss: float
    layout: tuple[int, int]
    P_int: int = 0
    N_int: float = float("nan")
    D_int: float = float("nan")
    loss_int: float = float("nan")

    def __float__(self) -> float:
        return float(self.P)

    def to_dict(self) -> dict:
        d = asdict(self)
        e, m = self.layout
        d["layout"] = {"name": layout_name(e, m), "exp_bits": e, "man_bits": m, "bits": e + m + 1}
        return d


@dataclass(frozen=True)
class CapybaraLaw:
    """L(N, D, E, M, B) of Sun et al. (Eq. 26).  Fields are the law's eight constants."""

    n: float
    alpha: float
    d: float
    beta: float
    eps: float
    gamma: float
    delta: float
    nu: float

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{f.name}: expected a number, got {v!r}")
            if not np.isfinite(v):
                raise ValueError(f"{f.name}: must be finite, got {v!r}")
            object.__setattr__(self, f.name, float(v))
        for name in ("n", "alpha", "d", "beta", "gamma", "delta", "nu"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def paper(cls) -> CapybaraLaw:
        """Sun et al. (arXiv 2501.02423) Table 2."""
        return cls(n=69.2343, alpha=0.2368, d=68973.0621, beta=0.5162, eps=1.9061,
                   gamma=11334.5197, delta=3.1926, nu=2.9543)

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> CapybaraLaw:
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in d]
        if missing:
            raise ValueError(f"law constants: missing {', '.join(missing)}")
        return cls(**{k: d[k] for k in names})

    # ------------------------------------------------------------------ the law
    def base_loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Unquantized (BF16) loss n/N^α + d/D^β + ε (Eq. 2)."""
        N, D = _positive("N", N), _positive("D", D)
        return _out(self.n / N ** self.alpha + self.d / D ** self.beta + self.eps)

    def layout_score(self, E: ArrayLike, M: ArrayLike) -> ArrayLike:
        """(E+0.5)^δ (M+0.5)^ν: larger means less quantization damage."""
        E, M = _nonneg("E", E), _nonneg("M", M)
        return _out((E + 0.5) ** self.delta * (M + 0.5) ** self.nu)

    def penalty(self, N: ArrayLike, D: ArrayLike, E: ArrayLike, M: ArrayLike,
                B: BlockLike) -> ArrayLike:
        """The quantization term (D^β/N^α) log2 B / (γ (E+0.5)^δ (M+0.5)^ν) (Eq. 17)."""
        N, D = _positive("N", N), _positive("D", D)
        lb = np.asarray(log2_block(B), dtype=float)
        score = np.asarray(self.layout_score(E, M), dtype=float)
        return _out(D ** self.beta / N ** self.alpha * lb / (self.gamma * score))

    def loss(self, N: ArrayLike, D: ArrayLike, E: ArrayLike, M: ArrayLike,
             B: BlockLike) -> ArrayLike:
        """Predicted validation loss (nats/token); broadcasts over array arguments."""
        return _out(np.asarray(self.base_loss(N, D)) + np.asarray(self.penalty(N, D, E, M, B)))

    # ------------------------------------------------------------------ critical data size
    def critical_data_size(self, N: ArrayLike, E: ArrayLike, M: ArrayLike,
                           B: BlockLike) -> ArrayLike:
        """Tokens at which ∂L/∂D = 0 (Eq. 21): beyond it more data raises the loss.
        Infinite for B = 1 (no quantization penalty)."""
        N = _positive("N", N)
        lb = np.asarray(log2_block(B), dtype=float)
        score = np.asarray(self.layout_score(E, M), dtype=float)
        with np.errstate(divide="ignore"):
            inner = self.d * self.gamma * N ** self.alpha * score / lb
        return _out(inner ** (1.0 / (2.0 * self.beta)))

    # ------------------------------------------------------------------ layouts
    def ranked_layouts(self, P: int) -> list[tuple[int, int]]:
        """Every split of P = E + M + 1 bits (E, M >= 0), best first; equal scores (to 1e-12
        relative) rank the layout with more exponent bits first."""
        P = _check_P(P)
        es = np.arange(P)
        scores = (es + 0.5) ** self.delta * (P - 1 - es + 0.5) ** self.nu
        top = scores.max()
        # Quantise scores relative to the best so that floating-point near-ties break to more E.
        keyed = sorted(es.tolist(), key=lambda e: (-round(float(scores[e] / top), 12), -e))
        return [(int(e), int(P - 1 - e)) for e in keyed]

    def optimal_layout(self, P: int) -> tuple[int, int]:
        """The integer (E, M) with E + M + 1 = P maximising (E+0.5)^δ (M+0.5)^ν (Sun et al.
        §4.2, Fig. 5); ties go to more exponent bits."""
        return self.ranked_layouts(P)[0]

    def continuous_layout(self, P: float) -> tuple[float, float]:
        """Real-valued optimum (Eq. 19, 31): M = νP/(δ+ν) − 0.5, E = δP/(δ+ν) − 0.5."""
        s = self.delta + self.nu
        return self.delta * P / s - 0.5, self.nu * P / s - 0.5

    @property
    def gamma_rho(self) -> float:
        """γ_ρ = γ δ^δ ν^ν / (δ+ν)^(δ+ν) (Eq. 34): with the optimal real layout the penalty is
        (D^β/N^α) log2 B / (γ_ρ P^(δ+ν))."""
        s = self.delta + self.nu
        return math.exp(math.log(self.gamma) + self.delta * math.log(self.delta)
                        + self.nu * math.log(self.nu) - s * math.log(s))

    def loss_at_precision(self, N: ArrayLike, D: ArrayLike, P: ArrayLike,
                          B: BlockLike) -> ArrayLike:
        """Loss with the real-valued optimal layout of P bits (Eq. 20)."""
        N, D, P = _positive("N", N), _positive("D", D), _positive("P", P)
        lb = np.asarray(log2_block(B), dtype=float)
        pen = D ** self.beta / N ** self.alpha * lb / (self.gamma_rho * P ** (self.delta + self.nu))
        return _out(self.n / N ** self.alpha + self.d / D ** self.beta + self.eps + pen)

    # ------------------------------------------------------------------ compute optimality
    def _lb_positive(self, B: BlockLike) -> float:
        lb = log2_block(B)
        if np.ndim(lb) != 0:
            raise TypeError("B: expected one block size here, not an array")
        if lb <= 0:
            raise ValueError("B: block size 1 has no quantization penalty, so no finite optimal "
                             "precision")
        return float(lb)

    def optimal_precision_fixed_D(self, D: float, C: float | None = None, B: BlockLike = _UNSET,
                                  k: float = DEFAULT_K) -> float:
        """Cost-optimal precision for a fixed data size D under a compute budget (Eq. 22/47):
        P^(δ+ν) = γ_D D^β log2 B with γ_D = (δ+ν−α)/(n α γ_ρ).

        The result does not depend on the budget C (it only sets N = C/(k P D)), so both
        ``optimal_precision_fixed_D(D, C, B, k)`` and the short form
        ``optimal_precision_fixed_D(D, B)`` are accepted; C and k, when given, are only
        validated."""
        if B is _UNSET:
            if C is None:
                raise TypeError("B: required (call optimal_precision_fixed_D(D, C, B) or (D, B))")
            B, C = C, None
        if C is not None:
            _positive("C", C)
        _positive("k", k)
        D = float(_positive("D", D))
        lb = self._lb_positive(B)
        s = self.delta + self.nu
        gD = (s - self.alpha) / (self.n * self.alpha * self.gamma_rho)
        return (gD * D ** self.beta * lb) ** (1.0 / s)

    def optimal_precision_fixed_N(self, N: float, C: float, B: BlockLike,
                                  k: float = DEFAULT_K) -> float:
        """Cost-optimal precision for a fixed model size N at budget C (Eq. 23/52):
        P^(δ+ν+2β) = γ_N (C/k)^(2β) N^−(α+2β) log2 B with γ_N = (β+δ+ν)/(d β γ_ρ)."""
        N, C, k = float(_positive("N", N)), float(_positive("C", C)), float(_positive("k", k))
        lb = self._lb_positive(B)
        s = self.delta + self.nu
        gN = (self.beta + s) / (self.d * self.beta * self.gamma_rho)
        return (gN * (C / k) ** (2 * self.beta) * N ** (-(self.alpha + 2 * self.beta)) * lb) ** (
            1.0 / (s + 2 * self.beta))

    def optimal_precision(self, C: float, B: BlockLike, k: float = DEFAULT_K) -> ComputeOptimum:
        """Joint minimum of the loss over (N, D, P) subject to C = k·P·N·D (App. E.3, Eq. 25/54).

        Setting ∂L/∂P = 0 and ∂L/∂D = 0 with N = C/(kPD) gives
        D^β = α n P^s / ((s−α) G) and N^α = α n (s+β) D^β / ((s−α) β d), s = δ+ν,
        G = log2 B / γ_ρ; both are powers of P, so C/k = P·N·D fixes P in closed form."""
        C, k = float(_positive("C", C)), float(_positive("k", k))
        lb = self._lb_positive(B)
        a, b, n, d = self.alpha, self.beta, self.n, self.d
        s = self.delta + self.nu
        if s <= a:
            raise ValueError("law: δ + ν must exceed α for a finite optimal precision")
        G = lb / self.gamma_rho
        # log D = (log(α n / ((s−α) G)) + s log P) / β ;  log N = (log(...) + log D^β) / α
        cD = math.log(a * n / ((s - a) * G)) / b
        cN = math.log(a * n * (s + b) / ((s - a) * b * d)) / a
        # log(C/k) = log P + log N + log D = cN + (1 + 1/α) cD' ... expressed via log P:
        #   log D = cD + (s/β) log P ;  log N = cN + (β/α) log D = cN + (β/α) cD + (s/α) log P
        expo = 1.0 + s / a + s / b
        logP = (math.log(C / k) - cD - cN - (b / a) * cD) / expo
        P = math.exp(logP)
        D = math.exp(cD + (s / b) * logP)
        N = C / (k * P * D)
        loss = float(self.loss_at_precision(N, D, P, 2.0 ** lb))
        best = None
        lo, hi = max(MIN_INT_BITS, math.floor(P) - 1), min(MAX_INT_BITS, math.ceil(P) + 1)
        for p in range(lo, hi + 1):
            e, m = self.optimal_layout(p)
            Q = self.gamma * float(self.layout_score(e, m))
            Ni, Di, Li = self._optimal_ND(C / (k * p), Q, lb)
            if best is None or Li < best[3]:
                best = (p, Ni, Di, Li, (e, m))
        p, Ni, Di, Li, lay = best
        return ComputeOptimum(C=C, k=k, log2_block=lb, P=P, N=N, D=D, loss=loss, layout=lay,
                              P_int=p, N_int=Ni, D_int=Di, loss_int=Li)

    def _optimal_ND(self, K: float, Q: float, lb: float) -> tuple[float, float, float]:
        """min over D of the loss with N = K/D and penalty D^β N^−α lb/Q: (N, D, loss).

        With x = ln D the loss is A e^(αx) + d e^(−βx) + G e^((α+β)x) + ε, A = n K^−α,
        G = lb K^−α / Q; its x-derivative is strictly increasing, so the root is unique and
        is bracketed by the unquantized (G = 0) optimum from above."""
        a, b = self.alpha, self.beta
        A = self.n * K ** (-a)
        G = lb * K ** (-a) / Q

        def g(x: float) -> float:
            return (a * A * math.exp(a * x) - b * self.d * math.exp(-b * x)
                    + (a + b) * G * math.exp((a + b) * x))

        hi = math.log(b * self.d / (a * A)) / (a + b)
        lo = hi - 1.0
        while g(lo) > 0:
            lo -= 2.0 * (hi - lo)
        x = hi if g(hi) == 0 else brentq(g, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500)
        D = math.exp(x)
        N = K / D
        loss = A * D ** a + self.d * D ** (-b) + self.eps + G * D ** (a + b)
        return N, D, float(loss)

    def compute_optimal_ND(self, C: float, P: float, B: BlockLike, k: float = DEFAULT_K,
                           layout: tuple[int, int] | None = None) -> tuple[float, float]:
        """(N, D) minimising the loss at precision P under the budget C = k·P·N·D.

        The quantization term uses the real-valued optimal layout of P bits (as
        :meth:`loss_at_precision`, the paper's relaxation) unless ``layout=(E, M)`` is given.
        Solved by a bracketed root of ∂L/∂ln D (unique: the derivative is monotone)."""
        C, P, k = float(_positive("C", C)), float(_positive("P", P)), float(_positive("k", k))
        lb = float(np.asarray(log2_block(B)))
        if layout is None:
            Q = self.gamma_rho * P ** (self.delta + self.nu)
        else:
            Q = self.gamma * float(self.layout_score(*layout))
        N, D, _ = self._optimal_ND(C / (k * P), Q, lb)
        return N, D

    def chinchilla(self) -> ChinchillaLaw:
        """The base (unquantized) law with this law's n, α, d, β, ε."""
        return ChinchillaLaw(n=self.n, alpha=self.alpha, d=self.d, beta=self.beta, eps=self.eps)


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = n/N^α + d/D^β + ε (Hoffmann et al. 2022; Sun et al. Eq. 2)."""

    n: float
    alpha: float
    d: float
    beta: float
    eps: float

    @classmethod
    def paper(cls) -> ChinchillaLaw:
        """The base-law constants inside Sun et al.'s Table 2."""
        return CapybaraLaw.paper().chinchilla()

    @classmethod
    def hoffmann(cls) -> ChinchillaLaw:
        """Hoffmann et al. 2022 (Chinchilla, approach 3): E = 1.69, A = 406.4, B = 410.7,
        α = 0.34, β = 0.28, i.e. L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28."""
        return cls(n=406.4, alpha=0.34, d=410.7, beta=0.28, eps=1.69)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        N, D = _positive("N", N), _positive("D", D)
        return _out(self.n / N ** self.alpha + self.d / D ** self.beta + self.eps)

    def compute_optimal(self, C: float, k: float = 6.0) -> tuple[float, float]:
        """(N, D) minimising the loss under C = k·N·D (FLOPs with k = 6):
        N = (α n / (β d))^(1/(α+β)) (C/k)^(β/(α+β)), D = C/(k N)."""
        C, k = float(_positive("C", C)), float(_positive("k", k))
        a, b = self.alpha, self.beta
        N = (a * self.n / (b * self.d)) ** (1.0 / (a + b)) * (C / k) ** (b / (a + b))
        return N, C / (k * N)


@dataclass(frozen=True)
class KumarLaw:
    """The precision law of Kumar et al. (arXiv 2411.04330) for FP formats, in the form Sun et al.
    compare against (their Eq. 6): an effective parameter count N (1 − e^(−P/γ)) with
    P = 1 + E + M bits, inside the Chinchilla law.  Kumar et al. do not fit FP layouts, so there
    are no published constants for this form: fit it with :func:`explorer.fit.fit_kumar`."""

    n: float
    alpha: float
    d: float
    beta: float
    eps: float
    gamma: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def illustrative(cls) -> KumarLaw:
        """*Illustrative* constants: Hoffmann et al.'s Chinchilla fit
        (:meth:`ChinchillaLaw.hoffmann`) with a weight-precision sensitivity γ_w = 2.67 bits,
        the order of magnitude Kumar et al. report for weights.  Not a published fit of this
        exact form: use it to see the shape of the law, and :func:`explorer.fit.fit_kumar` for
        numbers."""
        c = ChinchillaLaw.hoffmann()
        return cls(n=c.n, alpha=c.alpha, d=c.d, beta=c.beta, eps=c.eps, gamma=KUMAR_GAMMA_W)

    def loss_at_bits(self, N: ArrayLike, D: ArrayLike, P: ArrayLike) -> ArrayLike:
        """Loss with weights held in P bits: N_eff = N (1 − e^(−P/γ)) in the Chinchilla form."""
        N, D, P = _positive("N", N), _positive("D", D), _positive("P", P)
        Neff = N * -np.expm1(-P / self.gamma)
        return _out(self.n / Neff ** self.alpha + self.d / D ** self.beta + self.eps)

    def effective_params(self, N: ArrayLike, E: ArrayLike, M: ArrayLike) -> ArrayLike:
        N = _positive("N", N)
        P = 1.0 + _nonneg("E", E) + _nonneg("M", M)
        return _out(N * (1.0 - np.exp(-P / self.gamma)))

    def loss(self, N: ArrayLike, D: ArrayLike, E: ArrayLike, M: ArrayLike,
             B: BlockLike = None) -> ArrayLike:
        """Predicted loss; ``B`` is accepted for call compatibility and ignored (the law has no
        block-size term)."""
        D = _positive("D", D)
        Neff = np.asarray(self.effective_params(N, E, M))
        return _out(self.n / Neff ** self.alpha + self.d / D ** self.beta + self.eps)


@dataclass(frozen=True)
class QiDLaw:
    """Quantization-induced degradation after post-training quantization to P bits
    (Ouyang et al., arXiv 2411.17691): ΔL = k · D^β / (N^α · P^γ) (nats/token)."""

    k: float
    alpha: float
    beta: float
    gamma: float

    @classmethod
    def paper(cls) -> QiDLaw:
        """Ouyang et al.'s fitted constants: k = 0.017, α = 0.2261, β = 0.5251, γ = 5.4967."""
        return cls(k=0.017, alpha=0.2261, beta=0.5251, gamma=5.4967)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def delta_loss(self, N: ArrayLike, D: ArrayLike, P: ArrayLike) -> ArrayLike:
        N, D, P = _positive("N", N), _positive("D", D), _positive("P", P)
        return _out(self.k * D ** self.beta / (N ** self.alpha * P ** self.gamma))


def qid_loss(N: ArrayLike, D: ArrayLike, P: ArrayLike, law: QiDLaw | None = None) -> ArrayLike:
    """Loss increase (nats/token) from post-training quantization of an N-parameter model trained
    on D tokens to P bits; Ouyang et al.'s published constants unless ``law`` is given."""
    return (law or QiDLaw.paper()).delta_loss(N, D, P)


#: Kumar et al.'s weight-precision sensitivity used by :meth:`KumarLaw.illustrative` (bits).
KUMAR_GAMMA_W = 2.67


def chinchilla_loss(N: ArrayLike, D: ArrayLike, law: ChinchillaLaw | None = None) -> ArrayLike:
    """Unquantized loss (nats/token) of Hoffmann et al.'s fitted Chinchilla law (E = 1.69,
    A = 406.4, B = 410.7, α = 0.34, β = 0.28) unless ``law`` is given."""
    return (law or ChinchillaLaw.hoffmann()).loss(N, D)


def kumar_loss(N: ArrayLike, D: ArrayLike, P_w: ArrayLike,
               law: KumarLaw | None = None) -> ArrayLike:
    """Kumar et al. (arXiv 2411.04330) loss for weights trained in P_w bits:
    A/N_eff^α + B/D^β + E with N_eff = N (1 − e^(−P_w/γ_w)).  Defaults to the *illustrative*
    :meth:`KumarLaw.illustrative` constants (Chinchilla + γ_w = 2.67)."""
    return (law or KumarLaw.illustrative()).loss_at_bits(N, D, P_w)


# ------------------------------------------------------------------------------------ law files
#: How a recommendation names the published constants (one line of CLI output).
PAPER_LAW_SOURCE = "paper (Sun et al., arXiv 2501.02423, Table 2)"
#: How a report cites them (a noun phrase inside a sentence).
PAPER_LAW_CITATION = ("Capybara scaling law of Sun et al., \"Scaling Laws for Floating-Point "
                      "Quantization Training\" (arXiv 2501.02423, ICML 2025), Table 2 constants "
                      "as published")


def save_law(path: Any, law: CapybaraLaw, **meta: Any) -> dict:
    """Write ``law`` as JSON ``{"kind": "capybara-law", "constants": {...}, **meta}`` (meta must
    be JSON-serialisable); returns the document.  :func:`load_law` and ``fpx recommend --law``
    read it back."""
    if not isinstance(law, CapybaraLaw):
        raise TypeError(f"law: expected a CapybaraLaw, got {type(law).__name__}")
    doc = {"kind": "capybara-law", "constants": law.to_dict(), **meta}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def load_law(path: Any) -> CapybaraLaw:
    """The law in a JSON file written by :func:`save_law` or ``fpx fit -o`` (a ``"constants"``
    object), or a bare object of the eight constants."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 (file content)
    consts = doc.get("constants", doc)
    if not isinstance(consts, dict):
        raise ValueError(f"{path}: 'constants' must be an object")  # noqa: TRY004 (file content)
    return CapybaraLaw.from_dict(consts)


class ChosenLaw(NamedTuple):
    """A Capybara law picked by name or file, with how to cite it.

    ``source`` is short, for one line of output (``"paper (...)"``, ``"fit PATH"``);
    ``citation`` is a noun phrase for a report's prose."""

    law: CapybaraLaw
    source: str
    citation: str


def choose_law(spec: str | Path, *, name: str = "law") -> ChosenLaw:
    """``"paper"``: Sun et al.'s published constants; otherwise the path of a fit JSON file
    (:func:`load_law`).  ``FileNotFoundError`` naming ``name`` when the file does not exist."""
    if spec == "paper":
        return ChosenLaw(CapybaraLaw.paper(), PAPER_LAW_SOURCE, PAPER_LAW_CITATION)
    p = Path(spec)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: expected 'paper' or a fit JSON file, "
                                f"no such file: {spec}")
    return ChosenLaw(load_law(p), f"fit {spec}", f"Capybara law fitted by `fpx fit` ({p.name})")
