"""`fpx vectors`: golden test vectors for RTL verification."""

from __future__ import annotations

import json
import shlex
import sys

import fpformat
from fpformat import FloatFormat, get_format
from fpformat.vectors import element_vectors, write_element_vectors


def add_parser(sub):
    p = sub.add_parser("vectors", help="write golden test vectors for RTL verification",
                       description="Write golden vectors: float32 input bits, expected code and "
                                   "decoded value, always including every tie, the overflow and "
                                   "underflow boundaries, NaN, +-inf and +-0, plus COUNT random inputs.")
    p.add_argument("--format", "-f", required=True, help="format name or spec")
    p.add_argument("--rounding", "-r", default="rne", help="rne rna rtz rtp rtn rto sr (default rne)")
    p.add_argument("--saturate", action="store_true", help="clamp overflow to +-max")
    p.add_argument("--count", type=int, default=1000, help="random inputs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and SR (default 0)")
    p.add_argument("--sr-bits", type=int, default=None, help="random bits per SR decision")
    p.add_argument("--out", "-o", required=True, help="output file")
    p.add_argument("--style", choices=["csv", "hex"], default="csv", help="csv (default) or hex lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def run(args) -> int:
    if args.count < 0:
        raise ValueError(f"--count must be >= 0, got {args.count}")
    fmt = get_format(args.format)
    header = [f"fpx vectors (fpformat {fpformat.__version__}): " + shlex.join(sys.argv[1:]),
              f"format {fmt} = {fmt.spec if isinstance(fmt, FloatFormat) else fmt}",
              f"rounding {args.rounding}, saturate {args.saturate}, seed {args.seed}"]
    if isinstance(fmt, FloatFormat):
        vec = element_vectors(fmt, args.rounding, args.saturate, args.count, args.seed, args.sr_bits)
        write_element_vectors(vec, fmt, args.out, args.style, header)
        n = len(vec)
        kinds = {str(k): int((vec.kinds == k).sum()) for k in sorted(set(vec.kinds.tolist()))}
    else:
        from fpformat.block import block_vectors, write_block_vectors
        vec = block_vectors(fmt, args.rounding, args.saturate, args.count, args.seed)
        write_block_vectors(vec, fmt, args.out, args.style, header)
        n, kinds = len(vec), {}
    summary = {"out": args.out, "vectors": n, "format": str(fmt), "kinds": kinds}
    print(json.dumps(summary) if args.json else f"wrote {n} vectors to {args.out} {kinds}")
    return 0
