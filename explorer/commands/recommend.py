"""`fpx recommend`: the best exponent/mantissa split per bit width, from a scaling law."""

from __future__ import annotations

import json

from explorer.blocks import parse_block
from explorer.laws import choose_law
from explorer.metrics import load_tensors
from explorer.recommend import DEFAULT_BITS, DEFAULT_PARAMS, format_text, recommend


def add_parser(sub):
    p = sub.add_parser("recommend", help="best E/M split per bit width, critical data size, "
                                         "compute-optimal precision",
                       description="Recommend a floating-point layout (exponent/mantissa split) "
                                   "for each total bit width from the Capybara scaling law of Sun "
                                   "et al. (paper constants or your own `fpx fit` result).")
    p.add_argument("--bits", type=int, nargs="+", default=list(DEFAULT_BITS), metavar="P",
                   help="total widths P = 1 + E + M (default 3..16)")
    p.add_argument("--block", default="channel",
                   help="scaling block: an integer block size, 'channel' or 'tensor' "
                        "(default channel)")
    p.add_argument("--law", default="paper",
                   help="'paper' (Sun et al. Table 2) or a fit JSON from `fpx fit`")
    p.add_argument("--params", type=float, default=DEFAULT_PARAMS,
                   help="model size N, non-embedding parameters (default 1e9)")
    p.add_argument("--tokens", type=float, default=None, help="training tokens D (default 20 N)")
    p.add_argument("--budget", type=float, default=None,
                   help="compute budget C = k·P·N·D for the compute-optimal precision")
    p.add_argument("--k", type=float, default=6 / 16, help="compute constant k (default 6/16)")
    p.add_argument("--runners-up", type=int, default=2,
                   help="alternatives listed per width (default 2)")
    p.add_argument("--measure", action="store_true",
                   help="add emulator measurements (dynamic range, SQNR, MSE) per candidate")
    p.add_argument("--samples", type=int, default=16384,
                   help="samples per distribution for --measure")
    p.add_argument("--seed", type=int, default=0, help="seed of the --measure test data")
    p.add_argument("--tensors", default=None, metavar="FILE.npz",
                   help="with --measure, also measure on these arrays (e.g. from fpx train "
                        "--capture)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def run(args) -> int:
    chosen = choose_law(args.law, name="--law")
    block = parse_block(args.block, name="--block", allow_none=False)
    if args.tensors is not None and not args.measure:
        raise ValueError("--tensors needs --measure")
    tensors = None if args.tensors is None else load_tensors(args.tensors, name="--tensors")
    rec = recommend(bits=args.bits, block=block, law=chosen.law, law_source=chosen.source,
                    params=args.params, tokens=args.tokens, budget=args.budget, k=args.k,
                    runners_up=args.runners_up, measure=args.measure, samples=args.samples,
                    seed=args.seed, tensors=tensors)
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        print(format_text(rec))
    return 0
