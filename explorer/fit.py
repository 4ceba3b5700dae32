"""Fitting the Capybara law (and the Kumar and QiD laws) to measured runs, with diagnostics.

Method (:func:`fit_capybara`):

1. *Multi-start by variable projection.*  For fixed exponents (α, β, δ, ν) the law is linear and
   non-negative in (n, d, ε, 1/γ); a grid of exponent starts is solved by relative-weighted NNLS and
   the best few starts are kept.
2. *Robust bounded refinement.*  All eight constants are refined together on the residual
   log(L_pred) − log(L_obs) with a Huber loss (scale 1e-3 in log-loss by default, as Hoffmann et
   al. 2022 used for Chinchilla), within bounds (exponents in (0.01, 2) for α, β and (0.01, 12)
   for δ, ν; ε between 0 and the smallest loss): the cost ``scipy.optimize.least_squares(...,
   loss="huber")`` minimises, by the same trust-region-reflective method compiled with the
   analytic Jacobian (:mod:`explorer.fit_kernel`: every start, resample and held-out refit in
   one call).
3. *Diagnostics* (:func:`fit_capybara_detailed`): bootstrap percentile intervals on every constant
   (runs resampled with replacement, each refit started from the full fit), leave-one-group-out
   held-out error by model size (fit without that N, predict it), and relative residuals.
4. *What the runs identify* (:meth:`CapybaraFit.identification`, :func:`fit_capybara_supported`):
   a constant on a bound of the fit, or whose interval spans more than :data:`SPAN_FACTOR`, is
   not identified; the reduced fit (:data:`REDUCED_FREE`) is then offered beside the full one.

Data come as arrays, from a results database (``runs`` table read by :mod:`explorer.results`;
schema in explorer/train/store.py) or a CSV with columns ``N,D,E,M,B,loss`` (or the database's
names ``n_params,tokens,exp_bits,man_bits,block,val_loss``).  Losses are nats/token; B as for
:meth:`CapybaraLaw.loss`.
"""

from __future__ import annotations

import csv
import errno
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import least_squares, nnls

from fpformat.files import atomic_write

from . import fit_kernel, results
from .laws import CapybaraLaw, KumarLaw, QiDLaw, load_law, log2_block

PARAM_NAMES = ("n", "alpha", "d", "beta", "eps", "gamma", "delta", "nu")
#: Huber scale on log loss (Hoffmann et al. 2022, App. D.2, use 1e-3).
DEFAULT_HUBER = 1e-3
MIN_POINTS = 9
#: Held-out error by model size needs at least this many distinct sizes.
MIN_HELDOUT_SIZES = 3
#: Positive PTQ degradations needed to fit the QiD law's four constants (one more than that).
MIN_QID_POINTS = 5
#: The most bootstrap resamples :func:`fit_capybara_detailed` runs.  Each is a full multi-start
#: fit (~0.1-1 s); 100000 already takes hours, and percentile intervals stop changing long before.
MAX_BOOTSTRAP = 100_000
_CHUNK = 20               # bootstrap resamples refined per call (progress between calls)
#: A fitted constant whose 95% bootstrap interval spans more than this factor (upper end over
#: lower end) is "not identified by these runs", as is one that ends on a bound of the fit.
SPAN_FACTOR = 10.0
#: A constant within this fraction of its range from a bound of the fit sits on that bound.
ON_BOUND = 1e-6
#: The constants of the reduced fit offered when the full law is not identified: the scale
#: constants free, the paper's exponents (α, β, δ, ν) held.
REDUCED_FREE = ("n", "d", "eps", "gamma")

# exponent starts for the variable-projection grid
_ALPHAS = (0.1, 0.25, 0.45, 0.7)
_BETAS = (0.15, 0.3, 0.5, 0.75)
_DELTAS = (1.0, 3.0, 6.0)
_NUS = (1.0, 3.0, 6.0)


# ------------------------------------------------------------------------------------ inputs
def _prepare(N, D, E, M, B, loss, min_points: int = MIN_POINTS) -> tuple[np.ndarray, ...]:
    arrs = []
    for name, v in (("N", N), ("D", D), ("E", E), ("M", M), ("loss", loss)):
        if v is None:
            raise TypeError(f"{name}: required")
        a = np.asarray(v, dtype=float).ravel()
        arrs.append(a)
    lb = np.asarray(log2_block(B), dtype=float).ravel()
    N, D, E, M, loss = arrs
    n = len(loss)
    if lb.size == 1 and n != 1:
        lb = np.full(n, float(lb[0]))
    for name, a in (("N", N), ("D", D), ("E", E), ("M", M), ("B", lb)):
        if len(a) != n:
            raise ValueError(f"{name}: length {len(a)} differs from loss length {n}")
    if n < min_points:
        raise ValueError(f"loss: need at least {min_points} runs to fit {min_points - 1} "
                         f"constants, got {n}")
    if not np.all(np.isfinite(loss)) or np.any(loss <= 0):
        raise ValueError("loss: every loss must be finite and > 0")
    if np.any(N <= 0) or np.any(D <= 0):
        raise ValueError("N, D: must be > 0")
    if np.any(E < 0) or np.any(M < 0):
        raise ValueError("E, M: must be >= 0")
    return N, D, E, M, lb, loss


