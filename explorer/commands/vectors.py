"""`fpx vectors`: golden test vectors for RTL verification."""

from __future__ import annotations

import json
import shlex
import sys

import fpformat
from fpformat import FloatFormat, get_format
from fpformat.files import check_output_path
from fpformat.gemm import Accumulator, result_format
from fpformat.vectors import (
    MAX_VECTOR_INPUTS,
    block_vectors,
    dot_vectors,
    element_vectors,
    write_block_vectors,
    write_dot_vectors,
    write_element_vectors,
)


def add_parser(sub):
    p = sub.add_parser("vectors", help="write golden test vectors for RTL verification",
                       description="Write golden vectors: float32 input bits, expected code and "
                                   "decoded value, always including every tie, the overflow and "
                                   "underflow boundaries, NaN, +-inf and +-0, plus COUNT "
                                   "random inputs.")
    p.add_argument("--op", choices=["convert", "dot"], default="convert",
                   help="convert: float32 -> format (default); dot: a multiply-accumulate unit")
    p.add_argument("--format", "-f", required=True,
                   help="format name or spec (with --op dot: the A operand's element format)")
    p.add_argument("--b-format", default=None,
                   help="--op dot: B operand's format (default: --format)")
    p.add_argument("--acc-format", default=None, help="--op dot: accumulator format, e.g. e8m13")
    p.add_argument("--k", type=int, default=16,
                   help="--op dot: products per dot product (default 16)")
    p.add_argument("--chunk", type=int, default=None,
                   help="--op dot: promote the partial sum to float32 every CHUNK products")
    p.add_argument("--order", choices=["sequential", "pairwise"], default="sequential",
                   help="--op dot: accumulation order (default sequential)")
    p.add_argument("--fused-width", type=int, default=1,
                   help="--op dot: W products summed exactly, then rounded once into the "
                        "accumulator")
    p.add_argument("--rounding", "-r", default="rne",
                   help="rne rna rtz rtp rtn rto sr (default rne)")
    p.add_argument("--saturate", action="store_true", help="clamp overflow to +-max")
    p.add_argument("--count", type=int, default=1000,
                   help="random inputs (default 1000); count times the block length or --k is "
                        f"at most {MAX_VECTOR_INPUTS} per file")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and SR (default 0)")
    p.add_argument("--sr-bits", type=int, default=None, help="random bits per SR decision")
    p.add_argument("--out", "-o", required=True, help="output file")
    p.add_argument("--style", choices=["csv", "hex"], default="csv",
                   help="csv (default) or hex lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def _run_dot(args, header: list[str]) -> int:
    if not args.acc_format:
        raise ValueError("--op dot needs --acc-format (e.g. e8m13, float32)")
    bf = args.b_format or args.format
    kw = dict(order=args.order, fused_width=args.fused_width, saturate=args.saturate)
    vecs = dot_vectors(args.format, bf, args.acc_format, args.rounding, k=args.k, count=args.count,
                       seed=args.seed, chunk=args.chunk, **kw)
    out_fmt = result_format(Accumulator(args.acc_format, args.rounding, chunk=args.chunk, **kw))
    write_dot_vectors(vecs, args.format, bf, out_fmt, args.out, args.style, header)
    kinds = {k: sum(v.kind == k for v in vecs) for k in sorted({v.kind for v in vecs})}
    summary = {"out": args.out, "vectors": len(vecs), "op": "dot", "result_format": str(out_fmt),
               "kinds": kinds}
    print(json.dumps(summary) if args.json
          else f"wrote {len(vecs)} dot vectors to {args.out} {kinds}")
    return 0


def run(args) -> int:
    if args.count < 0:
        raise ValueError(f"--count must be >= 0, got {args.count}")
    check_output_path(args.out)            # before the work: a bad --out fails at once
    if args.op == "dot":
        header = [f"fpx vectors (fpformat {fpformat.__version__}): " + shlex.join(sys.argv[1:]),
                  f"dot product: A {args.format}, B {args.b_format or args.format}, accumulator "
                  f"{args.acc_format} {args.rounding}, k {args.k}, chunk {args.chunk}, "
                  f"order {args.order}, fused width {args.fused_width}"]
        return _run_dot(args, header)
    if args.b_format or args.acc_format or args.chunk or args.fused_width != 1:
        raise ValueError("--b-format, --acc-format, --chunk and --fused-width need --op dot")
    fmt = get_format(args.format)
    header = [f"fpx vectors (fpformat {fpformat.__version__}): " + shlex.join(sys.argv[1:]),
              f"format {fmt} = {fmt.spec if isinstance(fmt, FloatFormat) else fmt}",
              f"rounding {args.rounding}, saturate {args.saturate}, seed {args.seed}"]
    if isinstance(fmt, FloatFormat):
        vec = element_vectors(fmt, args.rounding, args.saturate, args.count, args.seed,
                              args.sr_bits)
        write_element_vectors(vec, fmt, args.out, args.style, header)
        n = len(vec)
        kinds = {str(k): int((vec.kinds == k).sum()) for k in sorted(set(vec.kinds.tolist()))}
    else:
        # OCP MX and NVFP4 clamp scaled elements to the element max: block formats saturate.
        vec = block_vectors(fmt, args.rounding, True, args.count, args.seed)
        write_block_vectors(vec, fmt, args.out, args.style, header)
        n = len(vec)
        kinds = {k: vec.kinds.count(k) for k in sorted(set(vec.kinds))}
    summary = {"out": args.out, "vectors": n, "format": str(fmt), "kinds": kinds}
    print(json.dumps(summary) if args.json else f"wrote {n} vectors to {args.out} {kinds}")
    return 0
