"""benchmarks/bench_train_step.py at tiny sizes: both modes run and print what they promise, the
1.5x bar leaves out accumulator and matrix-unit models, and bad arguments exit 2 with one line."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_train_step.py")
TINY = ["--sizes", "1x16,1x32", "--seq-len", "8", "--batch", "2", "--reps", "2"]


def _run(*args: str) -> subprocess.CompletedProcess:
    # Generic kernels only: the script's specialised compilations (half a minute per block
    # format) would time the compiler, not the script; tests elsewhere hold both to each other.
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=dict(os.environ, FPFORMAT_SPECIALIZE="never"))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipes_mode_prints_every_recipe_both_ways_and_the_verdict():
    proc = _run("--recipes", "sun2025,deepseek-v3", "--unit-limit-s", "1e-9", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("recipes sun2025, deepseek-v3; 2x8 tokens/step")
    sizes = [i for i, line in enumerate(lines) if re.match(r"L=1 d=(16|32) N=", line)]
    assert len(sizes) == 2 and "unquantized" in lines[sizes[0]]
    first, second = lines[sizes[0] + 1:sizes[1]], lines[sizes[1] + 1:-1]
    ratio = re.compile(r"^  (\S.*?)\s+(\d+\.\d+) ms/step\s+(\d+\.\d+)x")
    got = {ratio.match(line).group(1): line for line in first}
    unit = "deepseek-v3 [matrix unit h100, promotion 128]"
    assert set(got) == {"sun2025", unit, "deepseek-v3 (quantizers only)"}
    assert "not held to 1.5x" in got[unit]
    # the second size: the matrix-unit model expected over the (tiny) limit is skipped
    skipped = [line for line in second if "skipped" in line]
    assert len(skipped) == 1 and "deepseek-v3 [matrix unit" in skipped[0]
    assert sum(bool(ratio.match(line)) for line in second) == 2
    assert lines[-1].startswith("over 1.5x (quantizers only; accumulator/matrix-unit models "
                                "excluded): ")
    assert "matrix unit" not in lines[-1]


def test_format_mode_is_the_old_one_line_per_size():
    proc = _run("--format", "e4m3", "--block", "channel", *TINY[:4], "--reps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("format e4m3 block channel, default targets")
    assert len(lines) == 3
    assert all(re.search(r"unquantized +\d+\.\d+ ms  quantized +\d+\.\d+ ms  ratio \d+\.\d+x",
                         line) for line in lines[1:])


def test_bad_arguments_exit_2_with_one_line(capsys):
    main = _bench().main          # in process: main returns before it sets threads or trains
    for args, word in ((["--recipes", "no-such-recipe"], "presets"),
                       (["--recipes", "all", "--format", "e4m3"], "--format"),
                       (["--recipes", "sun2025,sun2025"], "twice"),
                       (["--sizes", "4by128"], "--sizes"),
                       (["--reps", "0"], "--reps"),
                       (["--unit-limit-s", "0"], "--unit-limit-s")):
        assert main(args) == 2, args
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], (args, err)


def test_over_bar_counts_quantizers_only_against_their_own_size():
    b = _bench()
    plain, a, ok = (b.Variant("unquantized", None), b.Variant("a", b.QuantConfig(fmt="e4m3")),
                    b.Variant("ok", b.QuantConfig(fmt="e5m2")))
    unit = b.Variant("a [accumulator]", b.QuantConfig(fmt="e4m3"), unit=True)
    timings = [b.Timing(plain, (1, 16), 1.0, 5), b.Timing(a, (1, 16), 1.6, 5),
               b.Timing(ok, (1, 16), 1.5, 5), b.Timing(unit, (1, 16), 90.0, 1),
               b.Timing(plain, (2, 32), 2.0, 5), b.Timing(a, (2, 32), 2.9, 5),
               b.Timing(ok, (2, 32), 3.2, 5), b.Timing(unit, (2, 32), None, 0, "skipped")]
    assert b.over_bar(timings) == [("a", (1, 16), 1.6), ("ok", (2, 32), 1.6)]