def _predict(theta: np.ndarray, N, D, E, M, lb) -> np.ndarray:
    ln_n, a, ln_d, b, eps, ln_g, de, nu = theta
    lnN, lnD = np.log(N), np.log(D)
    base = np.exp(ln_n - a * lnN) + np.exp(ln_d - b * lnD) + eps
    pen = np.exp(b * lnD - a * lnN - ln_g - de * np.log(E + 0.5) - nu * np.log(M + 0.5)) * lb
    return base + pen


def _theta_to_law(theta: np.ndarray) -> CapybaraLaw:
    ln_n, a, ln_d, b, eps, ln_g, de, nu = (float(t) for t in theta)
    return CapybaraLaw(n=math.exp(ln_n), alpha=a, d=math.exp(ln_d), beta=b, eps=eps,
                       gamma=math.exp(ln_g), delta=de, nu=nu)


def _law_to_theta(law: CapybaraLaw) -> np.ndarray:
    return np.array([math.log(law.n), law.alpha, math.log(law.d), law.beta, law.eps,
                     math.log(law.gamma), law.delta, law.nu])


def _bounds(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([-20.0, 0.01, -20.0, 0.01, 0.0, -30.0, 0.01, 0.01])
    hi = np.array([40.0, 2.0, 60.0, 2.0, float(np.min(loss)), 60.0, 12.0, 12.0])
    return lo, hi


def _clip(theta: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = hi - lo
    return np.clip(theta, lo + 1e-9 * span, hi - 1e-9 * span)


class _Spec:
    """Which constants are fitted (``mask`` over :data:`PARAM_NAMES`) and the values of the
    others (``ref``, in the internal parametrisation)."""

    def __init__(self, free: Any = None, fixed: CapybaraLaw | None = None):
        if free is None or (isinstance(free, str) and free.strip().lower() == "all"):
            names = list(PARAM_NAMES)
        else:
            if isinstance(free, str):
                free = [f for f in free.replace(",", " ").split() if f]
            names = list(dict.fromkeys(free))
            bad = [f for f in names if f not in PARAM_NAMES]
            if bad or not names:
                raise ValueError(f"free: expected names among {', '.join(PARAM_NAMES)} (or 'all'), "
                                 f"got {free!r}")
        if fixed is not None and not isinstance(fixed, CapybaraLaw):
            raise TypeError(f"fixed: expected a CapybaraLaw, got {type(fixed).__name__}")
        self.free = tuple(n for n in PARAM_NAMES if n in names)
        self.mask = np.array([n in names for n in PARAM_NAMES])
        self.fixed_law = fixed or CapybaraLaw.paper()
        self.ref = _law_to_theta(self.fixed_law)

    @property
    def all_free(self) -> bool:
        return bool(self.mask.all())

    def law(self, theta: np.ndarray) -> CapybaraLaw:
        """The law of ``theta`` with the fixed constants exactly as given (no log round trip)."""
        d = _theta_to_law(theta).to_dict()
        fx = self.fixed_law.to_dict()
        return CapybaraLaw(**{k: (d[k] if k in self.free else fx[k]) for k in PARAM_NAMES})

    def full(self, x: np.ndarray) -> np.ndarray:
        t = self.ref.copy()
        t[self.mask] = x
        return t


_LINEAR = {"n": 0, "d": 1, "eps": 2, "gamma": 3}     # column index in the NNLS design


def _vp_starts(N, D, E, M, lb, loss, keep: int, spec: _Spec) -> list[np.ndarray]:
    """Best ``keep`` starts from the exponent grid (free exponents only; fixed ones at their
    values), the free linear coefficients (n, d, ε, 1/γ) by relative-weighted NNLS."""
    w = 1.0 / loss
    lnN, lnD = np.log(N), np.log(D)
    quantized = np.any(lb > 0)
    ref = _theta_to_law(spec.ref)
    free = set(spec.free)
    grids = [g if name in free else (getattr(ref, name),)
             for name, g in (("alpha", _ALPHAS), ("beta", _BETAS), ("delta", _DELTAS),
                             ("nu", _NUS))]
    scored = []
    for a, b, de, nu in itertools.product(*grids):
        cols = [np.exp(-a * lnN), np.exp(-b * lnD), np.ones_like(loss),
                np.exp(b * lnD - a * lnN) * lb / ((E + 0.5) ** de * (M + 0.5) ** nu)]
        fixed_vals = [ref.n, ref.d, ref.eps, 1.0 / ref.gamma]
        use = [i for name, i in _LINEAR.items() if name in free and (i != 3 or quantized)]
        target = loss - sum(fixed_vals[i] * cols[i] for name, i in _LINEAR.items()
                            if name not in free)
        coef = np.array(fixed_vals, dtype=float)
        rnorm = float(np.linalg.norm(target * w))
        if use:
            X = np.stack([cols[i] for i in use], axis=1) * w[:, None]
            c, rnorm = nnls(X, target * w)
            coef[use] = c
        scored.append((rnorm, a, b, de, nu, coef))
    scored.sort(key=lambda t: t[0])
    starts = []
    tiny = 1e-12
    for rnorm, a, b, de, nu, coef in scored[:keep]:
        n, d, eps = max(coef[0], tiny), max(coef[1], tiny), coef[2]
        g = 1.0 / max(coef[3], tiny)
        starts.append(np.array([math.log(n), a, math.log(d), b, eps, math.log(g), de, nu]))
    return starts


#: Cost evaluations one refinement may take (as ``least_squares``' ``max_nfev`` did here; the
#: micro-sweep's fits take 160-200 from a grid start).
MAX_ITER = 4000
_FTOL, _XTOL = 1e-12, 1e-12


class _Refined(NamedTuple):
    theta: np.ndarray        # (K, 8)
    cost: np.ndarray         # (K,)
    converged: np.ndarray    # (K,) bool: tolerances met or no descent left, not MAX_ITER


def _refine(starts, N, D, E, M, lb, loss, huber: float, spec: _Spec,
            counts: np.ndarray | None = None) -> _Refined:
    """Refine each start (K, 8) by :func:`explorer.fit_kernel.refine_many`; ``counts`` (K, n)
    weights the runs per problem (bootstrap resamples; default every run once).  Each problem's
    box is :func:`_bounds` of the runs it weights."""
    starts = np.array(starts, dtype=float, ndmin=2)
    K, n = starts.shape[0], len(loss)
    if counts is None:
        counts = np.ones((K, n))
    lo = np.empty((K, len(PARAM_NAMES)))
    hi = np.empty_like(lo)
    for k in range(K):
        lo[k], hi[k] = _bounds(loss[counts[k] > 0])
    theta, cost, _iters, status = fit_kernel.refine_many(
        starts, spec.mask, lo, hi, np.log(N), np.log(D), np.log(E + 0.5), np.log(M + 0.5),
        np.asarray(lb, float), np.log(loss), counts, huber, MAX_ITER, _FTOL, _XTOL)
    return _Refined(theta, cost, status != fit_kernel.MAX_ITER)


def _fit_theta(N, D, E, M, lb, loss, huber: float, starts: int,
               spec: _Spec) -> tuple[np.ndarray, float, bool]:
    """The best of the refined grid starts: (theta, cost, converged)."""
    cands = _vp_starts(N, D, E, M, lb, loss, starts, spec)
    if not spec.all_free:
        cands.append(spec.ref.copy())      # the reference law itself is a natural start
    r = _refine(cands, N, D, E, M, lb, loss, huber, spec)
    best = int(np.argmin(r.cost))
    return r.theta[best], float(r.cost[best]), bool(r.converged[best])


def fit_capybara(*, N, D, E, M, B, loss, huber_delta: float = DEFAULT_HUBER,
                 starts: int = 6, free: Any = None,
                 fixed: CapybaraLaw | None = None) -> CapybaraLaw:
    """Fit the Capybara constants to runs (arrays of equal length; B may be a scalar).

    Robust (Huber on log loss), bounded, multi-start (``starts`` best grid starts refined).
    ``free`` names the constants to fit (default all eight; e.g. ``("n", "d", "eps", "gamma")``
    or ``"n,d,eps,gamma"`` for a handful of small runs that cannot identify the exponents); the
    others keep their values in ``fixed`` (default the paper's law).  Returns the fitted
    :class:`CapybaraLaw`.  For intervals and diagnostics use :func:`fit_capybara_full`."""
    spec = _Spec(free, fixed)
    N, D, E, M, lb, loss = _prepare(N, D, E, M, B, loss, _min_points(spec))
    theta, _cost, _ok = _fit_theta(N, D, E, M, lb, loss, _check_huber(huber_delta),
                                   int(starts), spec)
    return spec.law(theta)


def _min_points(spec: _Spec) -> int:
    return int(spec.mask.sum()) + 1


def _check_huber(h: float) -> float:
    h = float(h)
    if not h > 0:
        raise ValueError(f"huber_delta: must be > 0, got {h}")
    return h


def fit_steps(N: Any, bootstrap: int, heldout: bool = True) -> int:
    """How many refits :func:`fit_capybara_detailed` reports to its ``progress`` callable at most:
    one per bootstrap resample, plus one per model size in ``N`` when held-out errors are
    computed (``heldout`` and at least :data:`MIN_HELDOUT_SIZES` sizes)."""
    sizes = len(np.unique(np.asarray(N, dtype=float)))
    return int(bootstrap) + (sizes if heldout and sizes >= MIN_HELDOUT_SIZES else 0)


# ------------------------------------------------------------------------------------ diagnostics
@dataclass(frozen=True)
class HeldOut:
    """Leave-one-model-size-out: fit without the runs of size ``N``, predict them."""

    N: float
    count: int
    mean_abs_rel: float
    max_abs_rel: float


@dataclass(frozen=True)
class CapybaraFit:
    """A fitted law with its uncertainty and residual diagnostics.

    ``residuals`` are relative, (measured − predicted)/measured, in input order; ``ci`` maps each
    constant to a (2.5%, 97.5%) bootstrap percentile interval (empty when ``bootstrap`` is 0);
    ``by_size`` is the mean relative residual per model size (a trend across sizes means the law's
    N-dependence is off)."""

    law: CapybaraLaw
    n_points: int
    cost: float
    huber_delta: float
    residuals: np.ndarray = field(repr=False)
    rms_rel: float = 0.0
    max_rel: float = 0.0
    outliers: int = 0
    by_size: tuple[tuple[float, float], ...] = ()
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0
    heldout: tuple[HeldOut, ...] = ()
    free: tuple[str, ...] = PARAM_NAMES
    #: free constant -> "lower" or "upper": the fit ended on that bound of its range
    on_bound: dict[str, str] = field(default_factory=dict)
    #: whether the refinement of the best start met its tolerances (not :data:`MAX_ITER`)
    converged: bool = True
    #: how many of the ``bootstrap`` resamples' refinements met their tolerances
    resamples_converged: int = 0

    @property
    def held_out(self) -> tuple[HeldOut, ...]:
        """Alias of ``heldout``."""
        return self.heldout

    def identification(self, span_factor: float = SPAN_FACTOR) -> dict[str, str]:
        """Each free constant -> ``""`` where these runs pin it down, else why not: it ended on
        a bound of the fit, or its 95% bootstrap interval reaches 0 or spans more than
        ``span_factor`` (upper end over lower end).  Without bootstrap intervals only the bound
        test applies."""
        values = self.law.to_dict()
        out = {}
        for name in self.free:
            reason = ""
            if name in self.on_bound:
                reason = f"on the fit's {self.on_bound[name]} bound ({values[name]:.4g})"
            elif name in self.ci:
                lo, hi = self.ci[name]
                if lo <= 0:
                    reason = f"95% interval [{lo:.3g}, {hi:.3g}] reaches 0"
                elif hi / lo > span_factor:
                    reason = (f"95% interval [{lo:.3g}, {hi:.3g}] spans {hi / lo:.3g}x "
                              f"(more than {span_factor:g}x)")
            out[name] = reason
        return out

    @property
    def identified(self) -> bool:
        """True when every free constant is identified (:meth:`identification`)."""
        return not any(self.identification().values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "capybara-fit",
            "law": "Capybara (Sun et al., arXiv 2501.02423, Eq. 26)",
            "constants": self.law.to_dict(),
            "ci95": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
            "bootstrap": self.bootstrap,
            "free": list(self.free),
            "not_identified": {k: why for k, why in self.identification().items() if why},
            "diagnostics": {
                "n_points": self.n_points,
                "converged": self.converged,
                "resamples_converged": self.resamples_converged,
                "huber_delta": self.huber_delta,
                "cost": self.cost,
                "rms_rel": self.rms_rel,
                "max_rel": self.max_rel,
                "outliers": self.outliers,
                "mean_rel_residual_by_size": [[float(n), float(r)] for n, r in self.by_size],
                "heldout_by_size": [{"N": h.N, "count": h.count, "mean_abs_rel": h.mean_abs_rel,
                                     "max_abs_rel": h.max_abs_rel} for h in self.heldout],
                "residuals": [float(r) for r in self.residuals],
            },
        }


def check_bootstrap(bootstrap: Any) -> int:
    """``bootstrap`` as an int in 0..:data:`MAX_BOOTSTRAP`; ``ValueError`` naming the limit."""
    if (isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer))
            or not 0 <= bootstrap <= MAX_BOOTSTRAP):
        raise ValueError(f"bootstrap: expected 0..{MAX_BOOTSTRAP} resamples (MAX_BOOTSTRAP; each "
                         f"is a full fit, so more runs for hours), got {bootstrap!r}")
    return int(bootstrap)


