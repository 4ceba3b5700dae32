"""`fpx quantize IN.npy OUT.npy --format F`: quantize (or encode) a saved numpy array."""

from __future__ import annotations

import errno
import json
import os

import numpy as np

from explorer.metrics import quantization_error
from fpformat import FloatFormat, IntFormat, get_format
from fpformat.files import atomic_write, check_output_path

#: Element formats (codes only, no scales): floats and two's-complement integers.
ELEMENT_TYPES = (FloatFormat, IntFormat)


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


def load_array(path: str, name: str = "input") -> np.ndarray:
    """The array in the ``.npy`` file ``path``, read without unpickling; ``ValueError`` naming
    ``name`` and the file for anything that is not a non-empty ``.npy`` array (an ``.npz``
    archive, an empty or damaged file, pickled objects, a zero-length array); ``OSError`` (with
    the file name) for a missing file or a directory."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{name} is a directory; give a .npy file", path)
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ValueError(f"{name} {path}: cannot read as a .npy array: {exc or 'empty file'}"
                         ) from None
    if isinstance(x, np.lib.npyio.NpzFile):
        names = ", ".join(x.files)
        x.close()
        raise ValueError(f"{name} {path}: an .npz archive (arrays: {names}), not a .npy array; "
                         f"save one array with np.save")
    if x.size == 0:
        raise ValueError(f"{name} {path}: the array is empty (shape {x.shape}); nothing to "
                         f"quantize")
    return x


def _save(path: str, arr: np.ndarray) -> None:
    """np.save to exactly ``path`` (numpy appends ``.npy`` to a bare name; a file handle keeps
    the name given), atomically."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr)


def run(args) -> int:
    fmt = get_format(args.format)
    if isinstance(fmt, ELEMENT_TYPES):
        scales_path = None
    elif args.sr_bits is not None:
        raise ValueError("--sr-bits applies to element formats only")
    else:
        scales_path = os.path.splitext(args.output)[0] + ".scales.npy"
    # Every output is checked before the work, so a bad path fails in a second, not after it.
    check_output_path(args.output)
    if args.codes and scales_path:
        check_output_path(scales_path)
    x = load_array(args.input)
    kw = dict(rounding=args.rounding, saturate=args.saturate, seed=args.seed)
    if isinstance(fmt, ELEMENT_TYPES):
        kw["sr_bits"] = args.sr_bits
    summary = {"format": str(fmt), "shape": list(x.shape), "input_dtype": str(x.dtype)}
    if args.codes:
        if isinstance(fmt, ELEMENT_TYPES):
            codes = fmt.encode(x, **kw)
        else:
            enc = fmt.encode(x, **kw)
            codes = enc.codes
            _save(scales_path, enc.scales)
            summary["scales"] = scales_path
        _save(args.output, codes)
        summary["output_dtype"] = str(codes.dtype)
    else:
        y = fmt.quantize(x, **kw)
        _save(args.output, y)
        mse, sqnr = quantization_error(x, y)
        summary.update(output_dtype=str(y.dtype), mse=mse, sqnr_db=sqnr)
    summary["output"] = args.output
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
