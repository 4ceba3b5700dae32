"""`fpx info`, `fpx quantize`, `fpx vectors`: outputs match the library, bad input exits 2."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from explorer.cli import main
from fpformat import get_format


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_matches_library(capsys):
    code, out, _ = run_cli(capsys, "info", "e4m3", "--json")
    assert code == 0
    d = json.loads(out)
    f = get_format("e4m3")
    assert d["max"] == f.max == 480 and d["bias"] == 7 and d["num_finite"] == 255
    names = {r["name"] for r in d["look_alikes"]}
    assert {"float8_e4m3fn", "float8_e4m3"} <= names       # the confusable formats are shown


def test_info_values_table_is_every_code(capsys):
    code, out, _ = run_cli(capsys, "info", "float4_e2m1fn", "--values", "--json")
    rows = json.loads(out)["values"]
    assert [r["value"] for r in rows[:8]] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert rows[9]["binary"] == "1_00_1" and rows[9]["hex"] == "0x9"


def test_info_text_shows_specials(capsys):
    code, out, _ = run_cli(capsys, "info", "float8_e5m2")
    assert code == 0 and "0x7C" in out and "0x7D" in out     # inf and a NaN code


@pytest.mark.parametrize("argv", [["info", "e99m1"], ["info", "nosuchformat"],
                                  ["info", "e5m10", "--values"],
                                  ["quantize", "/nonexistent.npy", "/tmp/o.npy", "-f", "e4m3"],
                                  ["vectors", "-f", "e4m3", "--out", "/tmp/v.csv", "--count", "-1"],
                                  ["vectors", "-f", "e4m3", "-r", "round-up",
                                   "--out", "/tmp/v.csv"]])
def test_bad_input_exits_2_with_one_line(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fpx ")


def test_bad_input_no_traceback_in_subprocess():
    r = subprocess.run([sys.executable, "-m", "explorer.cli", "info", "e4m3", "--values",
                        "--json", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_quantize_values_and_codes(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32) * 10
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "quantize", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                           "--format", "e3m2", "--rounding", "rtz", "--json")
    assert code == 0 and json.loads(out)["sqnr_db"] > 10
    f = get_format("e3m2")
    assert np.array_equal(np.load(tmp_path / "y.npy"), f.quantize(x, "rtz"))
    run_cli(capsys, "quantize", str(tmp_path / "x.npy"), str(tmp_path / "c.npy"), "-f", "e3m2",
            "--codes", "--saturate")
    assert np.array_equal(np.load(tmp_path / "c.npy"), f.encode(x, saturate=True))


def test_vectors_cover_ties_boundaries_specials(tmp_path, capsys):
    path = tmp_path / "v.csv"
    code, out, _ = run_cli(capsys, "vectors", "--format", "float8_e4m3fn", "--rounding", "rne",
                           "--count", "50", "--seed", "3", "--out", str(path), "--json")
    assert code == 0
    rows = list(csv.DictReader(line for line in open(path) if not line.startswith("#")))
    f = get_format("float8_e4m3fn")
    x = np.array([int(r["input_f32_hex"], 16) for r in rows], dtype=np.uint32).view(np.float32)
    codes = np.array([int(r["code_hex"], 16) for r in rows])
    assert np.array_equal(codes, f.encode(x))
    kinds = {r["kind"] for r in rows}
    assert {"tie", "tie-1ulp", "tie+1ulp", "boundary", "special", "random", "value"} <= kinds
    ties = x[np.array([r["kind"] == "tie" for r in rows])]
    # every midpoint, both signs
    assert len(ties) == 2 * (len(f.values()[f.values() > 0]) - 1) + 2
    bits = set(x.view(np.uint32).tolist())
    assert {0x7F800000, 0xFF800000, 0x00000000, 0x80000000, 0x7FC00000} <= bits
    # max + half ulp: overflow tie
    assert np.float32(464.0).view(np.uint32) in bits
    hexpath = tmp_path / "v.hex"
    run_cli(capsys, "vectors", "-f", "float8_e4m3fn", "--count", "50", "--seed", "3",
            "--out", str(hexpath), "--style", "hex")
    lines = [ln.split() for ln in open(hexpath) if not ln.startswith("//")]
    assert len(lines) == len(rows) and lines[5] == [rows[5]["input_f32_hex"], rows[5]["code_hex"]]


def test_vectors_dot(tmp_path, capsys):
    path = tmp_path / "d.csv"
    code, out, _ = run_cli(capsys, "vectors", "--op", "dot", "-f", "e4m3", "--acc-format", "e8m13",
                           "-r", "rtz", "--k", "8", "--count", "6", "--out", str(path), "--json")
    assert code == 0 and json.loads(out)["vectors"] >= 6
    from fpformat.gemm import matmul
    fa = get_format("e4m3")
    for line in open(path):
        if line.startswith(("#", "index")):
            continue
        _, kind, a, b, acc_code, acc_value = line.strip().split(",")
        av = fa.decode(np.array([int(c, 16) for c in a.split()], dtype=np.uint8))
        bv = fa.decode(np.array([int(c, 16) for c in b.split()], dtype=np.uint8))
        y = matmul(av[None, :], bv[:, None], "e8m13", "rtz")
        assert float(y[0, 0]) == float(acc_value), kind


def test_vectors_block_format(tmp_path, capsys):
    path = tmp_path / "b.csv"
    code, out, _ = run_cli(capsys, "vectors", "-f", "mxfp4", "--count", "3", "--out", str(path),
                           "--json")
    d = json.loads(out)
    assert (code == 0 and d["kinds"]["random"] == 3
            and {"nan", "zero", "saturating"} <= set(d["kinds"]))
    rows = list(csv.DictReader(line for line in open(path) if not line.startswith("#")))
    b = get_format("mxfp4")
    x = np.array([int(r["input_f32_hex"], 16) for r in rows], dtype=np.uint32).view(np.float32)
    blocks = x.reshape(-1, 32)
    for i in range(len(blocks)):
        enc = b.encode(blocks[i:i + 1])
        got = [int(r["element_code"], 16) for r in rows[32 * i:32 * (i + 1)]]
        assert got == enc.codes.reshape(-1).tolist()
        assert int(rows[32 * i]["scale_code"], 16) == int(enc.scales[0, 0])


def test_info_block_format(capsys):
    code, out, _ = run_cli(capsys, "info", "nvfp4", "--json")
    d = json.loads(out)
    assert code == 0 and d["scale_rule"] == "nvfp4" and d["block_size"] == 16
    assert d["bits_per_element"] == 4.5


def test_info_e11_formats_are_described_not_refused(capsys):
    """e11m3ieee exists (its top binade holds inf/NaN) though its family member e11m3 does not:
    the look-alike search skips the impossible member instead of failing (issue 14)."""
    assert main(["info", "e11m3ieee", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exp_bits"] == 11 and info["man_bits"] == 3
    assert "e11m3" not in [r["name"] for r in info["look_alikes"]]
    assert main(["info", "bfloat16", "--json"]) == 0                 # a member that does exist
    assert json.loads(capsys.readouterr().out)["look_alikes"][0]["name"] == "e8m7"


def test_quantize_writes_exactly_the_output_name(tmp_path, capsys):
    """np.save appends .npy to a bare name; the atomic writer keeps the name the user gave, and
    the summary names the file that exists."""
    np.save(tmp_path / "x.npy", np.linspace(-3, 3, 50, dtype=np.float32))
    out = tmp_path / "quantized"
    assert main(["quantize", str(tmp_path / "x.npy"), str(out), "-f", "e2m1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(out)
    assert np.load(out).shape == (50,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantized", "x.npy"]


def test_vectors_mma(tmp_path, capsys):
    from fpformat.vectors import mma_vectors
    path = tmp_path / "mma.csv"
    code, out, _ = run_cli(capsys, "vectors", "--op", "mma", "--unit", "h100", "--in-format",
                           "float8_e4m3fn", "--k", "32", "--count", "6", "--out", str(path),
                           "--json")
    summary = json.loads(out)
    assert code == 0 and summary["spec"] == "fma32/x-10/rtz/p13/min-133"
    want = mma_vectors("h100", "float8_e4m3fn", "float32", k=32, count=6, seed=0)
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert lines[0] == "index,kind,a_codes,b_codes,c_code,d_code,d_value"
    assert len(lines) == 1 + len(want) == 1 + summary["vectors"]
    i, kind, a, b, c, d, _ = lines[1].split(",")
    assert kind == want[0].kind and len(a.split()) == 32
    assert int(d, 16) == want[0].d_code and int(c, 16) == want[0].c_code
    hexpath = tmp_path / "mma.hex"
    code, _, _ = run_cli(capsys, "vectors", "--op", "mma", "--unit", "fma16/x2/rne",
                         "--out-format", "float16", "--k", "16", "--count", "2", "--style", "hex",
                         "--out", str(hexpath))
    rows = [ln for ln in hexpath.read_text().splitlines() if not ln.startswith("//")]
    assert code == 0 and all(len(r.split()) == 4 and len(r.split()[3]) == 4 for r in rows)
    for argv in (["--op", "mma", "--in-format", "float16"],             # no unit
                 ["--op", "mma", "--unit", "h100", "-f", "e4m3"],        # a dot/convert option
                 ["--op", "mma", "--unit", "v100", "--in-format", "bfloat16"],
                 ["-f", "e4m3", "--unit", "h100"],
                 ["--op", "dot", "--acc-format", "e8m13"]):                # dot without --format
        code, _, err = run_cli(capsys, "vectors", *argv, "--out", str(tmp_path / "x.csv"))
        assert code == 2 and "Traceback" not in err, argv