def fit_capybara_detailed(*, N, D, E, M, B, loss, bootstrap: int = 200, seed: int = 0,
                          heldout: bool = True, huber_delta: float = DEFAULT_HUBER,
                          starts: int = 6, progress: Any = None, free: Any = None,
                          fixed: CapybaraLaw | None = None) -> CapybaraFit:
    """:func:`fit_capybara` plus bootstrap intervals (``bootstrap`` resamples), held-out error by
    model size (``heldout``) and residual diagnostics.  ``progress``: an optional callable
    ``progress(done, total)`` for long bootstraps.  ``free``/``fixed`` as for
    :func:`fit_capybara`; fixed constants get the degenerate interval (value, value)."""
    spec = _Spec(free, fixed)
    min_points = _min_points(spec)
    N, D, E, M, lb, loss = _prepare(N, D, E, M, B, loss, min_points)
    huber = _check_huber(huber_delta)
    bootstrap = check_bootstrap(bootstrap)
    theta, cost, converged = _fit_theta(N, D, E, M, lb, loss, huber, int(starts), spec)
    law = spec.law(theta)
    pred = _predict(theta, N, D, E, M, lb)
    rel = (loss - pred) / loss
    mad = 1.4826 * float(np.median(np.abs(rel - np.median(rel))))
    outliers = int(np.sum(np.abs(rel) > 3 * max(mad, 1e-12)))
    sizes = np.unique(N)
    by_size = tuple((float(s), float(np.mean(rel[N == s]))) for s in sizes)

    total = fit_steps(N, bootstrap, heldout)
    done = 0
    ci: dict[str, tuple[float, float]] = {}
    resamples_converged = 0
    if bootstrap:
        # resample k draws runs with replacement: the same runs, weighted by how often drawn
        rng = np.random.default_rng(seed)
        counts = np.stack([np.bincount(rng.integers(0, len(loss), len(loss)),
                                       minlength=len(loss)) for _ in range(bootstrap)])
        samples = []
        for chunk in range(0, bootstrap, _CHUNK):
            part = counts[chunk:chunk + _CHUNK].astype(float)
            r = _refine(np.repeat(theta[None], len(part), axis=0), N, D, E, M, lb, loss,
                        huber, spec, counts=part)
            samples += [[spec.law(t).to_dict()[k] for k in PARAM_NAMES] for t in r.theta]
            resamples_converged += int(r.converged.sum())
            done += len(part)
            if progress:
                progress(done, total)
        nat = np.array(samples)
        for i, name in enumerate(PARAM_NAMES):
            lo, hi = np.percentile(nat[:, i], [2.5, 97.5])
            ci[name] = (float(lo), float(hi))

    held: list[HeldOut] = []
    if heldout and len(sizes) >= MIN_HELDOUT_SIZES:
        for s in sizes:
            tr = N != s
            if tr.sum() < min_points:
                continue
            t, _c, _ok = _fit_theta(N[tr], D[tr], E[tr], M[tr], lb[tr], loss[tr], huber,
                                    int(starts), spec)
            p = _predict(t, N[~tr], D[~tr], E[~tr], M[~tr], lb[~tr])
            err = np.abs(p - loss[~tr]) / loss[~tr]
            held.append(HeldOut(float(s), int((~tr).sum()), float(err.mean()), float(err.max())))
            done += 1
            if progress:
                progress(done, total)

    return CapybaraFit(law=law, n_points=len(loss), cost=cost, huber_delta=huber, residuals=rel,
                       rms_rel=float(np.sqrt(np.mean(rel ** 2))),
                       max_rel=float(np.max(np.abs(rel))),
                       outliers=outliers, by_size=by_size, ci=ci, bootstrap=bootstrap,
                       heldout=tuple(held), free=spec.free,
                       on_bound=_on_bound(theta, _bounds(loss), spec), converged=converged,
                       resamples_converged=resamples_converged)


