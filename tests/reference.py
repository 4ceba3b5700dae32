"""An exact-rational reference for ``fpformat``, written from docs/numerics.md alone.

Nothing here reads the kernels: codes are decoded with :class:`fractions.Fraction`, inputs are
converted exactly (``Fraction(float)``) and rounded by bisecting the sorted list of finite
magnitudes, with every special case of docs/numerics.md spelled out one by one.  It is slow
(pure Python, microseconds per element) and is meant for differential tests.

The input format is any object with the attributes ``exp_bits, man_bits, bias, signed,
subnormals, nan_codes, inf, negative_zero, has_zero`` and optionally ``parity``
(``fpformat.FloatFormat`` has them).

    >>> from fpformat import get_format
    >>> ref = Reference(get_format("float8_e4m3fn"))
    >>> ref.encode(470.0), ref.encode(470.0, saturate=True), ref.encode(float("nan"))
    (127, 126, 127)
    >>> ref.decode(0x7E)
    448.0
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from functools import lru_cache
from typing import Iterable, NamedTuple

import numpy as np

#: Formats with more magnitude codes than this are not enumerated (float32, float64...).
ENUMERATE_LIMIT = 1 << 20

MODES = ("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr")


class FormatKey(NamedTuple):
    """The parameters of a format that fix its semantics (hashable cache key)."""

    exp_bits: int
    man_bits: int
    bias: int
    signed: bool
    subnormals: bool
    nan_codes: int
    inf: bool
    negative_zero: bool
    has_zero: bool
    parity: str = "significand"     # "code": ties/odd read the lower neighbour's code (P3109)


def format_key(fmt) -> FormatKey:
    """The :class:`FormatKey` of any format-like object."""
    return FormatKey(int(fmt.exp_bits), int(fmt.man_bits), int(fmt.bias), bool(fmt.signed),
                     bool(fmt.subnormals), int(fmt.nan_codes), bool(fmt.inf),
                     bool(fmt.negative_zero), bool(getattr(fmt, "has_zero", True)),
                     str(getattr(fmt, "parity", "significand")))


class Reference:
    """Exact decode/encode of one format (build with :func:`reference`, which caches)."""

    def __init__(self, fmt) -> None:
        k = format_key(fmt)
        self.key = k
        E, M = k.exp_bits, k.man_bits
        self.E, self.M = E, M
        self.nmag = 1 << (E + M)                       # number of magnitude codes
        self.signbit = self.nmag if k.signed else 0
        self.bits = E + M + int(k.signed)
        self.fnuz = k.signed and not k.negative_zero
        nan_first = self.nmag - k.nan_codes            # first NaN magnitude code
        self.inf_mag = nan_first - 1 if k.inf else None
        self.max_mag_code = nan_first - 1 - int(k.inf)  # largest finite magnitude code
        self.has_nan = k.nan_codes > 0 or self.fnuz
        self.has_inf = k.inf
        self.emin = (1 - k.bias) if k.has_zero else -k.bias

        if self.nmag > ENUMERATE_LIMIT:
            # Too many codes to list (float32, float64...): every rounding is computed from the
            # binade of the input instead (see _neighbours); levels are not available.
            self.analytic = True
            self.max = self._mag_exact(self.max_mag_code)
            self.smallest = Fraction(0) if k.has_zero else self._mag_exact(0)
            self.smallest_code = 0
            self.beyond = self.max + self._quantum(self.max)
            self._nan_codes(k, nan_first)
            return
        self.analytic = False
        # Exact magnitudes of the finite magnitude codes.
        self.mag_value: list[Fraction] = [self._mag_exact(c) for c in range(self.max_mag_code + 1)]
        # Sorted distinct finite magnitudes and the (smallest) code of each.  Flushed codes
        # (exponent field 0, m != 0, no subnormals) decode as zero and are never produced.
        # Keys are the float64 values (exact: every value of a FloatFormat is a float64, and
        # floats hash and compare much faster than Fractions); bisection uses them too, while
        # every rounding decision below uses the Fractions.
        by_value: dict[float, int] = {}
        for c, v in enumerate(self.mag_value):
            by_value.setdefault(float(v), c)
        self.level_float: list[float] = sorted(by_value)
        self.level_code: list[int] = [by_value[f] for f in self.level_float]
        self.levels: list[Fraction] = [self.mag_value[c] for c in self.level_code]
        self.max = self.levels[-1]
        self.smallest = self.levels[0]                 # 0, or the smallest value without zero
        self.smallest_code = self.level_code[0]
        # The next value of the format with its exponent range unbounded above.
        self.beyond = self.max + self._quantum(self.max)
        self._nan_codes(k, nan_first)

    def _nan_codes(self, k: FormatKey, nan_first: int) -> None:
        """Canonical NaN codes (positive, negative) per numerics.md."""
        M = self.M
        if self.fnuz:
            self.nan_pos = self.nan_neg = self.signbit
        elif k.nan_codes > 0:
            top = self.nmag - 1
            mag = top
            if M > 0:
                # the smallest NaN code with the mantissa's top bit set (IEEE's quiet NaN)
                quiet = nan_first if (nan_first >> (M - 1)) & 1 else \
                    ((nan_first >> (M - 1)) | 1) << (M - 1)
                mag = min(quiet, top)
            self.nan_pos, self.nan_neg = mag, mag | self.signbit
        else:
            self.nan_pos = self.nan_neg = None

    # ------------------------------------------------------------------ values
    def _mag_exact(self, c: int) -> Fraction:
        M, k = self.M, self.key
        e, m = c >> M, c & ((1 << M) - 1)
        if e == 0 and k.has_zero:
            if not k.subnormals:
                return Fraction(0)
            return _times_pow2(m, 1 - k.bias - M)                   # m/2**M * 2**(1-bias)
        return _times_pow2((1 << M) + m, e - k.bias - M)             # (1 + m/2**M) * 2**(e-bias)

    def _quantum(self, v: Fraction) -> Fraction:
        """The quantum of the binade holding magnitude ``v > 0`` (unbounded above)."""
        kexp = floor_log2(v)
        if not self.key.subnormals and v < Fraction(2) ** self.emin:
            return Fraction(2) ** self.emin
        return Fraction(2) ** (max(kexp, self.emin) - self.M)

    def exact(self, code: int) -> Fraction | float:
        """The exact value of ``code``: a Fraction, or a float NaN/±inf.  A negative zero is
        returned as ``Fraction(0)``; use :meth:`decode` for the signed float."""
        code = int(code)
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"code must be in 0..{(1 << self.bits) - 1}, got {code}")
        neg = bool(code & self.signbit)
        mag = code & (self.nmag - 1)
        if self.fnuz and code == self.signbit:
            return math.nan
        if mag > self.max_mag_code:
            if mag == self.inf_mag:
                return -math.inf if neg else math.inf
            return math.nan
        v = self._mag_exact(mag) if self.analytic else self.mag_value[mag]
        return -v if neg else v

    def decode(self, code: int) -> float:
        """The value of ``code`` as a float64 (``-0.0`` for a negative zero code)."""
        v = self.exact(code)
        if isinstance(v, float):
            return v
        f = float(v)                                   # exact: every value is a float64
        if f == 0 and code & self.signbit:
            return -0.0
        return f

    def decode_all(self) -> np.ndarray:
        """``decode`` of every code, as a float64 array indexed by code."""
        return _decode_table(self.key)

    # ------------------------------------------------------------------ encoding helpers
    def _signed(self, mag_code: int, neg: bool) -> int:
        return mag_code | (self.signbit if neg else 0)

    def _nan(self, neg: bool) -> int:
        return self.nan_neg if neg else self.nan_pos

    def _zero(self, neg: bool) -> int:
        """A zero result (keeps the sign only where the format has a negative zero)."""
        return self._signed(0, neg and self.key.signed and self.key.negative_zero)

    def _max(self, neg: bool) -> int:
        return self._signed(self.max_mag_code, neg)

    def _inf_rule(self, neg: bool) -> int:
        if self.has_inf:
            return self._signed(self.inf_mag, neg)
        if self.has_nan:
            return self._nan(neg)
        return self._max(neg)

    def _overflow(self, neg: bool, mode: str, saturate: bool) -> int:
        if saturate:
            return self._max(neg)
        if mode in ("rne", "rna", "sr"):
            return self._inf_rule(neg)
        if mode in ("rtz", "rto"):
            return self._max(neg)
        if mode == "rtp":
            return self._max(True) if neg else self._inf_rule(False)
        if mode == "rtn":
            return self._inf_rule(True) if neg else self._max(False)
        raise ValueError(f"rounding must be one of {MODES}, got {mode!r}")

    def _smallest_code(self) -> int:
        return self.smallest_code

    def _neighbours(self, a: Fraction) -> tuple[Fraction, int, Fraction, int | None]:
        """``(lo, lo's code, hi, hi's code or None beyond max)``: the format's magnitudes with
        ``lo <= a < hi``, for ``smallest <= a < beyond``."""
        if not self.analytic:
            i = bisect.bisect_right(self.level_float, float(a)) - 1   # exact: a is a float
            lo, lo_code = self.levels[i], self.level_code[i]
            if i + 1 < len(self.levels):
                return lo, lo_code, self.levels[i + 1], self.level_code[i + 1]
            return lo, lo_code, self.beyond, None
        M, k = self.M, self.key
        if k.has_zero and a < Fraction(2) ** self.emin and not k.subnormals:
            return Fraction(0), 0, Fraction(2) ** self.emin, 1 << M    # flushed: 0 or 2**emin
        q = self._quantum(a)
        n = math.floor(a / q)
        lo = n * q
        # below emin (subnormals) n is the mantissa field; above it, the hidden bit is set
        lo_code = n if lo < Fraction(2) ** self.emin and k.has_zero else \
            ((floor_log2(lo) + k.bias) << M) | (n - (1 << M))
        hi_code = lo_code + 1
        return lo, lo_code, lo + q, (hi_code if hi_code <= self.max_mag_code else None)

    # ------------------------------------------------------------------ encode
    def encode(self, x: float, rounding: str = "rne", saturate: bool = False,
               u: int | None = None, sr_bits: int | None = None) -> int:
        """The code of float ``x`` rounded into the format (docs/numerics.md).

        ``u``: the 64-bit random integer of this element (required for ``rounding="sr"``);
        ``sr_bits``: b, the number of its top bits used (64 when None).
        """
        if rounding not in MODES:
            raise ValueError(f"rounding must be one of {MODES}, got {rounding!r}")
        k = self.key
        x = float(x)
        neg = math.copysign(1.0, x) < 0
        if math.isnan(x):
            if self.has_nan:
                return self._nan(neg) if k.signed else self.nan_pos
            if not k.has_zero:
                return self._smallest_code()
            if not k.signed:
                return 0
            return self._zero(not neg)                # opposite sign, as ml_dtypes does
        if not k.signed and neg:
            if x == 0:
                return self._zero_input(False)
            # a negative number: an overflow below the range of an unsigned format
            if saturate:
                return self._smallest_code()
            return self.nan_pos if self.has_nan else self._smallest_code()
        if math.isinf(x):
            if self.has_inf and not saturate:
                return self._signed(self.inf_mag, neg)
            return self._overflow(neg, rounding, saturate)
        if x == 0:
            return self._zero_input(neg)

        a = abs(Fraction(x))
        if a >= self.beyond:
            return self._overflow(neg, rounding, saturate)
        if a < self.smallest:                          # only without zero
            return self._signed(self._smallest_code(), neg)
        lo, lo_code, hi, hi_code = self._neighbours(a)
        if lo == a:
            return self._signed(lo_code, neg)
        q = hi - lo
        n = lo / q
        assert n.denominator == 1, (lo, hi)
        n = n.numerator
        r = (a - lo) / q                               # 0 < r < 1
        # "Even" and "odd" (rne, rto) read the lower neighbour's integer significand n, or
        # its code under parity="code" (P3109's CodeIsEven; they differ only where M = 0).
        parity_of = lo_code if k.parity == "code" else n
        up = _round_up(rounding, r, parity_of, neg, u, sr_bits)
        if not up:
            if lo == 0:
                return self._zero(neg)
            return self._signed(lo_code, neg)
        if hi_code is None:                            # rounded to beyond max: overflow
            return self._overflow(neg, rounding, saturate)
        return self._signed(hi_code, neg)

    def _zero_input(self, neg: bool) -> int:
        """±0 in: ±0 out; without zero, NaN, else the smallest magnitude (both keep the zero's
        sign in signed formats, like every other input below the smallest value)."""
        if not self.key.has_zero:
            if self.has_nan:
                return self._nan(neg) if self.key.signed else self.nan_pos
            return self._signed(self._smallest_code(), neg)
        return self._zero(neg)

    def encode_many(self, xs: Iterable[float], rounding: str = "rne", saturate: bool = False,
                    us: Iterable[int] | None = None, sr_bits: int | None = None) -> np.ndarray:
        """:meth:`encode` of each element (``us``: the per-element random integers for sr)."""
        xs = [float(v) for v in np.asarray(xs, dtype=np.float64).ravel()]
        if us is None:
            us = [None] * len(xs)
        else:
            us = [int(v) for v in np.asarray(us, dtype=np.uint64).ravel()]
        return np.array([self.encode(x, rounding, saturate, u, sr_bits) for x, u in zip(xs, us)],
                        dtype=np.uint64)

    # ------------------------------------------------------------------ interesting inputs
    def finite_values(self) -> list[Fraction]:
        """Every distinct finite value, sorted (negatives for signed formats)."""
        if self.key.signed:
            neg = [-v for v in reversed(self.levels) if v != 0]
            return neg + list(self.levels)
        return list(self.levels)


def _times_pow2(n: int, k: int) -> Fraction:
    """The integer ``n`` times ``2**k``, exactly."""
    if k >= 0:
        return Fraction(n << k)
    return Fraction(n, 1 << -k)


def floor_log2(v: Fraction) -> int:
    """floor(log2(v)) for a positive Fraction, exactly."""
    kexp = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** kexp > v:
        kexp -= 1
    elif Fraction(2) ** (kexp + 1) <= v:
        kexp += 1
    return kexp


def _round_up(mode: str, r: Fraction, n: int, neg: bool, u: int | None,
              sr_bits: int | None) -> bool:
    """Whether the magnitude rounds up (numerics.md's table), for 0 < r < 1."""
    if mode == "rne":
        return r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2 == 1)
    if mode == "rna":
        return r >= Fraction(1, 2)
    if mode == "rtz":
        return False
    if mode == "rtp":
        return not neg
    if mode == "rtn":
        return neg
    if mode == "rto":
        return n % 2 == 0
    if mode == "sr":
        if u is None:
            raise ValueError("sr needs the element's random integer u")
        b = 64 if sr_bits is None else int(sr_bits)
        threshold = math.floor(r * (1 << b))
        return (int(u) >> (64 - b)) < threshold
    raise ValueError(f"rounding must be one of {MODES}, got {mode!r}")


