"""The Capybara fit's inner loop, compiled: a bounded robust trust-region refinement.

:mod:`explorer.fit` refines the same small problem many times (every start, every held-out model
size, every bootstrap resample).  Each refinement is a few hundred cheap iterations on at most a
few thousand runs -- interpreter overhead dominates in Python -- so it runs here with numba
(compiled once, cached on disk), and :func:`refine_many` runs a batch of problems in one call.

The problem.  Constants ``theta`` in the internal parametrisation of :mod:`explorer.fit`
(ln n, α, ln d, β, ε, ln γ, δ, ν), runs i with logarithms ``lnN, lnD, lnE = ln(E + 0.5),
lnM = ln(M + 0.5)``, ``lb = log2 B`` and measured log loss ``y``::

    L_i      = n/N^α + d/D^β + ε + (D^β/N^α) lb / (γ (E+0.5)^δ (M+0.5)^ν)
    r_i      = ln L_i - y_i
    cost     = sum_i  c_i huber(r_i),   huber(r) = r²/2 if |r| <= f else f|r| - f²/2

within the box ``lo <= theta <= hi``, constants with ``free`` False held.  ``c_i >= 0`` weights
the runs: ones for a fit, 0/1 to leave runs out, resampling counts for a bootstrap resample (a
resample with replacement is the data with integer counts, so its cost is exactly this sum).
It is the cost ``scipy.optimize.least_squares(..., loss="huber", f_scale=f)`` minimises, and the
method is the one that function's "trf" uses (Branch, Coleman and Li 1999), written for this
one residual:

1. Residuals and the analytic Jacobian d r_i / d theta (each term of L over L).
2. Huber's exact gradient ``g = sum c_i psi(r_i) J_i`` (``psi(r) = r`` inside f, ``f sign r``
   outside) and its exact curvature ``H = sum_{|r_i| <= f} c_i J_i J_i^T``: runs outside the
   quadratic zone add slope, no curvature.
3. Scaling: each constant in the units of its Jacobian column norm (never shrinking, as
   ``x_scale="jac"``), and, toward a bound, in the square root of its distance to that bound
   (Coleman-Li), so iterates approach bounds geometrically and stay strictly inside.
4. The trust-region step in those scaled variables, solved exactly (eigenvalues of the 8 x 8
   model).  A step that would leave the box is replaced by the better, by the model, of the
   step stopped short of the bound and the step re-solved with the leaving constants held.
5. The radius shrinks to a quarter of the step when the cost fell by less than a quarter of the
   model's prediction and doubles when it fell as predicted on the radius; the step is taken
   when the cost falls.  Stop when a taken step lowers the cost by less than ``ftol`` relative
   (with a trustworthy model) or moves ``theta`` by less than ``xtol`` relative, when the scaled
   gradient vanishes, when the radius collapses (no descent left), or after ``max_iter``
   evaluations.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INSIDE = 1e-10           # a start is moved this far (relative) inside its bounds
_TO_BOUND = 0.995         # a step that would leave the box stops short: this much of the way
_GTOL = 1e-14             # stop when the scaled gradient is this small against the cost
P = 8                     # constants

#: Status codes of :func:`refine`.
CONVERGED, NO_DESCENT, MAX_ITER = 0, 1, 2


@njit(cache=True, nogil=True, error_model="numpy")
def _residuals(theta, lnN, lnD, lnE, lnM, lb, y, c, f, r, J, want_jac):
    """Fill ``r`` (and ``J`` if ``want_jac``); return the weighted Huber cost."""
    ln_n, a, ln_d, b, eps, ln_g, de, nu = (theta[0], theta[1], theta[2], theta[3], theta[4],
                                          theta[5], theta[6], theta[7])
    cost = 0.0
    for i in range(y.shape[0]):
        size = np.exp(ln_n - a * lnN[i])
        data = np.exp(ln_d - b * lnD[i])
        pen = np.exp(b * lnD[i] - a * lnN[i] - ln_g - de * lnE[i] - nu * lnM[i]) * lb[i]
        pred = max(size + data + eps + pen, 1e-300)
        ri = np.log(pred) - y[i]
        r[i] = ri
        ai = abs(ri)
        cost += c[i] * (0.5 * ri * ri if ai <= f else f * ai - 0.5 * f * f)
        if want_jac:
            inv = 1.0 / pred
            J[i, 0] = size * inv
            J[i, 1] = -lnN[i] * (size + pen) * inv
            J[i, 2] = data * inv
            J[i, 3] = lnD[i] * (pen - data) * inv
            J[i, 4] = inv
            J[i, 5] = -pen * inv
            J[i, 6] = -lnE[i] * pen * inv
            J[i, 7] = -lnM[i] * pen * inv
    return cost


@njit(cache=True, nogil=True, error_model="numpy")
def _trust_step(gh, Hh, radius):
    """argmin_p gh.p + p.Hh.p/2 subject to |p| <= radius (Hh symmetric), by eigenvalues:
    the Newton step where it is inside, else p(lam) = -(Hh + lam I)^-1 gh with |p(lam)| = radius
    (lam found by bisection, geometric once its lower end is positive)."""
    m = gh.shape[0]
    w, Q = np.linalg.eigh(Hh)
    gq = Q.T @ gh
    wmin = w[0]
    if wmin > 0.0:
        p = np.zeros(m)
        for i in range(m):
            p -= gq[i] / w[i] * Q[:, i]
        if np.sqrt(np.sum(p * p)) <= radius:
            return p
    lam_lo = max(0.0, -wmin) + 1e-300
    lam_hi = max(lam_lo * 2.0, np.sqrt(np.sum(gq * gq)) / radius + abs(wmin) + 1e-300)
    for _ in range(100):                 # |p(lam)| falls with lam: bisect |p| = radius
        lam = np.sqrt(lam_lo * lam_hi) if lam_lo > 1e-290 else 0.5 * (lam_lo + lam_hi)
        norm2 = 0.0
        for i in range(m):
            norm2 += (gq[i] / (w[i] + lam)) ** 2
        if norm2 > radius * radius:
            lam_lo = lam
        else:
            lam_hi = lam
        if lam_hi - lam_lo <= 1e-10 * lam_hi:
            break
    p = np.zeros(m)
    for i in range(m):
        p -= gq[i] / (w[i] + lam_hi) * Q[:, i]
    return p


@njit(cache=True, nogil=True, error_model="numpy")
def _model(gh, Hh, p):
    """The quadratic model's change for step ``p``: gh.p + p.Hh.p/2."""
    return np.sum(gh * p) + 0.5 * np.sum(p * (Hh @ p))