def _on_bound(theta: np.ndarray, bounds: tuple[np.ndarray, np.ndarray], spec: _Spec) -> dict:
    """Free constant -> "lower"/"upper" where ``theta`` ends within :data:`ON_BOUND` of the
    range of a bound."""
    lo, hi = bounds
    near = ON_BOUND * (hi - lo)
    out = {}
    for i, name in enumerate(PARAM_NAMES):
        if name in spec.free:
            if theta[i] <= lo[i] + near[i]:
                out[name] = "lower"
            elif theta[i] >= hi[i] - near[i]:
                out[name] = "upper"
    return out


class LayoutRow(NamedTuple):
    """The best (E, M) split of one width under two laws."""

    bits: int
    reference: tuple[int, int]
    fitted: tuple[int, int]


@dataclass(frozen=True)
class SupportedFit:
    """What a set of runs can tell about the law: the requested fit and, where that fit does not
    identify every constant it frees, the reduced fit (:data:`REDUCED_FREE` free, the other
    constants held at the reference law's values) with its own intervals and held-out error."""

    full: CapybaraFit
    reduced: CapybaraFit | None
    #: the law that held constants come from (the paper's unless the caller gave one)
    reference: CapybaraLaw

    @property
    def supported(self) -> CapybaraFit:
        """The fit these runs support: the full one where it is identified, else the reduced."""
        return self.full if self.reduced is None else self.reduced

    def layouts(self, widths: Any = range(3, 17)) -> tuple[LayoutRow, ...]:
        """Best E/M per total width P under the reference law and under the full fit (only δ and
        ν decide it: Sun et al. §4.2)."""
        return tuple(LayoutRow(int(P), self.reference.optimal_layout(int(P)),
                               self.full.law.optimal_layout(int(P))) for P in widths)

    def to_dict(self) -> dict[str, Any]:
        """The supported fit's document (its ``constants`` are what ``--law`` then uses), with
        ``supported`` ("full"/"reduced"), the full fit under ``full`` when it was reduced, and
        the best layouts per width under the reference law and the full fit."""
        doc = self.supported.to_dict()
        doc["supported"] = "full" if self.reduced is None else "reduced"
        if self.reduced is not None:
            doc["full"] = self.full.to_dict()
        doc["layouts"] = [{"bits": r.bits, "reference": list(r.reference),
                           "fitted": list(r.fitted)} for r in self.layouts()]
        return doc


