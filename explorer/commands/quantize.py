"""`fpx quantize IN.npy OUT.npy --format F`: quantize (or encode) a saved numpy array."""

from __future__ import annotations

import json
import os

import numpy as np

from fpformat import FloatFormat, get_format


def add_parser(sub):
    p = sub.add_parser("quantize", help="quantize or encode a .npy array",
                       description="Round a float .npy array into a format. Writes values in the "
                                   "input's dtype, or with --codes the unsigned codes (block "
                                   "formats also write OUT's scales to OUT.scales.npy).")
    p.add_argument("input", help="input .npy file (float16, float32 or float64)")
    p.add_argument("output", help="output .npy file")
    p.add_argument("--format", "-f", required=True, help="format name or spec")
    p.add_argument("--rounding", "-r", default="rne",
                   help="rne rna rtz rtp rtn rto sr (default rne)")
    p.add_argument("--saturate", action="store_true", help="clamp overflow to +-max")
    p.add_argument("--seed", type=int, default=None, help="seed for stochastic rounding")
    p.add_argument("--sr-bits", type=int, default=None, help="random bits per SR decision (1..64)")
    p.add_argument("--codes", action="store_true", help="write codes instead of values")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def run(args) -> int:
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"input file not found: {args.input}")
    try:
        x = np.load(args.input, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"cannot read {args.input} as a .npy array: {exc}") from None
    fmt = get_format(args.format)
    kw = dict(rounding=args.rounding, saturate=args.saturate, seed=args.seed)
    if isinstance(fmt, FloatFormat):
        kw["sr_bits"] = args.sr_bits
    elif args.sr_bits is not None:
        raise ValueError("--sr-bits applies to element formats only")
    summary = {"format": str(fmt), "shape": list(x.shape), "input_dtype": str(x.dtype)}
    if args.codes:
        if isinstance(fmt, FloatFormat):
            codes = fmt.encode(x, **kw)
            np.save(args.output, codes)
        else:
            enc = fmt.encode(x, **kw)
            np.save(args.output, enc.codes)
            scales_path = os.path.splitext(args.output)[0] + ".scales.npy"
            np.save(scales_path, enc.scales)
            summary["scales"] = scales_path
        summary["output_dtype"] = str(np.load(args.output, mmap_mode="r").dtype)
    else:
        y = fmt.quantize(x, **kw)
        np.save(args.output, y)
        finite = np.isfinite(x)
        err = (y.astype(np.float64) - x.astype(np.float64))[finite & np.isfinite(y)]
        sig = float(np.mean(x.astype(np.float64)[finite] ** 2)) if finite.any() else 0.0
        mse = float(np.mean(err ** 2)) if err.size else 0.0
        summary.update(output_dtype=str(y.dtype), mse=mse,
                       sqnr_db=float(10 * np.log10(sig / mse)) if mse > 0 and sig > 0 else None)
    summary["output"] = args.output
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