@njit(cache=True, nogil=True, error_model="numpy")
def _to_box(x, idx, step, lo, hi):
    """The largest fraction (at most 1) of ``step`` (over the constants ``idx``) that keeps
    ``x`` inside the box."""
    frac = 1.0
    for a in range(idx.shape[0]):
        j = idx[a]
        if step[a] > 0.0:
            frac = min(frac, (hi[j] - x[j]) / step[a])
        elif step[a] < 0.0:
            frac = min(frac, (lo[j] - x[j]) / step[a])
    return frac


@njit(cache=True, nogil=True, error_model="numpy")
def refine(theta0, free, lo, hi, lnN, lnD, lnE, lnM, lb, y, c, f, max_iter, ftol, xtol):
    """Refine ``theta0`` (see the module docstring).  Returns (theta, cost, evaluations, status)
    with status :data:`CONVERGED`, :data:`NO_DESCENT` or :data:`MAX_ITER`."""
    n = y.shape[0]
    idx = np.nonzero(free)[0]
    m = idx.shape[0]
    # 1. a strictly feasible start: the scaling below needs a distance to every bound
    x = theta0.copy()
    for j in idx:
        x[j] = min(max(x[j], lo[j] + _INSIDE * max(1.0, abs(lo[j]))),
                   hi[j] - _INSIDE * max(1.0, abs(hi[j])))
    r = np.empty(n)
    J = np.empty((n, P))
    rn = np.empty(n)
    cost = _residuals(x, lnN, lnD, lnE, lnM, lb, y, c, f, r, J, True)
    if m == 0:
        return x, cost, 1, CONVERGED
    g = np.empty(m)
    H = np.empty((m, m))
    unit = np.ones(m)              # the constants' units: Jacobian column norms, never shrinking
    v = np.empty(m)
    dv = np.empty(m)
    xn = x.copy()
    radius = -1.0
    for evals in range(1, max_iter + 1):
        # 2. exact gradient; curvature from the runs in the quadratic zone only
        g[:] = 0.0
        H[:, :] = 0.0
        for i in range(n):
            if c[i] == 0.0:
                continue
            ri = r[i]
            inside = abs(ri) <= f
            psi = ri if inside else (f if ri > 0 else -f)
            for a in range(m):
                Ja = J[i, idx[a]]
                g[a] += c[i] * psi * Ja
                if inside:
                    for b in range(a + 1):
                        H[a, b] += c[i] * Ja * J[i, idx[b]]
        for a in range(m):
            for b in range(a):
                H[b, a] = H[a, b]
            col = np.sqrt(H[a, a])
            unit[a] = max(unit[a], col) if evals > 1 else (col if col > 0.0 else 1.0)
        # 3. Coleman-Li scaling: a constant moving toward a bound is measured in the square root
        # of its distance to it, so the iterates approach bounds geometrically, never cross
        gmax = 0.0
        for a in range(m):
            j = idx[a]
            if g[a] < 0.0:
                v[a], dv[a] = hi[j] - x[j], -1.0
            elif g[a] > 0.0:
                v[a], dv[a] = x[j] - lo[j], 1.0
            else:
                v[a], dv[a] = 1.0, 0.0
            if dv[a] != 0.0:
                v[a] *= unit[a]          # a distance in the constant's own units
            gmax = max(gmax, abs(g[a] * v[a]))
        if gmax <= _GTOL * max(cost, 1e-300):
            return x, cost, evals, CONVERGED
        d = np.sqrt(v) / unit
        gh = d * g
        Hh = np.empty((m, m))
        for a in range(m):
            for b in range(m):
                Hh[a, b] = d[a] * H[a, b] * d[b]
            Hh[a, a] += g[a] * dv[a] / unit[a]
        if radius < 0.0:
            radius = np.sqrt(np.sum((x[idx] * unit / np.sqrt(v)) ** 2))
            if radius == 0.0:
                radius = 1.0
        # 4. trust-region step; if it would leave the box, the better (by the model) of that
        # step stopped short of the bound, and the step re-solved with the constants that
        # would leave held where they are
        ph = _trust_step(gh, Hh, radius)
        shrink = _to_box(x, idx, d * ph, lo, hi)
        if shrink < 1.0:
            theta = max(_TO_BOUND, 1.0 - np.sqrt(np.sum(gh * gh)))
            short = ph * (theta * shrink)
            moving = np.ones(m, dtype=np.bool_)
            for a in range(m):
                xa = x[idx[a]] + d[a] * ph[a]
                if xa <= lo[idx[a]] or xa >= hi[idx[a]]:
                    moving[a] = False
            sub = np.nonzero(moving)[0]
            held = np.zeros(m)
            if sub.shape[0] > 0:
                ps = _trust_step(gh[sub], Hh[sub][:, sub], radius)
                held[sub] = ps
                cut = _to_box(x, idx, d * held, lo, hi)
                if cut < 1.0:
                    held *= theta * cut
            if _model(gh, Hh, held) < _model(gh, Hh, short):
                ph = held
            else:
                ph = short
        step = d * ph
        predicted = -_model(gh, Hh, ph)
        xn[:] = x
        for a in range(m):
            xn[idx[a]] = x[idx[a]] + step[a]
        cn = _residuals(xn, lnN, lnD, lnE, lnM, lb, y, c, f, rn, J, False)
        # 5. radius and acceptance
        actual = cost - cn if np.isfinite(cn) else -np.inf
        ratio = actual / predicted if predicted > 0.0 else 0.0
        step_h = np.sqrt(np.sum(ph * ph))
        if ratio < 0.25:
            radius = 0.25 * step_h
        elif ratio > 0.75 and step_h >= 0.95 * radius:
            radius *= 2.0
        if actual > 0.0:
            x[:] = xn
            cost = _residuals(x, lnN, lnD, lnE, lnM, lb, y, c, f, r, J, True)
            small_drop = actual < ftol * cost and ratio > 0.25
            small_step = np.sqrt(np.sum(step * step)) < xtol * (
                xtol + np.sqrt(np.sum(x[idx] * x[idx])))
            if small_drop or small_step:
                return x, cost, evals, CONVERGED
        elif radius < 1e-300:
            return x, cost, evals, NO_DESCENT
    return x, cost, max_iter, MAX_ITER


@njit(cache=True, nogil=True, error_model="numpy")
def refine_many(theta0, free, lo, hi, lnN, lnD, lnE, lnM, lb, y, c, f, max_iter, ftol, xtol):
    """:func:`refine` for K independent problems: starts ``theta0`` (K, 8), boxes ``lo``/``hi``
    (K, 8) and weights ``c`` (K, n).  Returns (theta (K, 8), cost (K,), iterations (K,),
    status (K,))."""
    K = theta0.shape[0]
    out = np.empty((K, P))
    cost = np.empty(K)
    iters = np.empty(K, dtype=np.int64)
    status = np.empty(K, dtype=np.int64)
    for k in range(K):
        x, cst, it, st = refine(theta0[k], free, lo[k], hi[k], lnN, lnD, lnE, lnM, lb, y, c[k],
                                f, max_iter, ftol, xtol)
        out[k] = x
        cost[k] = cst
        iters[k] = it
        status[k] = st
    return out, cost, iters, status