def fit_capybara_supported(*, free: Any = None, fixed: CapybaraLaw | None = None,
                           progress: Any = None, **kwargs: Any) -> SupportedFit:
    """:func:`fit_capybara_detailed` (same arguments), then, if the fit leaves a constant not
    identified (:meth:`CapybaraFit.identification`) and frees more than :data:`REDUCED_FREE`,
    the reduced fit with the same bootstrap and held-out settings.  ``progress(done, total)``
    counts both fits' refits (``total`` grows when the reduced fit starts)."""
    full = fit_capybara_detailed(free=free, fixed=fixed, progress=progress, **kwargs)
    reduced = None
    if not full.identified and set(full.free) > set(REDUCED_FREE):
        steps = fit_steps(kwargs["N"], full.bootstrap, kwargs.get("heldout", True))
        second = None if progress is None else (
            lambda done, total: progress(steps + done, steps + total))
        reduced = fit_capybara_detailed(free=REDUCED_FREE, fixed=fixed, progress=second,
                                        **kwargs)
    return SupportedFit(full=full, reduced=reduced, reference=fixed or CapybaraLaw.paper())


def fit_capybara_full(**kwargs: Any) -> CapybaraFit:
    """Another name of :func:`fit_capybara_detailed`; returns a :class:`FitResult` with
    ``.law``, ``.ci``, ``.held_out`` and ``.residuals``."""
    return fit_capybara_detailed(**kwargs)