@lru_cache(maxsize=256)
def _reference(key: FormatKey) -> Reference:
    return Reference(key)


def reference(fmt) -> Reference:
    """The cached :class:`Reference` of ``fmt`` (any object with the format attributes)."""
    return _reference(format_key(fmt))


@lru_cache(maxsize=256)
def _decode_table(key: FormatKey) -> np.ndarray:
    ref = _reference(key)
    table = np.array([ref.decode(c) for c in range(1 << ref.bits)], dtype=np.float64)
    table.setflags(write=False)
    return table


def same_float(a, b) -> np.ndarray:
    """Elementwise: equal as floats with the same sign bit, or both NaN (any payload/sign)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | ((a == b) & (np.signbit(a) == np.signbit(b)))


# ------------------------------------------------------------------ stochastic rounding, given bits
def encode_given_bits(fmt, x: float, r: int, k: int, saturate: bool = False) -> int:
    """The code of ``x`` under stochastic rounding with the caller's ``k`` random bits ``r``,
    written from docs/numerics.md ("Stochastic rounding with given bits"): between the
    neighbouring magnitudes ``lo <= |x| < hi``, ``t = floor((|x| - lo) / (hi - lo) * 2**k)``
    (the ``k`` bits below the last kept place) and the magnitude rounds up iff
    ``t + r >= 2**k``.  Everything else (NaN, inf, zero, exact values, overflow past max,
    inputs below an E8M0-like format's range) is the ``"sr"`` mode's result, which does not
    depend on the random bits."""
    if not 1 <= k <= 64 or not 0 <= r < (1 << k):
        raise ValueError(f"need 1 <= k <= 64 and 0 <= r < 2**k, got k={k}, r={r}")
    ref = reference(fmt)
    x = float(x)
    neg = math.copysign(1.0, x) < 0
    if not math.isfinite(x) or x == 0 or (neg and not ref.key.signed):
        return ref.encode(x, "sr", saturate, u=0, sr_bits=k)
    a = abs(Fraction(x))
    if a >= ref.beyond or a < ref.smallest:
        return ref.encode(x, "sr", saturate, u=0, sr_bits=k)
    lo, _, hi, _ = ref._neighbours(a)
    if lo == a:
        return ref.encode(x, "rtz", saturate)
    t = math.floor((a - lo) / (hi - lo) * (1 << k))
    if t + r >= 1 << k:                               # away from zero: hi, or overflow past max
        return ref.encode(x, "rtn" if neg else "rtp", saturate)
    return ref.encode(x, "rtz", saturate)


# ------------------------------------------------------------------ two's-complement integers
def int_encode(bits: int, frac_bits: int, symmetric: bool, x: float, rounding: str = "rne",
               u: int | None = None, sr_bits: int | None = None, r: int | None = None) -> int:
    """The two's-complement code of ``x`` in the integer format ``k * 2**-frac_bits``
    (``fpformat.intformat``'s docstring): exact rationals, the rounding of
    :func:`_round_up` on the magnitude (``sr`` with the 64-bit ``u`` of the seeded stream, or
    with given bits ``r`` of width ``sr_bits`` by the carry rule), clamping to the range, NaN to
    0."""
    kmax = (1 << (bits - 1)) - 1
    kmin = -kmax if symmetric else -(1 << (bits - 1))
    x = float(x)
    if math.isnan(x):
        return 0
    if math.isinf(x):
        return (kmax if x > 0 else kmin) % (1 << bits)
    y = Fraction(x) * Fraction(2) ** frac_bits
    neg = y < 0
    a = abs(y)
    n = math.floor(a)
    rem = a - n
    if rem == 0:
        up = False
    elif rounding == "sr" and r is not None:
        up = math.floor(rem * (1 << sr_bits)) + r >= 1 << sr_bits
    else:
        up = _round_up(rounding, rem, n, neg, u, sr_bits)
    mag = n + int(up)
    k = -mag if neg else mag
    return min(max(k, kmin), kmax) % (1 << bits)
