"""Fits that say what the data can tell: the compiled refinement against scipy's, identification
marks, the reduced fit, and what `fpx fit` and the report print about them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.optimize import least_squares

from explorer import fit_kernel
from explorer.cli import main
from explorer.fit import (
    REDUCED_FREE,
    SPAN_FACTOR,
    _bounds,
    _predict,
    _prepare,
    _refine,
    _Spec,
    _vp_starts,
    fit_capybara_detailed,
    fit_capybara_supported,
    load_fit,
    paper_design,
)
from explorer.laws import CapybaraLaw

LAW = CapybaraLaw.paper()
HUBER = 1e-3


def _noisy(design, noise, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(LAW.loss(**design))
    return y * (1 + noise * rng.standard_normal(y.shape))


def _scipy_refine(theta0, N, D, E, M, lb, loss, spec):
    """The reference: scipy's trust-region-reflective least_squares on the same Huber cost."""
    lo, hi = _bounds(loss)
    lo, hi = lo[spec.mask], hi[spec.mask]
    y = np.log(loss)

    def resid(x):
        return np.log(np.maximum(_predict(spec.full(x), N, D, E, M, lb), 1e-300)) - y

    span = hi - lo
    x0 = np.clip(np.asarray(theta0, float)[spec.mask], lo + 1e-9 * span, hi - 1e-9 * span)
    r = least_squares(resid, x0, bounds=(lo, hi), loss="huber", f_scale=HUBER, x_scale="jac",
                      max_nfev=4000, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return spec.full(r.x), float(r.cost)


def _small_sweep(seed=0, noise=0.01):
    """A CPU-sized sweep like the committed micro-sweep: 3 sizes, 4 token counts, 4 layouts."""
    rows = [(N, D, e, m, b) for N in (2.5e4, 1e5, 2.2e5) for D in (1.3e5, 2.6e5, 5.2e5, 1e6)
            for e, m in ((1, 2), (2, 1), (3, 2), (4, 3)) for b in (32, 2 ** 13.1567)]
    a = np.array(rows)
    g = {"N": a[:, 0], "D": a[:, 1], "E": a[:, 2], "M": a[:, 3], "B": a[:, 4]}
    truth = CapybaraLaw(**{**LAW.to_dict(), "n": 40.0, "d": 3000.0, "eps": 1.5})
    rng = np.random.default_rng(seed)
    y = np.asarray(truth.loss(**g)) * (1 + noise * rng.standard_normal(len(rows)))
    return g, y


@pytest.mark.parametrize("free", [None, REDUCED_FREE])
@pytest.mark.parametrize("data", ["paper", "small"])
def test_refinement_reaches_scipys_minimum_or_lower(free, data):
    if data == "paper":
        g = paper_design()
        y = _noisy(g, 0.005, 3)
    else:
        g, y = _small_sweep()
    spec = _Spec(free, None)
    N, D, E, M, lb, loss = _prepare(g["N"], g["D"], g["E"], g["M"], g["B"], y)
    starts = _vp_starts(N, D, E, M, lb, loss, 3, spec)
    fast = _refine(starts, N, D, E, M, lb, loss, HUBER, spec)
    assert fast.converged.all()
    for k, t0 in enumerate(starts):
        theta, cost = _scipy_refine(t0, N, D, E, M, lb, loss, spec)
        assert fast.cost[k] <= cost * (1 + 1e-9)
    # held constants stay exactly where the spec put them
    held = ~spec.mask
    assert np.array_equal(fast.theta[:, held], np.array(starts)[:, held])


def test_bootstrap_weights_are_the_resample():
    # a resample with replacement weighted by counts has the cost of the replicated runs
    g, y = _small_sweep(1)
    spec = _Spec(None, None)
    N, D, E, M, lb, loss = _prepare(g["N"], g["D"], g["E"], g["M"], g["B"], y)
    theta = _vp_starts(N, D, E, M, lb, loss, 1, spec)[0]
    idx = np.random.default_rng(0).integers(0, len(loss), len(loss))
    counts = np.bincount(idx, minlength=len(loss)).astype(float)
    logs = (np.log(N), np.log(D), np.log(E + 0.5), np.log(M + 0.5), lb, np.log(loss))
    r, J = np.empty(len(loss)), np.empty((len(loss), 8))
    weighted = fit_kernel._residuals(theta, *logs, counts, HUBER, r, J, False)
    rr = np.log(_predict(theta, N[idx], D[idx], E[idx], M[idx], lb[idx])) - np.log(loss[idx])
    a = np.abs(rr)
    replicated = np.sum(np.where(a <= HUBER, 0.5 * rr * rr, HUBER * a - 0.5 * HUBER ** 2))
    assert weighted == pytest.approx(replicated, rel=1e-12)
    # and the refinement of the weights is as good as scipy's refit of the replicated runs
    fast = _refine(theta, N, D, E, M, lb, loss, HUBER, spec, counts=counts[None])
    _t, cost = _scipy_refine(theta, N[idx], D[idx], E[idx], M[idx], lb[idx], loss[idx], spec)
    assert fast.cost[0] <= cost * (1 + 1e-9)


def test_a_rich_design_identifies_every_constant():
    g = paper_design()
    fits = fit_capybara_supported(**g, loss=_noisy(g, 0.005, 1), bootstrap=30, seed=0)
    assert fits.full.identified and fits.reduced is None and fits.supported is fits.full
    assert not any(fits.full.identification().values())
    assert all(hi / lo < SPAN_FACTOR for lo, hi in fits.full.ci.values())
    # the fitted law keeps the paper's layouts, and says so
    assert all(r.fitted == r.reference for r in fits.layouts())
    doc = fits.to_dict()
    assert doc["supported"] == "full" and doc["not_identified"] == {} and "full" not in doc


def test_one_layout_cannot_identify_delta_and_nu():
    # every run has the same (E, M): δ and ν trade off freely against γ, so they are marked
    g, y = _small_sweep(2)
    keep = (g["E"] == 2) & (g["M"] == 1)
    g = {k: v[keep] for k, v in g.items()}
    fits = fit_capybara_supported(**g, loss=y[keep], bootstrap=30, seed=0)
    why = fits.full.identification()
    assert not fits.full.identified
    assert why["delta"] or why["nu"] or why["gamma"]
    for name, reason in why.items():
        if reason:
            assert "bound" in reason or "interval" in reason
    # the reduced fit frees the scale constants only, with its own intervals and held-out error
    red = fits.reduced
    assert red is not None and fits.supported is red and red.free == REDUCED_FREE
    assert red.law.delta == LAW.delta and red.law.nu == LAW.nu
    assert len(red.heldout) == 3 and set(red.ci) == set(LAW.to_dict())
    doc = fits.to_dict()
    json.dumps(doc)
    assert doc["supported"] == "reduced" and doc["constants"] == red.law.to_dict()
    assert doc["full"]["constants"] == fits.full.law.to_dict()
    assert set(doc["full"]["not_identified"]) == {k for k, v in why.items() if v}


def test_on_bound_and_span_marks():
    g, y = _small_sweep(3)
    fit = fit_capybara_detailed(**g, loss=y, bootstrap=0, heldout=False)
    # without intervals only the bounds speak
    assert {k for k, why in fit.identification().items() if why} == set(fit.on_bound)
    # a hand-made fit: one constant on its bound, one with a wide interval, one held
    from dataclasses import replace
    made = replace(fit, on_bound={"delta": "upper"}, free=("n", "d", "delta"),
                   ci={"n": (1.0, 2.0), "d": (1.0, 100.0), "delta": (11.0, 12.0)})
    why = made.identification()
    assert why["n"] == "" and "spans 100x" in why["d"] and "upper bound" in why["delta"]
    assert "alpha" not in why and not made.identified
    assert made.identification(span_factor=1000)["d"] == ""
    zero = replace(fit, on_bound={}, free=("eps",), ci={"eps": (0.0, 1.0)})
    assert "reaches 0" in zero.identification()["eps"]


def _csv(path, g, y):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["N", "D", "E", "M", "B", "loss"])
        for i in range(len(y)):
            w.writerow([g["N"][i], g["D"][i], g["E"][i], g["M"][i], g["B"][i], y[i]])


def test_cli_prints_intervals_marks_and_the_reduced_fit(tmp_path, capsys):
    g, y = _small_sweep(2)
    keep = (g["E"] == 2) & (g["M"] == 1)
    _csv(tmp_path / "runs.csv", {k: v[keep] for k, v in g.items()}, y[keep])
    out = tmp_path / "fit.json"
    assert main(["fit", str(tmp_path / "runs.csv"), "--bootstrap", "20", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "95% interval" in text and "NOT IDENTIFIED by these runs" in text
    assert "The reduced fit they support" in text and "held" in text
    # the saved law is the supported (reduced) one: what --law then uses
    doc = json.loads(out.read_text())
    assert doc["supported"] == "reduced"
    assert load_fit(out) == CapybaraLaw(**doc["constants"])
    assert load_fit(out).delta == LAW.delta