#: Another name of :class:`CapybaraFit`, the result of :func:`fit_capybara_full`.
FitResult = CapybaraFit


# ------------------------------------------------------------------------------------ other laws
def fit_kumar(*, N, D, E, M, loss, huber_delta: float = DEFAULT_HUBER) -> KumarLaw:
    """Fit Kumar et al.'s precision law in Sun et al.'s Eq. (6) form (P = 1 + E + M) by robust
    bounded least squares on log loss, started from a small grid."""
    N, D, E, M, _lb, loss = _prepare(N, D, E, M, 1.0, loss)
    huber = _check_huber(huber_delta)
    P = 1.0 + E + M
    y = np.log(loss)
    lo = np.array([-20.0, 0.01, -20.0, 0.01, 0.0, -5.0])
    hi = np.array([40.0, 2.0, 60.0, 2.0, float(np.min(loss)), 5.0])

    def pred(t):
        ln_n, a, ln_d, b, eps, ln_g = t
        neff = N * -np.expm1(-P / math.exp(ln_g))
        return np.exp(ln_n - a * np.log(neff)) + np.exp(ln_d - b * np.log(D)) + eps

    best = None
    for a, b, g in itertools.product((0.2, 0.4), (0.3, 0.5), (1.0, 3.0)):
        eps0 = 0.5 * float(np.min(loss))
        half = math.log(max(np.mean(loss) - eps0, 1e-3) / 2)
        t0 = np.array([half + a * math.log(np.median(N)), a,
                       half + b * math.log(np.median(D)), b, eps0, math.log(g)])
        r = least_squares(lambda t: np.log(np.maximum(pred(t), 1e-300)) - y, _clip(t0, lo, hi),
                          bounds=(lo, hi), loss="huber", f_scale=huber, x_scale="jac",
                          max_nfev=4000)
        if best is None or r.cost < best.cost:
            best = r
    ln_n, a, ln_d, b, eps, ln_g = best.x
    return KumarLaw(n=math.exp(ln_n), alpha=float(a), d=math.exp(ln_d), beta=float(b),
                    eps=float(eps), gamma=math.exp(ln_g))


