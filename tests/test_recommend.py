"""Recommendations, measured format metrics, the hardware-cost proxy, and the `fpx recommend` /
`fpx fit` commands (CLI output must equal the library's)."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from explorer.cli import main
from explorer.hwcost import DEFAULT_MODEL, HwCostModel, mac_cost
from explorer.laws import CHANNEL_LOG2B, CapybaraLaw
from explorer.metrics import format_metrics, scaled_quantize, sqnr_db
from explorer.recommend import pareto_front, recommend

LAW = CapybaraLaw.paper()


def test_recommend_matches_the_law():
    rec = recommend(bits=[4, 6, 8], block=32, params=7e9, tokens=1e12, budget=1e24)
    assert [w.bits for w in rec.widths] == [4, 6, 8]
    assert [w.best.name for w in rec.widths] == ["e2m1", "e3m2", "e4m3"]
    for w in rec.widths:
        b = w.best
        assert b.predicted_loss == pytest.approx(LAW.loss(7e9, 1e12, b.exp_bits, b.man_bits, 32),
                                                 rel=1e-14)
        assert b.critical_data_size == pytest.approx(
            LAW.critical_data_size(7e9, b.exp_bits, b.man_bits, 32))
        assert len(w.runners_up) == 2
        for r in w.runners_up:
            assert (r.loss_gap == pytest.approx(r.predicted_loss - b.predicted_loss)
                    and r.loss_gap > 0)
        # runners-up are the next splits by predicted loss
        assert [(r.exp_bits, r.man_bits) for r in w.runners_up] == LAW.ranked_layouts(w.bits)[1:3]
    assert rec.compute.P == pytest.approx(LAW.optimal_precision(1e24, 32).P)
    assert rec.best(8).name == "e4m3"
    with pytest.raises(KeyError):
        rec.best(5)


def test_recommend_params_none_is_the_default():
    a = recommend(bits=[4], params=None).to_dict()
    assert a == recommend(bits=[4]).to_dict() and a["params"] == 1e9 and a["tokens"] == 2e10


def test_recommend_defaults_and_errors():
    rec = recommend()
    assert [w.bits for w in rec.widths] == list(range(3, 17))
    assert rec.tokens == 20 * rec.params == 2e10 and rec.block == "channel"
    assert rec.log2_block == CHANNEL_LOG2B and rec.compute is None
    with pytest.raises(ValueError, match="bits"):
        recommend(bits=[0])
    with pytest.raises(TypeError, match="bits"):
        recommend(bits=[4.5])
    with pytest.raises(ValueError, match="params"):
        recommend(params=-1)
    with pytest.raises(ValueError, match="B"):
        recommend(block="rows")


def test_gaps_shrink_with_smaller_blocks_and_larger_models():
    def g(**kw):
        return recommend(bits=[6], **kw).widths[0].runners_up[0].loss_gap

    assert g(block=32) < g(block="channel")
    assert g(params=1e10, tokens=1e11) < g(params=1e9, tokens=1e11)
    # with D = 20 N the penalty's D^β/N^α grows with N: bigger compute-optimal runs need more bits
    assert g(params=1e10) > g(params=1e9)


def test_pareto_front():
    pts = {"a": (1.0, 3.0), "b": (2.0, 2.0), "c": (2.5, 2.5), "d": (3.0, 1.0), "e": (0.5, 5.0)}
    assert pareto_front(pts) == ["e", "a", "b", "d"]
    rec = recommend(bits=[4, 6, 8])
    front = rec.pareto
    # along the front, cost rises and predicted loss falls strictly
    costs = [mac_cost(int(n[1]), int(n[3])) for n in front]
    losses = [LAW.loss(1e9, 2e10, int(n[1]), int(n[3]), "channel") for n in front]
    assert costs == sorted(costs) and all(np.diff(losses) < 0)
    assert "e4m3" in front and "e2m1" in front


def test_hwcost():
    assert mac_cost(4, 3) == 1.0
    # the (M+1)^2 multiplier term gives Horowitz's FP32/FP16 multiplier area ratio (7700/1640)
    ratio = (DEFAULT_MODEL.breakdown(8, 23)["multiplier"]
             / DEFAULT_MODEL.breakdown(5, 10)["multiplier"])
    assert ratio == pytest.approx(7700 / 1640, rel=0.02)
    assert mac_cost(4, 4) > mac_cost(5, 3) > mac_cost(4, 3)          # mantissa bits cost more
    assert mac_cost(2, 1) < mac_cost(3, 2) < mac_cost(4, 3) < mac_cost(8, 7)
    mine = HwCostModel(multiplier=2.0, shifter=0.0, reference=(2, 1))
    assert mac_cost(2, 1, mine) == 1.0
    b = mine.breakdown(4, 3)
    assert b["multiplier"] == 32.0 and b["shifter"] == 0.0 and b["exponent_adder"] == 5.0
    with pytest.raises(ValueError, match="multiplier"):
        HwCostModel(multiplier=-1)
    with pytest.raises(ValueError, match="E"):
        mac_cost(-1, 3)
    # keyword overrides replace single weights of the default model
    assert (mac_cost(4, 4, shifter=0.0, reference=(2, 1))
            == HwCostModel(shifter=0.0, reference=(2, 1)).cost(4, 4))
    assert mac_cost(8, 7, multiplier=3.0) > mac_cost(8, 7)
    with pytest.raises(TypeError, match="overrides"):
        mac_cost(4, 3, area=1.0)


def test_metrics_tensor_only_and_n_alias():
    a = format_metrics("e3m2", n=2048, seed=4, block=None)
    b = format_metrics("e3m2", samples=2048, seed=4, block=32)
    assert (set(a.sqnr_db) == {"gaussian/tensor", "laplace/tensor", "student_t3/tensor"}
            and a.block == 0)
    for k in a.sqnr_db:
        assert a.sqnr_db[k] == b.sqnr_db[k] and a.mse[k] == b.mse[k]
    # per-block scaling helps heavy tails most
    gain = {d: b.sqnr_db[f"{d}/block32"] - b.sqnr_db[f"{d}/tensor"]
            for d in ("gaussian", "student_t3")}
    assert gain["student_t3"] > gain["gaussian"] > 0
    with pytest.raises(ValueError, match="block"):
        format_metrics("e3m2", block=0)


def test_metrics_e2m1():
    m = format_metrics("e2m1", samples=4096, seed=1)
    # e2m1 (IEEE bias 1, subnormals): values 0.5 .. 6 -> log2(6/0.5) binades
    assert m.max == 6.0 and m.min_positive == 0.5 and m.min_normal == 1.0
    assert m.dynamic_range_log2 == pytest.approx(math.log2(12))
    assert m.normal_range_log2 == pytest.approx(math.log2(6))
    keys = {f"{d}/{s}" for d in ("gaussian", "laplace", "student_t3")
            for s in ("tensor", "block32")}
    assert set(m.sqnr_db) == keys == set(m.mse)
    # block scaling helps most on heavy tails; more bits help everywhere
    gain = {d: m.sqnr_db[f"{d}/block32"] - m.sqnr_db[f"{d}/tensor"]
            for d in ("gaussian", "student_t3")}
    assert gain["student_t3"] > gain["gaussian"] > 0
    m8 = format_metrics("e4m3", samples=4096, seed=1)
    assert all(m8.sqnr_db[k] > m.sqnr_db[k] + 8 for k in keys)
    json.dumps(m.to_dict())


def test_scaled_quantize_by_hand():
    x = np.array([[0.1, -0.2, 0.3, 3.0, 0.05, 0.07]])
    # ragged: blocks [0.1,-0.2,0.3], [3.0,0.05,0.07]
    q = scaled_quantize("e2m1", x, 3)
    # block 1: amax 0.3 -> scale 6/0.3 = 20: 2, -4, 6 are representable -> exact
    assert np.allclose(q[0, :3], [0.1, -0.2, 0.3])
    # block 2: scale 2: 6, 0.1, 0.14 -> 6, 0, 0 (below 0.25, half the smallest subnormal 0.5)
    assert np.allclose(q[0, 3:], [3.0, 0.0, 0.0])
    t = scaled_quantize("e2m1", x, None)              # one scale 6/3 = 2 for the tensor
    # 0.2, -0.4, 0.6, 6, 0.1, 0.14 -> 0, -0.5, 0.5, 6, 0, 0, then / 2
    assert np.allclose(t, [[0.0, -0.25, 0.25, 3.0, 0.0, 0.0]])
    assert sqnr_db(x, x) == float("inf")
    m = format_metrics("e4m3", samples=1024,
                       tensors={"w": np.random.default_rng(0).standard_normal((8, 40))})
    assert "w/block32" in m.sqnr_db and m.sqnr_db["w/block32"] > 25
    with pytest.raises(ValueError, match="tensors"):
        format_metrics("e4m3", samples=1024, tensors={"w": np.array([np.nan])})


def test_block_scaling_agrees_with_blockformat():
    from fpformat import BlockFormat, FloatFormat
    x = np.random.default_rng(5).standard_normal((4, 64))
    bf = BlockFormat(element=FloatFormat(2, 1), block_size=32, scale_rule="amax")
    assert np.array_equal(bf.quantize(x), scaled_quantize("e2m1", x, 32))


def test_recommend_measure():
    rec = recommend(bits=[4], block=16, measure=True, samples=2048)
    m = rec.widths[0].best.metrics
    assert m.name == "e2m1" and "laplace/block16" in m.sqnr_db
    assert rec.to_dict()["widths"][0]["best"]["metrics"]["block"] == 16


# ----------------------------------------------------------------------------------- CLI
def _cli_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_recommend_equals_library(capsys):
    doc = _cli_json(capsys, ["recommend", "--bits", "4", "6", "8", "--block", "32",
                             "--params", "7e9", "--budget", "1e24", "--json"])
    lib = recommend(bits=[4, 6, 8], block=32, params=7e9, budget=1e24).to_dict()
    assert doc["widths"] == json.loads(json.dumps(lib["widths"]))
    assert doc["compute_optimal"] == json.loads(json.dumps(lib["compute_optimal"]))
    assert doc["pareto_front"] == lib["pareto_front"]
    names = [w["best"]["name"] for w in doc["widths"]]
    assert names == ["e2m1", "e3m2", "e4m3"]
    assert ([(w["best"]["exp_bits"], w["best"]["man_bits"]) for w in doc["widths"]]
            == [(2, 1), (3, 2), (4, 3)])
    assert doc["block"] == "32" and doc["params"] == 7e9
    # text output names the same layouts
    assert main(["recommend", "--bits", "4", "8", "--block", "channel"]) == 0
    out = capsys.readouterr().out
    assert "e2m1" in out and "e4m3" in out and "Pareto" in out


def test_cli_recommend_errors(capsys):
    assert main(["recommend", "--bits", "4", "--block", "rows"]) == 2
    assert "--block" in capsys.readouterr().err
    assert main(["recommend", "--bits", "0"]) == 2
    assert main(["recommend", "--params", "-5"]) == 2
    assert main(["recommend", "--law", "/nonexistent/fit.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 3 and "Traceback" not in err


def test_cli_fit_then_recommend_with_fitted_law(tmp_path, capsys):
    from explorer.fit import paper_design
    from explorer.train.store import SCHEMA
    g = paper_design()
    rng = np.random.default_rng(0)
    y = np.asarray(LAW.loss(**g)) * (1 + 0.003 * rng.standard_normal(len(g["N"])))
    db = tmp_path / "runs.db"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA)
    for i in range(len(y)):
        blk = "channel" if g["B"][i] > 1000 else str(int(g["B"][i]))
        e, m = int(g["E"][i]), int(g["M"][i])
        con.execute("INSERT INTO runs (key, status, n_params, tokens, exp_bits, man_bits, block, "
                    "fmt, val_loss) VALUES (?,?,?,?,?,?,?,?,?)",
                    (f"r{i}", "finished", int(g["N"][i]), int(g["D"][i]),
                     e, m, blk, f"e{e}m{m}", float(y[i])))
    con.commit()
    con.close()
    out = tmp_path / "fit.json"
    doc = _cli_json(capsys, ["fit", str(db), "-o", str(out), "--bootstrap", "10", "--json"])
    assert doc["diagnostics"]["n_points"] == 359 and set(doc["ci95"]) == set(LAW.to_dict())
    assert doc["constants"]["beta"] == pytest.approx(LAW.beta, rel=0.1)
    saved = json.loads(out.read_text())
    assert saved["constants"] == doc["constants"]
    rec = _cli_json(capsys, ["recommend", "--bits", "4", "8", "--law", str(out), "--json"])
    from explorer.fit import load_fit
    lib = recommend(bits=[4, 8], law=load_fit(out)).to_dict()
    assert rec["widths"] == json.loads(json.dumps(lib["widths"]))
    assert rec["law"]["constants"] == doc["constants"]
    assert main(["fit", str(db), "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert "held out N" in text and "alpha" in text
    assert main(["fit", str(tmp_path / "nope.db")]) == 2


def test_cli_fit_free(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    truth = CapybaraLaw(**{**LAW.to_dict(), "n": 80.0, "eps": 2.1})
    lines = ["N,D,E,M,B,loss"]
    for N in (1e6, 3e6, 1e7):
        for D in (1e7, 3e7, 1e8):
            for e, m, b in ((2, 1, "32"), (4, 3, "channel")):
                lines.append(f"{N},{D},{e},{m},{b},{float(truth.loss(N, D, e, m, b))}")
    path.write_text("\n".join(lines) + "\n")
    doc = _cli_json(capsys, ["fit", str(path), "--free", "n,d,eps,gamma", "--bootstrap", "0",
                             "--json"])
    assert doc["free"] == ["n", "d", "eps", "gamma"]
    assert doc["constants"]["alpha"] == LAW.alpha
    assert doc["constants"]["n"] == pytest.approx(80.0, rel=0.02)
    assert main(["fit", str(path), "--free", "n,bogus"]) == 2
    assert "free" in capsys.readouterr().err


def test_sqnr_db_known_values():
    """10 log10(signal power / noise power): a power ratio, not an amplitude ratio."""
    x = np.array([3.0, -4.0])                       # signal power 25
    assert sqnr_db(x, x + np.array([0.5, 0.0])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(x, x * 0.9) == pytest.approx(20.0)          # noise = 1% of the signal
    assert sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
