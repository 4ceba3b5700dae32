"""Measured facts about a number format, from the bit-exact emulator (:mod:`fpformat`).

For one element format: its dynamic range, and the signal-to-quantization-noise ratio (SQNR, dB)
and mean squared error of quantizing seeded test data — Gaussian, Laplace and Student-t with 3
degrees of freedom (heavy-tailed, like activations and gradients) — and optionally tensors captured
from a trained model.  Each data set is quantized twice, with the scaling of Sun et al. (§3.1,
Eq. 7): multiply by max_elem / amax, round to nearest-even into the format (saturating), scale
back, the scale held in float64:

- ``tensor``: one scale for the whole tensor;
- ``block{B}``: one scale per B consecutive elements along the last axis (a ragged last block
  is allowed), i.e. ``BlockFormat(element, block_size=B, scale_format=None, scale_rule="amax")``.

MSE is in the units of the data (unit-variance synthetic data are not normalised further).
Captured tensors travel in ``.npz`` files (:func:`save_tensors`, :func:`load_tensors`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fpformat import BlockFormat, FloatFormat, get_format
from fpformat.files import atomic_write

DISTRIBUTIONS = ("gaussian", "laplace", "student_t3")
#: The most samples per distribution :func:`format_metrics` draws (2**22: 32 MiB of float64 per
#: data set; more changes SQNR by far less than the formats differ, and only costs memory).
MAX_SAMPLES = 1 << 22
#: Elements per step of :func:`quantization_error`: its temporaries stay ~1 MiB at any size.
ERROR_CHUNK = 1 << 16


def sqnr_db(x: np.ndarray, q: np.ndarray) -> float:
    """10 log10(Σx² / Σ(x−q)²) in dB; +inf when q == x exactly."""
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    noise = float(np.sum((x - q) ** 2))
    signal = float(np.sum(x ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def quantization_error(x: np.ndarray, q: np.ndarray, chunk: int = ERROR_CHUNK
                       ) -> tuple[float, float | None]:
    """``(mse, sqnr_db)`` of ``q`` (the quantized ``x``, same shape) in float64: MSE is the mean
    of (q − x)² over elements where both are finite, the signal the mean of x² over finite x,
    and SQNR 10 log10(signal / MSE), None when either is 0.  Computed ``chunk`` elements at a
    time, so memory beyond the two inputs stays a few ``chunk``-sized buffers however large
    they are (a 200 MB array no longer needs 1.8 GB for its summary)."""
    x = np.asarray(x).reshape(-1)
    q = np.asarray(q).reshape(-1)
    if x.shape != q.shape:
        raise ValueError(f"q: expected {x.size} elements like x, got {q.size}")
    sig_sum = err_sum = 0.0
    sig_n = err_n = 0
    for i in range(0, x.size, chunk):
        xs = x[i:i + chunk].astype(np.float64)
        qs = q[i:i + chunk].astype(np.float64)
        fx = np.isfinite(xs)
        both = fx & np.isfinite(qs)
        sig_sum += float(np.sum(np.square(xs[fx])))
        sig_n += int(fx.sum())
        err_sum += float(np.sum(np.square(qs[both] - xs[both])))
        err_n += int(both.sum())
    sig = sig_sum / sig_n if sig_n else 0.0
    mse = err_sum / err_n if err_n else 0.0
    return mse, (float(10 * np.log10(sig / mse)) if mse > 0 and sig > 0 else None)


def test_data(dist: str, n: int, seed: int) -> np.ndarray:
    """``n`` float64 samples of ``dist`` (one of :data:`DISTRIBUTIONS`), seeded."""
    rng = np.random.default_rng(seed)
    if dist == "gaussian":
        return rng.standard_normal(n)
    if dist == "laplace":
        return rng.laplace(size=n)
    if dist == "student_t3":
        return rng.standard_t(3, size=n)
    raise ValueError(f"dist: expected one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")


def _resolve(fmt):
    if isinstance(fmt, str):
        fmt = get_format(fmt)
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt: expected an element FloatFormat or its name, got {fmt!r}")
    return fmt


def scaled_quantize(fmt, x: np.ndarray, block: int | None) -> np.ndarray:
    """Quantize ``x`` with amax scaling (Sun et al.; ``fpformat.BlockFormat`` rule ``"amax"``,
    float32 scales): one scale per tensor (``block=None``) or per ``block`` consecutive elements
    of the last axis.  Same shape as ``x``, float64."""
    f = _resolve(fmt)
    x = np.asarray(x, dtype=np.float64)
    if block is not None and (isinstance(block, bool) or int(block) != block or block < 1):
        raise ValueError(f"block: expected a positive integer or None, got {block!r}")
    if x.ndim == 0:
        x = x.reshape(1)
    b = BlockFormat(f, "tensor" if block is None else int(block), scale_rule="amax")
    return b.quantize(x, rounding="rne", saturate=True)


@dataclass(frozen=True)
class FormatMetrics:
    """Measured properties of one element format.

    dynamic_range_log2: log2(max / min_subnormal) in binades (min positive value when the format
    has no subnormals); ``block`` is 0 when only per-tensor scaling was measured;
    normal_range_log2: log2(max / min_normal); dynamic_range_db: 20·log10 of max / min
    positive.  ``sqnr_db`` and ``mse`` map ``"{data}/{scaling}"`` (e.g.
    ``"laplace/block32"``) to dB and to mean squared error."""

    name: str
    exp_bits: int
    man_bits: int
    bits: int
    max: float
    min_normal: float
    min_positive: float
    dynamic_range_log2: float
    normal_range_log2: float
    dynamic_range_db: float
    block: int
    samples: int
    seed: int
    sqnr_db: dict[str, float] = field(default_factory=dict)
    mse: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sqnr_db"] = {k: _json_float(v) for k, v in self.sqnr_db.items()}
        return d


def _json_float(v: float):
    return v if np.isfinite(v) else ("inf" if v > 0 else "-inf")


def format_metrics(fmt, samples: int = 16384, seed: int = 0, block: int | None = 32,
                   tensors: Mapping[str, np.ndarray] | None = None, *,
                   n: int | None = None) -> FormatMetrics:
    """Dynamic range and SQNR/MSE of ``fmt`` (a FloatFormat or a name such as ``"e2m1"``) on the
    three synthetic distributions (``samples`` each, seeded; ``n`` is an alias of ``samples``)
    and on ``tensors`` (name -> array, e.g. weights or activations captured from a trained
    model), per tensor and, unless ``block`` is None, per ``block`` elements."""
    f = _resolve(fmt)
    if n is not None:
        samples = n
    if block is not None and (isinstance(block, bool) or not isinstance(block, (int, np.integer))
                              or block < 1):
        raise ValueError(f"block: expected a positive integer or None, got {block!r}")
    unit = 1 if block is None else int(block)
    if (isinstance(samples, bool) or not isinstance(samples, (int, np.integer))
            or not unit <= samples <= MAX_SAMPLES):
        raise ValueError(f"samples: expected an integer in {unit}..{MAX_SAMPLES} (block .. "
                         f"MAX_SAMPLES), got {samples!r}")
    samples = int(samples) - int(samples) % unit
    vals = f.values()
    pos = vals[vals > 0]
    min_pos = float(pos.min())
    data = {d: test_data(d, samples, seed + i) for i, d in enumerate(DISTRIBUTIONS)}
    for name, arr in (tensors or {}).items():
        a = np.asarray(arr, dtype=np.float64)
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"tensors[{name!r}]: expected a non-empty finite array")
        data[str(name)] = a
    sq, mse = {}, {}
    for name, x in data.items():
        cases = [("tensor", None)] + ([] if block is None else [(f"block{block}", int(block))])
        for label, blk in cases:
            q = scaled_quantize(f, x, blk)
            sq[f"{name}/{label}"] = sqnr_db(x, q)
            mse[f"{name}/{label}"] = float(np.mean((x - q) ** 2))
    return FormatMetrics(
        name=f.name, exp_bits=int(f.exp_bits), man_bits=int(f.man_bits), bits=int(f.bits),
        max=float(f.max), min_normal=float(f.min_normal), min_positive=min_pos,
        dynamic_range_log2=float(np.log2(f.max / min_pos)),
        normal_range_log2=float(np.log2(f.max / f.min_normal)),
        dynamic_range_db=float(20 * np.log10(f.max / min_pos)),
        block=0 if block is None else int(block), samples=samples, seed=int(seed), sqnr_db=sq,
        mse=mse)


# ------------------------------------------------------------------------------------ tensor files
def save_tensors(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write named arrays (e.g. captured GEMM operands) to a compressed ``.npz`` file, atomically
    (:func:`fpformat.files.atomic_write`); like numpy, ``.npz`` is appended to a path without
    it."""
    p = str(path) if str(path).endswith(".npz") else f"{path}.npz"
    with atomic_write(p, "wb") as fh:
        np.savez_compressed(fh, **tensors)


def load_tensors(path: str | Path, *, name: str = "tensors") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (written by :func:`save_tensors` or by the user), read
    without unpickling.  ``FileNotFoundError`` naming ``name`` when the file does not exist,
    ``ValueError`` naming it when it is not an ``.npz`` archive of numeric arrays (a ``.npy``
    array, a damaged zip, pickled objects)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: file not found: {p}")
    if not p.is_file():
        raise ValueError(f"{name} {p}: not a file; give an .npz archive of arrays")
    try:
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive "
                             "(np.savez(path, name=array) writes one)")
        with z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name} {p}: cannot read as an .npz archive of arrays: {exc}") from None