def fit_qid(N, D, P, delta_loss, *, huber_delta: float = 0.05) -> QiDLaw:
    """Fit Ouyang et al.'s ΔL = k D^β / (N^α P^γ) to post-training-quantization degradations
    (nats/token).  Linear in log space; Huber on log ΔL (scale 0.05 = 5%).  Rows with
    ΔL <= 0 carry no information for a power law and are dropped."""
    N, D, P, dl = (np.asarray(v, dtype=float).ravel() for v in (N, D, P, delta_loss))
    if not (len(N) == len(D) == len(P) == len(dl)):
        raise ValueError("N, D, P, delta_loss: must have equal lengths")
    keep = dl > 0
    if keep.sum() < MIN_QID_POINTS:
        raise ValueError(f"delta_loss: need at least {MIN_QID_POINTS} positive degradations, "
                         f"got {int(keep.sum())}")
    N, D, P, dl = N[keep], D[keep], P[keep], dl[keep]
    if np.any(N <= 0) or np.any(D <= 0) or np.any(P <= 0):
        raise ValueError("N, D, P: must be > 0")
    X = np.column_stack([np.ones_like(N), -np.log(N), np.log(D), -np.log(P)])
    y = np.log(dl)
    t0, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = least_squares(lambda t: X @ t - y, t0, loss="huber", f_scale=_check_huber(huber_delta))
    lk, a, b, g = r.x
    return QiDLaw(k=math.exp(lk), alpha=float(a), beta=float(b), gamma=float(g))


# ------------------------------------------------------------------------------------ I/O
_CSV_ALIASES = {
    "N": ("N", "n_params"), "D": ("D", "tokens"), "E": ("E", "exp_bits"),
    "M": ("M", "man_bits"), "B": ("B", "block"), "loss": ("loss", "val_loss"),
}


def is_sqlite(path: Path) -> bool:
    """True when ``path`` starts with the SQLite header."""
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def load_runs_arrays(path: str | Path, include_baseline: bool = False) -> dict[str, np.ndarray]:
    """Arrays ``N, D, E, M, B, loss`` (the keywords of :func:`fit_capybara`) from a results
    database (finished quantized runs; a quantized run with no block is per-tensor) or a CSV.

    ``include_baseline`` adds unquantized runs as B = 1 (no quantization penalty), which pins the
    base-law constants.  Runs trained with a recipe (no single E/M) are never used
    (:func:`explorer.results.is_recipe_run`; in a CSV, ``fmt`` ``recipe`` or a ``recipe``
    column).  B is returned as the block size (2**log2 B, channel = 2**13.1567)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a results database or a "
                                              "CSV file", str(path))
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    rows: list[tuple] = []          # (N, D, E, M, log2 B, loss)
    if is_sqlite(p):
        with results.read_only(p) as con:
            measured = results.measured_runs(con)
        for r in measured:
            n, d, e, m, loss = (r[k] for k in ("n_params", "tokens", "exp_bits", "man_bits",
                                               "val_loss"))
            if e is None or m is None:
                if include_baseline and results.is_baseline_run(r):
                    rows.append((n, d, 0, 0, 0.0, loss))
                continue
            rows.append((n, d, e, m, results.run_log2_block(r["block"]), loss))
    else:
        try:
            rows = _csv_rows(p, include_baseline)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text CSV (byte 0x{exc.object[exc.start]:02x} "
                             f"at offset {exc.start}); give a results database or a CSV with "
                             f"columns N,D,E,M,B,loss") from None
    if not rows:
        raise ValueError(f"{path}: no finished quantized runs to fit")
    lb = np.array([r[4] for r in rows], dtype=float)
    return {
        "N": np.array([r[0] for r in rows], dtype=float),
        "D": np.array([r[1] for r in rows], dtype=float),
        "E": np.array([r[2] for r in rows], dtype=float),
        "M": np.array([r[3] for r in rows], dtype=float),
        "B": 2.0 ** lb,
        "loss": np.array([r[5] for r in rows], dtype=float),
    }


def _csv_rows(p: Path, include_baseline: bool) -> list[tuple]:
    """(N, D, E, M, log2 B, loss) per usable row of the CSV ``p``; ``ValueError`` naming the
    file and line for a missing column, a short row or a value that is not a number."""
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        try:
            fieldnames = reader.fieldnames
        except csv.Error as exc:
            raise ValueError(f"{p}: line 1: not a CSV header: {exc}") from None
        if fieldnames is None:
            raise ValueError(f"{p}: empty CSV")
        cols = {}
        for key, names in _CSV_ALIASES.items():
            found = [c for c in fieldnames if c.strip() in names]
            if not found:
                raise ValueError(f"{p}: CSV needs a column {' or '.join(names)}")
            cols[key] = found[0]
        rows: list[tuple] = []
        i = 1
        try:
            for i, row in enumerate(reader, start=2):
                if any(row[c] is None for c in cols.values()):
                    raise ValueError(f"fewer values than the {len(fieldnames)} header "
                                     f"columns")
                if results.is_recipe_run(row):
                    continue
                e_raw, m_raw = row[cols["E"]].strip(), row[cols["M"]].strip()
                blk = row[cols["B"]].strip()
                if e_raw in ("", "none") or m_raw in ("", "none"):
                    if include_baseline:
                        rows.append((float(row[cols["N"]]), float(row[cols["D"]]), 0, 0, 0.0,
                                     float(row[cols["loss"]])))
                    continue
                rows.append((float(row[cols["N"]]), float(row[cols["D"]]), float(e_raw),
                             float(m_raw), results.run_log2_block(blk), float(row[cols["loss"]])))
        except (ValueError, csv.Error) as exc:
            raise ValueError(f"{p}: line {i}: {exc}") from None
    return rows


def load_ptq_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """``N, D, P, delta_loss`` from the ``ptq`` table of a results database (keywords of
    :func:`fit_qid`): D = checkpoint tokens, P = bits, ΔL = loss after − before."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with results.read_only(p) as con:
        rows = results.measured_ptq(con)
    q = [(r["n_params"], r["ckpt_tokens"], r["bits"], r["val_loss_before"], r["val_loss_after"])
         for r in rows]
    q = [r for r in q if r[0] and r[1] and r[2]]
    return {
        "N": np.array([r[0] for r in q], dtype=float),
        "D": np.array([r[1] for r in q], dtype=float),
        "P": np.array([r[2] for r in q], dtype=float),
        "delta_loss": np.array([r[4] - r[3] for r in q], dtype=float),
    }


