"""The scaling laws: published numbers of Sun et al. (arXiv 2501.02423) reproduced from their
constants, and every closed form checked against direct numerical optimisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from explorer.laws import (
    CHANNEL_LOG2B,
    CapybaraLaw,
    ChinchillaLaw,
    KumarLaw,
    QiDLaw,
    layout_name,
    log2_block,
    qid_loss,
)

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

    r = minimize(f, x0, method="Nelder-Mead",
                 options={"xatol": 1e-11, "fatol": 1e-15, "maxiter": 40000})
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
    vals = [LAW.optimal_precision_fixed_N(N, C, 64) ** (s + 2 * LAW.beta)
            * N ** (LAW.alpha + 2 * LAW.beta)
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


def test_unquantized_block_settings():
    # B = None / 'none' (an unquantized run) and B = 1 all give the base law; D_crit is infinite
    base = LAW.base_loss(3e8, 2e10)
    for B in (None, "none", 1, 1.0):
        assert LAW.loss(3e8, 2e10, 4, 3, B) == base
        assert LAW.critical_data_size(3e8, 4, 3, B) == np.inf
    assert LAW.loss(3e8, 2e10, 4, 3, 32) > base
    mixed = LAW.loss(3e8, 2e10, 4, 3, np.array([None, 32, "channel"], dtype=object))
    assert mixed[0] == base < mixed[1] < mixed[2]
    with pytest.raises(ValueError, match="B"):
        LAW.optimal_precision(1e24, None)


def test_critical_data_size_zeroes_the_derivative():
    # central finite difference of L in ln D at D_crit is ~0, and changes sign across it
    for N, E, M, B in ((1e9, 4, 3, 128), (2e8, 2, 1, "channel")):
        dc = LAW.critical_data_size(N, E, M, B)
        h = 1e-4

        def dLdlnD(D):
            return (LAW.loss(N, D * math.exp(h), E, M, B)
                    - LAW.loss(N, D * math.exp(-h), E, M, B)) / (2 * h)

        scale = LAW.d * LAW.beta * dc ** -LAW.beta          # size of either term of dL/dlnD
        assert abs(dLdlnD(dc)) < 1e-6 * scale
        assert dLdlnD(dc / 2) < 0 < dLdlnD(dc * 2)


@pytest.mark.parametrize("C", [1e21, 1e24, 1e27])
def test_compute_optimal_ND_matches_numerical(C):
    for P, layout in ((6.0, None), (8.0, (4, 3))):
        N, D = LAW.compute_optimal_ND(C, P, 128, layout=layout)
        assert 6 / 16 * P * N * D == pytest.approx(C, rel=1e-12)
        if layout is None:
            f = lambda x: LAW.loss_at_precision(math.exp(x), C / (6 / 16 * P * math.exp(x)), P, 128)  # noqa: E731
        else:
            f = lambda x: LAW.loss(math.exp(x), C / (6 / 16 * P * math.exp(x)), *layout, 128)  # noqa: E731
        r = minimize_scalar(f, bounds=(math.log(N) - 4, math.log(N) + 4), method="bounded",
                            options={"xatol": 1e-10})
        assert N == pytest.approx(math.exp(r.x), rel=1e-4)
    # at the joint optimum's own P it returns the joint optimum's N and D
    opt = LAW.optimal_precision(C, 128)
    N, D = LAW.compute_optimal_ND(C, opt.P, 128)
    assert (N, D) == (pytest.approx(opt.N, rel=1e-9), pytest.approx(opt.D, rel=1e-9))


def test_best_integer_precision_by_brute_force():
    for C in (1e21, 1e25, 1e29):
        opt = LAW.optimal_precision(C, 128)
        assert float(opt) == opt.P
        # brute force over every integer width 2..32 with its integer optimal layout
        losses = {}
        for p in range(2, 33):
            e, m = LAW.optimal_layout(p)
            N, D = LAW.compute_optimal_ND(C, p, 128, layout=(e, m))
            losses[p] = LAW.loss(N, D, e, m, 128)
        assert opt.P_int == min(losses, key=losses.get)
        assert abs(opt.P_int - opt.P) < 1
        assert opt.layout == LAW.optimal_layout(opt.P_int)
        assert opt.loss_int == pytest.approx(losses[opt.P_int], rel=1e-12)
        assert opt.loss <= opt.loss_int        # the relaxed layout is an upper bound on the score
        assert 6 / 16 * opt.P_int * opt.N_int * opt.D_int == pytest.approx(C, rel=1e-12)
    d = LAW.optimal_precision(1e25, "channel").to_dict()
    assert d["layout"]["name"] == layout_name(*LAW.optimal_layout(d["P_int"]))


def test_fixed_D_accepts_the_budget_form():
    assert (LAW.optimal_precision_fixed_D(1e12, 1e24, 128)
            == LAW.optimal_precision_fixed_D(1e12, 128))
    assert (LAW.optimal_precision_fixed_D(1e12, 1e24, 128, 6 / 16)
            == LAW.optimal_precision_fixed_D(1e12, B=128))
    with pytest.raises(TypeError, match="B"):
        LAW.optimal_precision_fixed_D(1e12)
    with pytest.raises(ValueError, match="C"):
        LAW.optimal_precision_fixed_D(1e12, -1.0, 128)


def test_chinchilla_and_kumar_reference_laws():
    from explorer.laws import chinchilla_loss, kumar_loss
    # Hoffmann et al.: Chinchilla (70B params, 1.4T tokens) sits near 1.94 nats
    assert chinchilla_loss(70e9, 1.4e12) == pytest.approx(
        1.69 + 406.4 / 70e9 ** 0.34 + 410.7 / 1.4e12 ** 0.28, rel=1e-14)
    assert 1.93 < chinchilla_loss(70e9, 1.4e12) < 1.95
    # Kumar et al.: fewer weight bits shrink the effective parameter count; many bits -> Chinchilla
    Ls = kumar_loss(1e9, 2e10, np.array([3, 4, 6, 8, 16, 40]))
    assert np.all(np.diff(Ls) < 0)
    assert Ls[-1] == pytest.approx(chinchilla_loss(1e9, 2e10), rel=1e-4)
    g = 2.67
    want = 406.4 / (1e9 * (1 - math.exp(-4 / g))) ** 0.34 + 410.7 / 2e10 ** 0.28 + 1.69
    assert kumar_loss(1e9, 2e10, 4) == pytest.approx(want, rel=1e-12)


def test_save_and_load_law(tmp_path):
    from explorer.fit import load_fit
    from explorer.laws import load_law, save_law
    law = CapybaraLaw(**{**LAW.to_dict(), "gamma": 5000.0})
    doc = save_law(tmp_path / "law.json", law, note="test", runs=3)
    assert doc["note"] == "test" and doc["constants"]["gamma"] == 5000.0
    assert load_law(tmp_path / "law.json") == law == load_fit(tmp_path / "law.json")
    (tmp_path / "bare.json").write_text(json.dumps(LAW.to_dict()))
    assert load_law(tmp_path / "bare.json") == LAW
    (tmp_path / "partial.json").write_text('{"constants": {"n": 1}}')
    with pytest.raises(ValueError, match="missing"):
        load_law(tmp_path / "partial.json")
    with pytest.raises(FileNotFoundError):
        load_law(tmp_path / "nope.json")
    with pytest.raises(TypeError, match="law"):
        save_law(tmp_path / "x.json", {"n": 1})


def test_layout_table_in_docs_matches_brute_force():
    # docs/analyzer.md lists the optimal layout of every width; brute force over (E+0.5)^δ (M+0.5)^ν
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "analyzer.md").read_text()
    for P in range(2, 17):
        scores = {e: (e + 0.5) ** LAW.delta * (P - 1 - e + 0.5) ** LAW.nu for e in range(P)}
        e = max(scores, key=lambda k: (scores[k], k))
        assert LAW.optimal_layout(P) == (e, P - 1 - e)
        assert f"| {P} | E{e}M{P - 1 - e} |" in text


def test_analyzer_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, explorer.laws, explorer.fit, explorer.recommend, explorer.metrics, "
            "explorer.hwcost, explorer.commands.fit, explorer.commands.recommend; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "False"


def test_choose_law_paper_or_fit_file(tmp_path):
    from explorer.laws import PAPER_LAW_CITATION, PAPER_LAW_SOURCE, choose_law, save_law
    chosen = choose_law("paper")
    assert chosen.law == LAW and chosen.source == PAPER_LAW_SOURCE
    assert chosen.citation == PAPER_LAW_CITATION and "arXiv 2501.02423" in chosen.citation
    law = CapybaraLaw(**{**LAW.to_dict(), "gamma": 5000.0})
    save_law(tmp_path / "fit.json", law)
    chosen = choose_law(str(tmp_path / "fit.json"))
    assert chosen.law == law and chosen.source == f"fit {tmp_path / 'fit.json'}"
    assert chosen.citation == "Capybara law fitted by `fpx fit` (fit.json)"
    with pytest.raises(FileNotFoundError, match="^--law: expected 'paper' or a fit JSON file"):
        choose_law(str(tmp_path / "nope.json"), name="--law")
