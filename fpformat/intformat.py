"""`IntFormat`: two's-complement integer element formats (``int8``, ``int4``, ...).

    from fpformat import get_format
    i8 = get_format("int8")                  # IntFormat(8): -128..127
    codes = i8.encode(x)                     # uint8 two's-complement codes: -1 is 0xFF
    y = i8.quantize(x)                       # == i8.decode(codes), in x's dtype

A value is ``k * 2**-frac_bits`` for the integer ``k`` a code holds in ``bits``-bit two's
complement (``-k`` is coded ``2**bits - k``).  ``int8`` is the plain integer of integer matrix
units (``frac_bits=0``, ``-128..127``).  OCP MXINT8's element is
``IntFormat(8, frac_bits=6, symmetric=True)``: ``k/64`` with ``|k| <= 127``, which is the value
grid and the code mapping of the ``mxint8`` preset's element (a ``FloatFormat(0, 7, bias=0)``
read with ``int_codes=True``; the tests hold the two to each other code for code).

Semantics (every rounding mode of :mod:`fpformat.rounding`, on the exact input):

* the input is scaled by ``2**frac_bits`` (exact) and rounded to an integer: ``rne`` ties to
  even, ``rna`` ties away from zero, ``rtz``, ``rtp``, ``rtn``, ``rto`` (an inexact result gets
  the odd one of its two neighbours), ``sr`` stochastic on the magnitude with the counter-based
  stream of :mod:`fpformat.core` (``seed``, ``sr_bits``) or the caller's bits (``random_bits``,
  the rule of :meth:`fpformat.FloatFormat.encode`), so a seed gives the same decisions as for a
  float format;
* integers have no infinity and no NaN: results beyond the range clamp to the largest or
  smallest integer and ±inf clamp likewise, with ``saturate`` True or False alike (the rule of
  :class:`~fpformat.FloatFormat` for a format with neither inf nor NaN: overflow gives ±max);
  NaN gives 0, as PTX ``cvt`` with ``.sat`` converts a NaN to an integer;
* there is no -0: a negative input rounding to zero gives code 0;
* ``symmetric=True`` never produces the most negative code ``2**(bits-1)`` (``-2**(bits-1)``);
  that code still decodes to ``-2**(bits-1) * 2**-frac_bits``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import kernels
from .arrays import FLOAT_LAYOUTS, as_float_array, float_kind, is_cuda_array, restore_dtype
from .format import hash_once
from .rounding import check_sr_bits, mode_code

MIN_BITS, MAX_BITS = 2, 32
#: The range of frac_bits: every value k * 2**-frac_bits stays a float64 value.
MAX_FRAC_BITS = 1000
_NAME = re.compile(r"int(\d+)")


@hash_once
@dataclass(frozen=True)
class IntFormat:
    """A two's-complement integer format (module docstring).

    Args:
        bits: code width, 2..32.
        frac_bits: values are ``k * 2**-frac_bits`` (0: integers; MXINT8's element: 6).
        symmetric: never produce the most negative integer (range ``±(2**(bits-1) - 1)``).
        name: display name; not part of equality.
    """

    bits: int = 8
    frac_bits: int = 0
    symmetric: bool = False
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for pname in ("bits", "frac_bits"):
            v = getattr(self, pname)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{pname} must be an int, got {type(v).__name__}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {self.bits}")
        if not -MAX_FRAC_BITS <= self.frac_bits <= MAX_FRAC_BITS:
            raise ValueError(f"frac_bits must be in -{MAX_FRAC_BITS}..{MAX_FRAC_BITS}, "
                             f"got {self.frac_bits}")
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise TypeError(f"symmetric must be a bool, got {type(self.symmetric).__name__}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "frac_bits", int(self.frac_bits))

    # ----------------------------------------------------------------------------- structure
    @property
    def kmax(self) -> int:
        """The largest integer a code holds, ``2**(bits-1) - 1``."""
        return (1 << (self.bits - 1)) - 1

    @property
    def kmin(self) -> int:
        """The smallest integer encode produces: ``-2**(bits-1)``, or ``-kmax`` if symmetric."""
        return -self.kmax if self.symmetric else -(1 << (self.bits - 1))

    @property
    def quantum(self) -> float:
        """The spacing of the values, ``2**-frac_bits``."""
        return float(2.0 ** -self.frac_bits)

    @property
    def max(self) -> float:
        """Largest value, ``kmax * 2**-frac_bits``."""
        return float(np.ldexp(float(self.kmax), -self.frac_bits))

    @property
    def min(self) -> float:
        """Smallest (most negative) value encode produces."""
        return float(np.ldexp(float(self.kmin), -self.frac_bits))

    @property
    def dtype(self) -> np.dtype:
        """The narrowest unsigned integer dtype holding a code."""
        for dt in (np.uint8, np.uint16, np.uint32):
            if self.bits <= 8 * np.dtype(dt).itemsize:
                return np.dtype(dt)
        raise AssertionError("unreachable: bits <= 32")

    @property
    def max_code(self) -> int:
        """The code of the largest value (``0x7F`` for int8)."""
        return self.kmax

    @property
    def min_code(self) -> int:
        """The code of the smallest value encode produces (``0x80`` for int8, ``0x81``
        symmetric)."""
        return self.kmin % (1 << self.bits)

    @property
    def nan_code(self) -> None:
        """Integers have no NaN."""
        return None

    def values(self) -> np.ndarray:
        """Every value encode produces, sorted, as float64 (at most 2**24 of them)."""
        if self.bits > 24:
            raise ValueError(f"values() enumerates at most 2**24 codes; this format has "
                             f"2**{self.bits}")
        return np.ldexp(np.arange(self.kmin, self.kmax + 1, dtype=np.float64), -self.frac_bits)

    def fits(self, dtype) -> bool:
        """Whether every value is exactly a value of float ``dtype``."""
        man, qmin, emax = FLOAT_LAYOUTS[float_kind(dtype)]
        top = self.bits - 1 - self.frac_bits              # 2**top bounds the magnitudes
        return self.bits - 1 <= man + 1 and -self.frac_bits >= qmin and top <= emax

    # ----------------------------------------------------------------------------- naming
    @property
    def spec(self) -> str:
        """``int<bits>`` for plain integers (what ``get_format`` parses back), else the repr."""
        if self.frac_bits == 0 and not self.symmetric:
            return f"int{self.bits}"
        return repr(self)

    def __str__(self) -> str:
        return self.name or self.spec

    def describe(self) -> dict[str, Any]:
        """Properties as a JSON-ready dict (what `fpx info` prints)."""
        return {"name": str(self), "spec": self.spec, "kind": "twos_complement_integer",
                "bits": self.bits, "frac_bits": self.frac_bits, "symmetric": self.symmetric,
                "max": self.max, "min": self.min, "quantum": self.quantum,
                "max_code": self.max_code, "min_code": self.min_code, "has_nan": False,
                "has_inf": False, "overflow": "saturates (NaN -> 0)"}

    # ----------------------------------------------------------------------------- operations
    def _integers(self, x, rounding, saturate, seed, sr_bits, random_bits):
        """(x's shape, kind, the rounded and clamped integers k as int64)."""
        if is_cuda_array(x):
            raise ValueError("IntFormat runs on the CPU only (numpy arrays or CPU tensors)")
        if not isinstance(saturate, (bool, np.bool_, int)) or saturate not in (0, 1):
            raise TypeError(f"saturate must be a bool, got {saturate!r}")
        mode = rounding.lower() if isinstance(rounding, str) else rounding
        mode_code(mode)                                   # ValueError naming the modes
        arr, kind = as_float_array(x)
        x64 = np.asarray(arr, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            y = np.ldexp(x64, self.frac_bits)
        # frac_bits < 0 can scale a tiny input below float64's subnormals, to 0: keep it the
        # smallest nonzero of its sign, which every mode rounds as it rounds the exact value
        # (far below 1/2: only its sign and that it is inexact matter)
        y = np.where((y == 0) & (x64 != 0), np.copysign(5e-324, x64), y)
        # NaN -> 0; beyond +-2**bits every mode clamps, and within it |y| + 0.5 is exact
        lim = float(1 << self.bits)
        y = np.clip(np.where(np.isnan(y), 0.0, y), -lim, lim)
        if random_bits is not None:
            us, k = kernels.given_random_u64(random_bits, y.shape, mode, seed, sr_bits)
        elif mode == "sr":
            k = check_sr_bits(sr_bits, default=64)
            us = kernels.sr_random_u64(seed, np.arange(y.size))    # seed None: a fresh one
        a = np.abs(y)
        lo = np.floor(a)
        frac = a - lo                                      # exact
        neg = y < 0
        if mode == "rne":
            up = (frac > 0.5) | ((frac == 0.5) & (np.fmod(lo, 2) == 1))
        elif mode == "rna":
            up = frac >= 0.5
        elif mode == "rtz":
            up = np.zeros(y.shape, dtype=bool)
        elif mode == "rtp":
            up = (frac > 0) & ~neg
        elif mode == "rtn":
            up = (frac > 0) & neg
        elif mode == "rto":
            up = (frac > 0) & (np.fmod(lo, 2) == 0)
        else:                                              # sr: the core's test on the bits
            t = np.floor(np.ldexp(frac, k)).reshape(-1).astype(np.uint64)
            up = ((us >> np.uint64(64 - k)) < t).reshape(y.shape)
        mag = lo + up
        ints = np.where(neg, -mag, mag).astype(np.int64)
        return arr.shape, kind, np.clip(ints, self.kmin, self.kmax)

    def encode(self, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
               sr_bits: int | None = None, random_bits=None) -> np.ndarray:
        """Two's-complement codes (dtype :attr:`dtype`, x's shape) of ``x`` rounded once into
        this format (module docstring: rounding, saturation, NaN)."""
        _, _, k = self._integers(x, rounding, saturate, seed, sr_bits, random_bits)
        return (k % (1 << self.bits)).astype(self.dtype)

    def decode(self, codes, dtype=np.float64) -> np.ndarray:
        """Values of two's-complement ``codes`` (integers in ``0 .. 2**bits - 1``) as ``dtype``."""
        c = np.asarray(codes)
        if c.dtype.kind not in "ui":
            raise TypeError(f"codes must be an integer array, got dtype {c.dtype}")
        if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << self.bits)):
            raise ValueError(f"codes must be in 0..{(1 << self.bits) - 1} for {self}")
        c = c.astype(np.int64)
        k = np.where(c >= 1 << (self.bits - 1), c - (1 << self.bits), c)
        out = np.ldexp(k.astype(np.float64), -self.frac_bits)
        kind = float_kind(dtype)
        if kind == "float64":
            return out
        if not self.fits(kind):
            raise ValueError(f"format {self} has values that are not {kind} values; "
                             f"decode to float64")
        return restore_dtype(out.astype(np.float32) if kind == "bfloat16" else out, kind)

    def quantize(self, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
                 sr_bits: int | None = None, random_bits=None):
        """``decode(encode(x))`` with ``x``'s dtype and shape (+0 for a negative input rounding
        to zero: integers have no -0)."""
        shape, kind, k = self._integers(x, rounding, saturate, seed, sr_bits, random_bits)
        if not self.fits(kind):
            raise ValueError(f"format {self} has values that are not {kind} values; quantize a "
                             f"float64 array instead, or use encode/decode")
        out = np.ldexp(k.astype(np.float64), -self.frac_bits).reshape(shape)
        return restore_dtype(out.astype(np.float32) if kind != "float64" else out, kind, like=x)


def int_format(name: str) -> IntFormat | None:
    """The format of a name ``int<B>`` (``int8``: -128..127), None for other names."""
    m = _NAME.fullmatch(name.strip().lower()) if isinstance(name, str) else None
    if m is None:
        return None
    bits = int(m[1])
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"int<B> needs {MIN_BITS} <= B <= {MAX_BITS}, got {name!r}")
    return IntFormat(bits, name=f"int{bits}")
