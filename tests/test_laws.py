"""The scaling laws: published numbers of Sun et al. (arXiv 2501.02423) reproduced from their
constants, and every closed form checked against direct numerical optimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from explorer.laws import (CHANNEL_LOG2B, CapybaraLaw, ChinchillaLaw, KumarLaw, QiDLaw,
                           layout_name, log2_block, qid_loss)

LAW = CapybaraLaw.paper()


def test_table2_constants():
    assert LAW.to_dict() == {"n": 69.2343, "alpha": 0.2368, "d": 68973.0621, "beta": 0.5162,
                             "eps": 1.9061, "gamma": 11334.5197, "delta": 3.1926, "nu": 2.9543}
    assert CapybaraLaw.from_dict(LAW.to_dict()) == LAW


def test_loss_formula_and_vectorisation():
    N, D, E, M, B = 1e9, 1e11, 4, 3, 128
    want = (69.2343 / N ** 0.2368 + 68973.0621 / D ** 0.5162 + 1.9061
            + D ** 0.5162 / N ** 0.2368 * 7 / (11334.5197 * 4.5 ** 3.1926 * 3.5 ** 2.9543))
    assert LAW.loss(N, D, E, M, B) == pytest.approx(want, rel=1e-14)
    Ns = np.array([1e8, 1e9, 1e10])
    got = LAW.loss(Ns, D, E, M, "channel")
    assert got.shape == (3,)
    for i, n in enumerate(Ns):
        assert got[i] == pytest.approx(LAW.loss(n, D, E, M, 2 ** CHANNEL_LOG2B), rel=1e-12)
    # B = 1: every element has its own scale -> exactly the base (BF16) law
    assert LAW.loss(N, D, 1, 1, 1) == pytest.approx(LAW.base_loss(N, D), rel=1e-15)
    mixed = LAW.loss(N, D, 2, 1, np.array(["32", "channel", "tensor"], dtype=object))
    assert mixed[0] < mixed[1] == mixed[2]


def test_block_parsing_errors():
    assert log2_block("channel") == CHANNEL_LOG2B == 13.1567
    assert log2_block(32) == 5.0 and log2_block("128") == 7.0
    for bad in (0, 0.5, -4, "rows", float("nan")):
        with pytest.raises(ValueError, match="B"):
            log2_block(bad)
    with pytest.raises(ValueError, match="N"):
        LAW.loss(0, 1e9, 2, 1, 32)
    with pytest.raises(ValueError, match="E"):
        LAW.loss(1e9, 1e9, -1, 1, 32)
    with pytest.raises(TypeError, match="P"):
        LAW.optimal_layout(4.0)
    with pytest.raises(ValueError, match="P"):
        LAW.optimal_layout(0)
    with pytest.raises(ValueError, match="gamma"):
        CapybaraLaw(**{**LAW.to_dict(), "gamma": -1.0})


# Sun et al. Fig. 5: "The optimal float layouts of different bit widths" (fp1 ... fp16)
FIG5 = {1: (0, 0), 2: (1, 0), 3: (1, 1), 4: (2, 1), 5: (2, 2), 6: (3, 2), 7: (3, 3), 8: (4, 3),
        9: (4, 4), 10: (5, 4), 11: (5, 5), 12: (6, 5), 13: (6, 6), 14: (7, 6), 15: (7, 7),
        16: (8, 7)}


@pytest.mark.parametrize("P", sorted(FIG5))
def test_optimal_layouts_fig5(P):
    assert LAW.optimal_layout(P) == FIG5[P]
    # brute force: the layout with the smallest predicted loss at an arbitrary (N, D, B)
    losses = {(e, P - 1 - e): LAW.loss(3e8, 4e10, e, P - 1 - e, 64) for e in range(P)}
    assert min(losses, key=losses.get) == FIG5[P]
    ranked = LAW.ranked_layouts(P)
    assert len(ranked) == P and ranked[0] == FIG5[P]
    assert [losses[r] for r in ranked] == sorted(losses.values())


def test_layout_ties_go_to_more_exponent_bits():
    sym = CapybaraLaw(**{**LAW.to_dict(), "delta": 3.0, "nu": 3.0})
    assert sym.optimal_layout(4) == (2, 1)          # E2M1 and E1M2 tie exactly
    assert sym.ranked_layouts(4)[:2] == [(2, 1), (1, 2)]
    assert sym.optimal_layout(5) == (2, 2)


def test_continuous_layout_matches_numerical_optimum():
    for P in (4.0, 8.0, 13.5):
        E, M = LAW.continuous_layout(P)
        assert E + M + 1 == pytest.approx(P)
        r = minimize_scalar(lambda m: -LAW.layout_score(P - 1 - m, m), bounds=(0, P - 1),
                            method="bounded", options={"xatol": 1e-10})
        assert M == pytest.approx(r.x, abs=1e-6)
    # gamma_rho reproduces the penalty at the continuous optimum (Eq. 34/35)
    E, M = LAW.continuous_layout(8.0)
    pen = LAW.penalty(1e9, 1e11, E, M, 128)
    assert pen == pytest.approx(1e11 ** LAW.beta / 1e9 ** LAW.alpha * 7 /
                                (LAW.gamma_rho * 8.0 ** (LAW.delta + LAW.nu)), rel=1e-12)


def test_critical_data_sizes_published():
    # Sun et al. §4.3: a 1B model has D_crit = 1730T tokens in BF16 (E8M7), 27T in FP8-E4M3 and
    # 0.4T in FP4-E2M1.  These follow from Table 2 with B = 128 (the block size of Figs. 7, 14).
    T = 1e12
    assert LAW.critical_data_size(1e9, 8, 7, 128) / T == pytest.approx(1730, abs=0.5)
    assert round(LAW.critical_data_size(1e9, 4, 3, 128) / T) == 27
    assert round(LAW.critical_data_size(1e9, 2, 1, 128) / T, 1) == 0.4


def test_critical_data_size_is_the_loss_minimum():
    for N, E, M, B in ((1e8, 2, 1, 32), (1e9, 4, 3, "channel"), (5e7, 1, 2, 512)):
        dc = LAW.critical_data_size(N, E, M, B)
        r = minimize_scalar(lambda x: LAW.loss(N, math.exp(x), E, M, B),
                            bounds=(math.log(dc) - 5, math.log(dc) + 5), method="bounded",
                            options={"xatol": 1e-10})
        assert math.exp(r.x) == pytest.approx(dc, rel=1e-4)
    assert LAW.critical_data_size(1e9, 4, 3, 1) == np.inf
    # larger N, more bits, smaller blocks -> later critical point (Sun et al. §4.3)
    assert LAW.critical_data_size(1e10, 2, 1, 32) > LAW.critical_data_size(1e9, 2, 1, 32)
    assert LAW.critical_data_size(1e9, 2, 2, 32) > LAW.critical_data_size(1e9, 2, 1, 32)
    assert LAW.critical_data_size(1e9, 2, 1, 32) > LAW.critical_data_size(1e9, 2, 1, 64)


def _numeric_joint(C, B, k=6 / 16, x0=None):
    lb = log2_block(B)

    def f(x):
        N, P = math.exp(x[0]), math.exp(x[1])
        return LAW.loss_at_precision(N, C / (k * P * N), P, 2 ** lb)

    r = minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-15, "maxiter": 40000})
    return math.exp(r.x[0]), math.exp(r.x[1]), r.fun


@pytest.mark.parametrize("C", [1e21, 1e25, 1e29])
def test_joint_compute_optimum_matches_numerical(C):
    opt = LAW.optimal_precision(C, 128)
    N, P, L = _numeric_joint(C, 128, x0=[math.log(opt.N) + 0.4, math.log(opt.P) - 0.3])
    assert opt.P == pytest.approx(P, rel=1e-5)
    assert opt.N == pytest.approx(N, rel=1e-4)
    assert opt.loss == pytest.approx(L, rel=1e-12)
    assert opt.C == pytest.approx(6 / 16 * opt.P * opt.N * opt.D, rel=1e-12)
    assert opt.layout == LAW.optimal_layout(round(opt.P))


def test_fig7_optimal_precision_between_4_and_8_bits():
    # Sun et al. Fig. 7 (B = 128, k = 6/16): for budgets 1e21..1e31 the cost-optimal precision
    # lies between 4 and 8 bits and grows with compute.
    Cs = np.logspace(21, 31, 21)
    Ps = [LAW.optimal_precision(C, 128).P for C in Cs]
    assert all(4 < p < 8 for p in Ps)
    assert all(np.diff(Ps) > 0)


def test_fixed_D_optimum_matches_numerical_and_fig14():
    C = 1e24
    for D in (1e11, 1e13):
        P = LAW.optimal_precision_fixed_D(D, 128)
        r = minimize_scalar(lambda p: LAW.loss_at_precision(C / (6 / 16 * p * D), D, p, 128),
                            bounds=(1, 30), method="bounded", options={"xatol": 1e-10})
        assert P == pytest.approx(r.x, rel=1e-6)
    # Sun et al. Fig. 14 (B = 128): from 0.1T to 100T tokens the optimal precision stays in 4..8
    Ps = [LAW.optimal_precision_fixed_D(D, 128) for D in np.logspace(11, 14, 13)]
    assert all(4 < p < 8 for p in Ps) and all(np.diff(Ps) > 0)


def test_fixed_N_optimum_matches_numerical_and_eq24():
    C = 1e24
    for N in (1e9, 3e10):
        P = LAW.optimal_precision_fixed_N(N, C, "channel")
        r = minimize_scalar(lambda p: LAW.loss_at_precision(N, C / (6 / 16 * p * N), p, "channel"),
                            bounds=(1, 40), method="bounded", options={"xatol": 1e-10})
        assert P == pytest.approx(r.x, rel=1e-6)
    # Eq. 24: P^(δ+ν+2β) N^(α+2β) is constant at a fixed budget
    s = LAW.delta + LAW.nu
    vals = [LAW.optimal_precision_fixed_N(N, C, 64) ** (s + 2 * LAW.beta) * N ** (LAW.alpha + 2 * LAW.beta)
            for N in (1e8, 1e9, 1e10)]
    assert np.ptp(vals) / np.mean(vals) < 1e-12
    # the joint optimum is the fixed-N optimum at its own N and the fixed-D optimum at its own D
    opt = LAW.optimal_precision(C, 64)
    assert LAW.optimal_precision_fixed_N(opt.N, C, 64) == pytest.approx(opt.P, rel=1e-9)
    assert LAW.optimal_precision_fixed_D(opt.D, 64) == pytest.approx(opt.P, rel=1e-9)
    with pytest.raises(ValueError, match="B"):
        LAW.optimal_precision(C, 1)


def test_chinchilla_compute_optimal_matches_numerical():
    ch = ChinchillaLaw.paper()
    assert ch.loss(1e9, 1e11) == pytest.approx(LAW.base_loss(1e9, 1e11))
    C = 1e22
    N, D = ch.compute_optimal(C)
    r = minimize_scalar(lambda x: ch.loss(math.exp(x), C / (6 * math.exp(x))), bounds=(10, 40),
                        method="bounded", options={"xatol": 1e-10})
    assert N == pytest.approx(math.exp(r.x), rel=1e-6)
    assert 6 * N * D == pytest.approx(C)


def test_kumar_form():
    k = KumarLaw(n=69.2343, alpha=0.2368, d=68973.0621, beta=0.5162, eps=1.9061, gamma=2.0)
    # N_eff = N (1 - exp(-P/γ)), P = 1 + E + M; more bits -> lower loss; B has no effect
    assert k.effective_params(1e9, 2, 1) == pytest.approx(1e9 * (1 - math.exp(-2.0)))
    assert k.loss(1e9, 1e11, 4, 3) < k.loss(1e9, 1e11, 2, 1)
    assert k.loss(1e9, 1e11, 4, 3, 32) == k.loss(1e9, 1e11, 4, 3, "channel")
    # the Kumar form depends on E + M only: it cannot tell E2M1 from E1M2 (Sun et al.'s point)
    assert k.loss(1e9, 1e11, 2, 1) == k.loss(1e9, 1e11, 1, 2)


def test_qid():
    q = QiDLaw.paper()
    assert q.to_dict() == {"k": 0.017, "alpha": 0.2261, "beta": 0.5251, "gamma": 5.4967}
    want = 0.017 * 1e12 ** 0.5251 / (7e9 ** 0.2261 * 4 ** 5.4967)
    assert qid_loss(7e9, 1e12, 4) == pytest.approx(want, rel=1e-14)
    # Ouyang et al.: more tokens -> more degradation; larger models and more bits -> less
    assert qid_loss(7e9, 1e13, 4) > qid_loss(7e9, 1e12, 4)
    assert qid_loss(7e10, 1e12, 4) < qid_loss(7e9, 1e12, 4)
    assert qid_loss(7e9, 1e12, 8) < qid_loss(7e9, 1e12, 4)


def test_layout_name():
    assert layout_name(2, 1) == "e2m1"
