"""`fpx vectors`: golden test vectors for RTL verification."""

from __future__ import annotations

import json
import shlex
import sys

import fpformat
from fpformat import BlockFormat, FloatFormat, get_format
from fpformat.files import check_output_path
from fpformat.gemm import Accumulator, result_format
from fpformat.units import get_unit
from fpformat.vectors import (
    MAX_VECTOR_INPUTS,
    block_vectors,
    dot_vectors,
    element_vectors,
    load_random_bits,
    mma_vectors,
    write_block_vectors,
    write_dot_vectors,
    write_element_vectors,
    write_mma_vectors,
)


def add_parser(sub):
    p = sub.add_parser("vectors", help="write golden test vectors for RTL verification",
                       description="Write golden vectors: float32 input bits, expected code and "
                                   "decoded value, always including every tie, the overflow and "
                                   "underflow boundaries, NaN, +-inf and +-0, plus COUNT "
                                   "random inputs.")
    p.add_argument("--op", choices=["convert", "dot", "mma"], default="convert",
                   help="convert: float32 -> format (default); dot: a multiply-accumulate unit; "
                        "mma: a matrix unit (tensor core), d = a.b + c")
    p.add_argument("--format", "-f", default=None,
                   help="format name or spec (with --op dot: the A operand's element format); "
                        "required except with --op mma")
    p.add_argument("--unit", default=None,
                   help="--op mma: the matrix unit, a preset (h100, a100, b200, ...) or a spec "
                        "like fma16/x2/rtz")
    p.add_argument("--in-format", default=None,
                   help="--op mma: the unit's input format (default float16), e.g. "
                        "float8_e4m3fn, bfloat16, tf32")
    p.add_argument("--out-format", default=None,
                   help="--op mma: the unit's output format, float32 (default) or float16")
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
    p.add_argument("--random-bits", default=None, metavar="FILE",
                   help="--rounding sr: the random bits a hardware generator gives, one per "
                        "input element in order (a .npy 1-D unsigned int "
                        "array, or text with one hex value per line); width --sr-bits (a .npy "
                        "file: default its dtype's width). The rule: the k bits below the last "
                        "kept place plus the k random bits; a carry rounds up")
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


def _run_mma(args) -> int:
    if not args.unit:
        raise ValueError("--op mma needs --unit (a preset like h100 or a spec like fma16/x2/rtz)")
    given = [o for o, v in (("--format", args.format), ("--b-format", args.b_format),
                            ("--acc-format", args.acc_format), ("--chunk", args.chunk),
                            ("--sr-bits", args.sr_bits)) if v is not None]
    given += [o for o, bad in (("--fused-width", args.fused_width != 1),
                               ("--order", args.order != "sequential"),
                               ("--rounding", args.rounding != "rne"),
                               ("--saturate", args.saturate)) if bad]
    if given:
        raise ValueError(f"{', '.join(given)} do not apply to --op mma (the unit fixes its "
                         "rounding; give --unit, --in-format, --out-format)")
    in_fmt = args.in_format or "float16"
    out_fmt = args.out_format or "float32"
    vecs = mma_vectors(args.unit, in_fmt, out_fmt, k=args.k, count=args.count, seed=args.seed)
    unit = get_unit(args.unit, get_format(in_fmt), get_format(out_fmt))
    header = [f"fpx vectors (fpformat {fpformat.__version__}): " + shlex.join(sys.argv[1:]),
              f"matrix unit {unit} = {unit.spec}: d = a.b + c, a and b {in_fmt} (k {args.k}, "
              f"blocks of {unit.fma}), c and d {out_fmt}"]
    write_mma_vectors(vecs, in_fmt, out_fmt, args.out, args.style, header)
    kinds = {k: sum(v.kind == k for v in vecs) for k in sorted({v.kind for v in vecs})}
    summary = {"out": args.out, "vectors": len(vecs), "op": "mma", "unit": str(unit),
               "spec": unit.spec, "in_format": in_fmt, "out_format": out_fmt, "kinds": kinds}
    print(json.dumps(summary) if args.json
          else f"wrote {len(vecs)} mma vectors to {args.out} {kinds}")
    return 0


def run(args) -> int:
    if args.count < 0:
        raise ValueError(f"--count must be >= 0, got {args.count}")
    check_output_path(args.out)            # before the work: a bad --out fails at once
    if args.random_bits is not None and (args.op != "convert" or args.rounding != "sr"):
        raise ValueError("--random-bits needs --rounding sr and --op convert")
    if args.op == "mma":
        return _run_mma(args)
    if args.unit or args.in_format or args.out_format:
        raise ValueError("--unit, --in-format and --out-format need --op mma")
    if not args.format:
        raise ValueError("--format is required (the element format; with --op dot the A "
                         "operand's)")
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
    if not isinstance(fmt, (FloatFormat, BlockFormat)):
        raise ValueError(f"fpx vectors writes vectors for float element formats and block "
                         f"formats; {fmt} is neither")
    bits = None
    if args.random_bits is not None:
        if not args.random_bits.endswith(".npy") and args.sr_bits is None:
            raise ValueError(f"--random-bits {args.random_bits}: a text file needs --sr-bits "
                             f"(the generator's width in bits)")
        bits = load_random_bits(args.random_bits)
        header.append(f"random bits from {args.random_bits}, one per input: rounds up iff the "
                      f"k bits below the last kept place plus the k random bits carry out")
    if isinstance(fmt, FloatFormat):
        vec = element_vectors(fmt, args.rounding, args.saturate, args.count, args.seed,
                              args.sr_bits, random_bits=bits)
        write_element_vectors(vec, fmt, args.out, args.style, header)
        n = len(vec)
        kinds = {str(k): int((vec.kinds == k).sum()) for k in sorted(set(vec.kinds.tolist()))}
    else:
        # OCP MX and NVFP4 clamp scaled elements to the element max: block formats saturate.
        vec = block_vectors(fmt, args.rounding, True, args.count, args.seed, args.sr_bits,
                            random_bits=bits)
        write_block_vectors(vec, fmt, args.out, args.style, header)
        n = len(vec)
        kinds = {k: vec.kinds.count(k) for k in sorted(set(vec.kinds))}
    summary = {"out": args.out, "vectors": n, "format": str(fmt), "kinds": kinds}
    print(json.dumps(summary) if args.json else f"wrote {n} vectors to {args.out} {kinds}")
    return 0
