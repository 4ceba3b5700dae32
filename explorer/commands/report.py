"""`fpx report`: write the recommendation report (Markdown, self-contained HTML, figures)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from explorer.report import ReportConfig, build_report
from explorer.report.config import DEFAULT_BITS, FIT_BOOTSTRAP


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="write the format recommendation report (Markdown + HTML + figures)",
        description="Write DIR/report.md, a self-contained DIR/index.html (figures embedded, no "
                    "external requests) and DIR/figures/*.png: recommended exponent/mantissa "
                    "split per bit width, critical data size, compute-optimal precision, "
                    "block-size effect, measured SQNR, accuracy/cost Pareto front, a section per "
                    "proposed format and, with --runs, the measured sweep and fit diagnostics.")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument("--runs", metavar="RUNS_DB", help="results database of training runs")
    p.add_argument("--law", default="paper", metavar="paper|FIT_JSON",
                   help="'paper' (Sun et al. constants, default) or a `fpx fit` JSON file")
    p.add_argument("--propose", nargs="+", default=[], metavar="SPEC",
                   help="format spec(s) to evaluate, e.g. e3m4b5 (E3M4 with bias 5)")
    p.add_argument("--bits", nargs="+", type=int, default=list(DEFAULT_BITS), metavar="P",
                   help="total widths for the detailed table "
                        f"(default {' '.join(map(str, DEFAULT_BITS))})")
    p.add_argument("--params", type=float, default=1e9, metavar="N",
                   help="model size N, non-embedding parameters (default 1e9)")
    p.add_argument("--tokens", type=float, default=None, metavar="D",
                   help="training tokens D for predicted losses (default 20*N)")
    p.add_argument("--budget", type=float, default=1e23, metavar="C",
                   help="compute budget C = k*P*N*D, k=6/16 (default 1e23)")
    p.add_argument("--block", default="channel", metavar="B",
                   help="scaling block for predictions: an int, 'channel' or 'tensor' "
                        "(default channel)")
    p.add_argument("--sqnr-samples", type=int, default=1 << 14, metavar="N",
                   help="samples per distribution for measured SQNR (default 16384)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test data (default 0)")
    p.add_argument("--fit-bootstrap", type=int, default=FIT_BOOTSTRAP, metavar="N",
                   help=f"bootstrap resamples behind the fitted constants' intervals with --runs "
                        f"(default {FIT_BOOTSTRAP}; 0 = none)")
    p.add_argument("--accumulator", nargs="+", default=[], metavar="SPEC",
                   help="add an accumulation-error section for these accumulators, e.g. "
                        "e8m23 e8m13/rtz e8m13/rtz/chunk128")
    p.add_argument("--matrix-unit", nargs="+", default=[], metavar="UNIT",
                   help="add a section comparing matrix units (dot-product error against K): "
                        "presets like h100 b200 v100 or specs like fma16/x2/rtz")
    p.add_argument("--matrix-unit-format", default="float16", metavar="IN",
                   help="input format of the --matrix-unit comparison (default float16; e.g. "
                        "bfloat16, float8_e4m3fn); outputs are float32")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")
    return p


def run(args) -> int:
    config = ReportConfig(
        runs=args.runs, law=args.law, propose=tuple(args.propose), bits=tuple(args.bits),
        params=args.params, tokens=args.tokens, budget=args.budget, block=args.block,
        sqnr_samples=args.sqnr_samples, seed=args.seed,
        fit_bootstrap=args.fit_bootstrap, accumulators=tuple(args.accumulator),
        matrix_units=tuple(args.matrix_unit), matrix_unit_format=args.matrix_unit_format,
        command_line="fpx " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["report"]
        else "fpx report " + _reconstruct(args))
    paths = build_report(args.out, config, progress=True)
    if args.json:
        print(json.dumps({"markdown": str(paths.markdown), "html": str(paths.html),
                          "figures": [str(p) for p in paths.figures]}))
    else:
        print(f"wrote {paths.html}, {paths.markdown} and {len(paths.figures)} figures "
              f"in {paths.out_dir}/figures")
    return 0


def _reconstruct(args) -> str:
    """The equivalent command line when `run` was called without a matching sys.argv (tests)."""
    parts = ["--out", args.out]
    if args.runs:
        parts += ["--runs", args.runs]
    if args.law != "paper":
        parts += ["--law", args.law]
    if args.propose:
        parts += ["--propose", *args.propose]
    parts += ["--bits", *map(str, args.bits), "--params", f"{args.params:g}",
              "--budget", f"{args.budget:g}", "--block", str(args.block)]
    if args.tokens is not None:
        parts += ["--tokens", f"{args.tokens:g}"]
    if args.runs and getattr(args, "fit_bootstrap", FIT_BOOTSTRAP) != FIT_BOOTSTRAP:
        parts += ["--fit-bootstrap", str(args.fit_bootstrap)]
    if getattr(args, "accumulator", None):
        parts += ["--accumulator", *args.accumulator]
    if getattr(args, "matrix_unit", None):
        parts += ["--matrix-unit", *args.matrix_unit]
        if args.matrix_unit_format != "float16":
            parts += ["--matrix-unit-format", args.matrix_unit_format]
    return shlex.join(parts)
