"""`fpx recommend`: the best exponent/mantissa split per bit width, from a scaling law."""

from __future__ import annotations

import json

from explorer.recommend import DEFAULT_BITS, DEFAULT_PARAMS, format_text, recommend


def add_parser(sub):
    p = sub.add_parser("recommend", help="best E/M split per bit width, critical data size, "
                                         "compute-optimal precision",
                       description="Recommend a floating-point layout (exponent/mantissa split) for "
                                   "each total bit width from the Capybara scaling law of Sun et al. "
                                   "(paper constants or your own `fpx fit` result).")
    p.add_argument("--bits", type=int, nargs="+", default=list(DEFAULT_BITS), metavar="P",
                   help="total widths P = 1 + E + M (default 3..16)")
    p.add_argument("--block", default="channel",
                   help="scaling block: an integer block size, 'channel' or 'tensor' (default channel)")
    p.add_argument("--law", default="paper", help="'paper' (Sun et al. Table 2) or a fit JSON from `fpx fit`")
    p.add_argument("--params", type=float, default=DEFAULT_PARAMS,
                   help="model size N, non-embedding parameters (default 1e9)")
    p.add_argument("--tokens", type=float, default=None, help="training tokens D (default 20 N)")
    p.add_argument("--budget", type=float, default=None,
                   help="compute budget C = k·P·N·D for the compute-optimal precision")
    p.add_argument("--k", type=float, default=6 / 16, help="compute constant k (default 6/16)")
    p.add_argument("--runners-up", type=int, default=2, help="alternatives listed per width (default 2)")
    p.add_argument("--measure", action="store_true",
                   help="add emulator measurements (dynamic range, SQNR, MSE) per candidate")
    p.add_argument("--samples", type=int, default=16384, help="samples per distribution for --measure")
    p.add_argument("--seed", type=int, default=0, help="seed of the --measure test data")
    p.add_argument("--tensors", default=None, metavar="FILE.npz",
                   help="with --measure, also measure on these arrays (e.g. from fpx train --capture)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def parse_block(text: str):
    t = text.strip().lower()
    if t in ("channel", "tensor"):
        return t
    try:
        b = int(t)
    except ValueError:
        raise ValueError(f"--block: expected an integer, 'channel' or 'tensor', got {text!r}") from None
    if b < 1:
        raise ValueError(f"--block: block size must be >= 1, got {b}")
    return b


def load_law(spec: str):
    """``'paper'`` -> (paper law, 'paper'); a path -> (fitted law, path)."""
    from explorer.laws import CapybaraLaw
    if spec == "paper":
        return CapybaraLaw.paper(), "paper (Sun et al., arXiv 2501.02423, Table 2)"
    from explorer.fit import load_fit
    return load_fit(spec), f"fit {spec}"


def _tensors(args):
    if args.tensors is None:
        return None
    if not args.measure:
        raise ValueError("--tensors needs --measure")
    import os
    import numpy as np
    if not os.path.isfile(args.tensors):
        raise FileNotFoundError(f"--tensors: file not found: {args.tensors}")
    with np.load(args.tensors, allow_pickle=False) as z:   # numpy only: no torch import here
        return {k: np.asarray(z[k]) for k in z.files}


def run(args) -> int:
    law, source = load_law(args.law)
    rec = recommend(bits=args.bits, block=parse_block(args.block), law=law, law_source=source,
                    params=args.params, tokens=args.tokens, budget=args.budget, k=args.k,
                    runners_up=args.runners_up, measure=args.measure, samples=args.samples,
                    seed=args.seed, tensors=_tensors(args))
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        print(format_text(rec))
    return 0