def fit_qid_from_results(path: str | Path) -> QiDLaw | None:
    """The QiD law fitted to the ``ptq`` rows of the results database at ``path``, or None where
    there is nothing to fit: ``path`` is not an SQLite file (e.g. a CSV of runs), or it holds
    fewer than :data:`MIN_QID_POINTS` positive degradations."""
    p = Path(path)
    if not (p.is_file() and is_sqlite(p)):
        return None
    a = load_ptq_arrays(p)
    if int((a["delta_loss"] > 0).sum()) < MIN_QID_POINTS:
        return None
    return fit_qid(**a)


def save_fit(fit: SupportedFit | CapybaraFit | CapybaraLaw, path: str | Path,
             extra: dict | None = None) -> dict:
    """Write a fit (or a bare law) as JSON; returns the document written.  Its ``constants``
    are the law :func:`load_fit` reads back: for a :class:`SupportedFit`, the supported one."""
    doc = (fit.to_dict() if isinstance(fit, (SupportedFit, CapybaraFit))
           else {"kind": "capybara-fit", "constants": fit.to_dict()})
    if extra:
        doc.update(extra)
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(doc, indent=2) + "\n")
    return doc


def load_fit(path: str | Path) -> CapybaraLaw:
    """The law of a ``fpx fit`` JSON (``{"constants": {...}}``) or of a bare constants object
    (same as :func:`explorer.laws.load_law`)."""
    return load_law(path)


# ------------------------------------------------------------------------------------ paper design
#: Sun et al. Table 3: model sizes N (non-embedding parameters) and token counts D of the runs.
PAPER_SIZES = (40894464, 84934656, 154140672, 679477248)
PAPER_TOKENS = (10485760000, 20971520000, 52428800000, 104857600000)
_PAPER_LAYOUTS = ((0, 7), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 1), (2, 3), (3, 1), (3, 2),
                  (4, 1), (4, 3), (4, 5), (5, 1), (5, 2), (6, 1))


def paper_design() -> dict[str, np.ndarray]:
    """The (N, D, E, M, B) grid of Sun et al.'s 359 fitting runs (Table 3, rows 0–358): per (N, D)
    E1M1 with blocks 32..256 (and 512 for 41M and 679M), channel and tensor scaling, and 16
    channel-scaled layouts (679M at 100B tokens lacks E5M1).  B is the block size (channel and
    tensor as 2**13.1567)."""
    rows = []
    ch = 2.0 ** log2_block("channel")
    for N in PAPER_SIZES:
        blocks = (32, 64, 128, 256, 512) if N in (40894464, 679477248) else (32, 64, 128, 256)
        for D in PAPER_TOKENS:
            layouts = [(1, 1, float(b)) for b in blocks] + [(1, 1, ch), (1, 1, ch)]
            layouts += [(e, m, ch) for e, m in _PAPER_LAYOUTS]
            if N == 679477248 and D == 104857600000:
                layouts.remove((5, 1, ch))
            rows += [(N, D, e, m, b) for e, m, b in layouts]
    a = np.array(rows, dtype=float)
    return {"N": a[:, 0], "D": a[:, 1], "E": a[:, 2], "M": a[:, 3], "B": a[:, 4]}


def paper_validation_design() -> dict[str, np.ndarray]:
    """Sun et al.'s held-out validation runs (Table 3, rows 359–370): 1.2B, 7B and 70B models."""
    rows = [(1233125376, D, e, m, 512) for D in PAPER_TOKENS for e, m in ((1, 2), (4, 3))]
    rows += [(7083130880, 10485760000, 4, 3, 64), (7083130880, 104857600000, 4, 3, 64),
             (71236059136, 10485760000, 4, 3, 64), (71236059136, 20971520000, 4, 3, 64)]
    a = np.array(rows, dtype=float)
    return {"N": a[:, 0], "D": a[:, 1], "E": a[:, 2], "M": a[:, 3], "B": a[:, 4]}
