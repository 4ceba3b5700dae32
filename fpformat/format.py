"""`FloatFormat`: the description of one ExMy floating-point element format.

A format is pure data (a frozen dataclass); encoding, decoding and quantizing delegate to the
compiled kernels in :mod:`fpformat.kernels`.  Semantics are pinned in docs/numerics.md.
:func:`element_format` builds one from a preset name or spec string (:mod:`fpformat.names`).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from . import core, kernels
from .arrays import FLOAT_LAYOUTS, float_kind
from .names import (
    ELEMENT_PRESET_FIELDS,
    canonical_name,
    default_bias,
    element_spec_fields,
    p3109_fields,
    p3109_name,
    write_element_spec,
)

MAX_EXP_BITS = 11
MAX_MAN_BITS = 52


def hash_once(cls):
    """Class decorator for a frozen dataclass: its field hash computed once per instance.

    Formats key the kernels' caches, several lookups per quantize call, and the generated hash
    walks every field (the nested element and scale formats too): 1-2 us a lookup.  The value
    is kept in the instance's ``__dict__`` (as ``cached_property`` keeps its values) and left
    out of pickles and copies, since string hashes differ from process to process."""
    field_hash = cls.__hash__

    def __hash__(self) -> int:
        try:
            return self.__dict__["_field_hash"]
        except KeyError:
            h = self.__dict__["_field_hash"] = field_hash(self)
            return h

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_field_hash", None)
        return state

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


class CodeClass(enum.IntEnum):
    """What a code encodes, as :meth:`FloatFormat.classify` reports it (a uint8 per code).

    ``ZERO`` includes -0 and, in formats that flush subnormals, the codes with exponent field 0
    and a nonzero mantissa (they decode as zero); ``SUBNORMAL`` is exponent field 0 with a
    nonzero mantissa where the format keeps subnormals (every nonzero code of an ``E = 0``
    format); ``NORMAL`` every other finite code (all of an E8M0-like format's finite codes);
    ``INFINITE`` ±inf; ``NAN`` every NaN code (the fnuz sign-bit-only code included).  The sign
    is not part of the class: it is the code's top bit in signed formats."""

    ZERO = 0
    SUBNORMAL = 1
    NORMAL = 2
    INFINITE = 3
    NAN = 4


@hash_once
@dataclass(frozen=True)
class FloatFormat:
    """An ExMy floating-point format.

    Args:
        exp_bits: E, exponent field width, 0..11.
        man_bits: M, mantissa (trailing significand) field width, 0..52.
        bias: exponent bias; default ``2**(E-1) - 1`` (``1`` for ``E == 0``).
        signed: sign-magnitude with one extra (top) sign bit.
        subnormals: exponent field 0 holds subnormals; ``False`` flushes them (decode as zero,
            never produced; rounding on ``{0} ∪ normals``).
        nan_codes: how many of the top magnitude codes are NaN.
        inf: the magnitude code just below the NaN codes is infinity.
        negative_zero: ``False`` (signed only) makes the sign-bit-only code NaN (fnuz layouts).
        parity: which parity "even" (``rne`` ties) and "odd" (``rto``) read: ``"significand"``
            (IEEE 754; ml_dtypes) or ``"code"``, the lower neighbour's code (IEEE P3109's
            CodeIsEven).  They differ only where ``man_bits == 0`` (every normal significand
            is 1, so ``"significand"`` sends every tie up); for ``man_bits >= 1`` the field is
            stored as ``"significand"``.  docs/numerics.md, "Ties".
        has_zero: ``False`` (E8M0-like): exponent field 0 is an ordinary normal binade and the
            format has no zero; requires ``subnormals=False``.
        name: display name (a preset name or spec string); not part of equality.

    Every finite value must be a float64 (``ValueError`` otherwise, naming the limit): the
    smallest quantum at least ``2**-1074`` and the smallest normal at least ``2**-1023`` (a
    lowest binade among float64's subnormals, as in ``binary11p1uf``, needs subnormals and a
    zero), the largest binade at most ``2**1023``.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    signed: bool = True
    subnormals: bool = True
    nan_codes: int = 0
    inf: bool = False
    negative_zero: bool = True
    has_zero: bool = True
    parity: str = "significand"
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for pname in ("exp_bits", "man_bits", "nan_codes"):
            v = getattr(self, pname)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{pname} must be an int, got {type(v).__name__}")
        for pname in ("signed", "subnormals", "inf", "negative_zero", "has_zero"):
            v = getattr(self, pname)
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{pname} must be a bool, got {type(v).__name__}")
        E, M = int(self.exp_bits), int(self.man_bits)
        if not 0 <= E <= MAX_EXP_BITS:
            raise ValueError(f"exp_bits must be in 0..{MAX_EXP_BITS}, got {E}")
        if not 0 <= M <= MAX_MAN_BITS:
            raise ValueError(f"man_bits must be in 0..{MAX_MAN_BITS}, got {M}")
        if E + M == 0:
            raise ValueError("exp_bits + man_bits must be at least 1 "
                             "(a format needs a magnitude bit)")
        object.__setattr__(self, "exp_bits", E)
        object.__setattr__(self, "man_bits", M)
        if self.bias is None:
            object.__setattr__(self, "bias", default_bias(E))
        elif isinstance(self.bias, bool) or not isinstance(self.bias, (int, np.integer)):
            raise TypeError(f"bias must be an int, got {type(self.bias).__name__}")
        else:
            object.__setattr__(self, "bias", int(self.bias))
        ncodes = 1 << (E + M)
        if not 0 <= self.nan_codes < ncodes - int(self.inf):
            raise ValueError(
                f"nan_codes must be in 0..{ncodes - 1 - int(self.inf)} for {ncodes} magnitude codes"
                f"{' and an infinity' if self.inf else ''}, got {self.nan_codes}")
        if not self.negative_zero and not self.signed:
            raise ValueError("negative_zero=False needs signed=True "
                             "(it turns the -0 code into NaN)")
        if not self.has_zero:
            if self.subnormals:
                raise ValueError("has_zero=False needs subnormals=False "
                                 "(exponent field 0 is normal)")
            if E == 0:
                raise ValueError("has_zero=False needs exp_bits >= 1")
        smallest_nonzero = (1 if self.subnormals else 1 << M) if self.has_zero else 0
        if self._maxmag < smallest_nonzero:
            raise ValueError("nan_codes and inf leave this format no finite nonzero value")
        # Every value must be a float64: the kernels decode through float64.  Below 2**-1022
        # the core rounds float64 subnormals with one quantum, which holds for one binade of
        # the format and only where it has subnormals and a zero (core.round_parts).
        if self.emin - M < -1074:
            raise ValueError(f"bias={self.bias} puts the smallest quantum at 2**{self.emin - M}, "
                             f"below float64's smallest subnormal 2**-1074")
        lowest = -1023 if self.subnormals and self.has_zero else -1022
        if self.emin < lowest:
            raise ValueError(f"bias={self.bias} puts the smallest normal at 2**{self.emin}; "
                             f"the limit is 2**{lowest}"
                             + ("" if lowest == -1023 else " without subnormals or a zero"))
        if self.emax > 1023:
            raise ValueError(f"bias={self.bias} puts the largest binade at 2**{self.emax}, "
                             f"beyond float64's 2**1023")
        if self.parity not in ("significand", "code"):
            raise ValueError(f"parity must be 'significand' or 'code', got {self.parity!r}")
        if M > 0:                       # both parities coincide: one spelling keeps == exact
            object.__setattr__(self, "parity", "significand")

    # ----------------------------------------------------------------------------- structure
    @property
    def bits(self) -> int:
        """Total code width: E + M + signed."""
        return self.exp_bits + self.man_bits + int(self.signed)

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade (``1 - bias``; ``-bias`` without zero)."""
        return (1 if self.has_zero else 0) - self.bias

    @property
    def _maxmag(self) -> int:
        return (1 << (self.exp_bits + self.man_bits)) - 1 - self.nan_codes - int(self.inf)

    @property
    def emax(self) -> int:
        """Exponent of the binade holding the largest finite value."""
        e = self._maxmag >> self.man_bits
        if e == 0 and self.has_zero:
            return self.emin
        return e - self.bias

    @property
    def has_nan(self) -> bool:
        return self.nan_codes > 0 or (self.signed and not self.negative_zero)

    @property
    def has_inf(self) -> bool:
        return self.inf

    @property
    def dtype(self) -> np.dtype:
        """The narrowest unsigned integer dtype holding a code."""
        for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
            if self.bits <= 8 * np.dtype(dt).itemsize:
                return np.dtype(dt)
        raise AssertionError("unreachable: bits <= 64")

    # ----------------------------------------------------------------------------- values
    def code_value(self, code: int) -> Fraction | float:
        """The exact value of one code: a Fraction, or ``float('nan')``/``±inf``."""
        return _exact(self, int(code))

    @cached_property
    def _stats(self) -> dict[str, float]:
        maxv = float(_exact(self, self._maxmag))
        if self.has_zero:
            min_normal = 2.0 ** self.emin
            if self.subnormals and self.man_bits > 0:
                min_sub = 2.0 ** (self.emin - self.man_bits)
            else:
                min_sub = min_normal
        else:
            min_normal = min_sub = 2.0 ** self.emin
        return {"max": maxv, "min_normal": min_normal, "min_subnormal": min_sub}

    @property
    def max(self) -> float:
        """Largest finite value."""
        return self._stats["max"]

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2**emin``."""
        return self._stats["min_normal"]

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (equal to ``min_normal`` without subnormals)."""
        return self._stats["min_subnormal"]

    @property
    def epsilon(self) -> float:
        """Distance from 1 to the next larger value, ``2**-M`` (relative precision)."""
        return 2.0 ** -self.man_bits

    @cached_property
    def epsneg(self) -> float:
        """Distance from 1 to the next smaller value, ``1 - max{v < 1}`` (numpy's and
        ml_dtypes' ``finfo.epsneg``): ``2**-(M+1)`` where 1 and its lower neighbour share a
        normal binade, larger where 1 is the smallest normal (``float4_e2m1fn``: 0.5).  NaN
        when 1 is not a value of the format or no value lies below it."""
        code = int(self.encode(np.array([1.0]), rounding="rtz")[0])
        if code == 0 or self.code_value(code) != 1:
            return float("nan")
        return float(1 - self.code_value(code - 1))

    @property
    def max_code(self) -> int:
        """The code of ``+max`` (the largest finite magnitude code; ``max_code | sign bit`` is
        ``-max`` in signed formats)."""
        return self._maxmag

    @property
    def nan_code(self) -> int | None:
        """The canonical NaN code: what :meth:`encode` gives for a NaN input with the sign bit
        clear (``np.nan``); None where the format has no NaN.  IEEE-style formats give the quiet
        NaN (mantissa MSB set) and keep a NaN input's sign (``nan_code | sign bit`` for a
        negative NaN); fnuz/P3109 formats have the one NaN ``0x80..``."""
        c = self.params[core.F_NANPOS]
        return None if c < 0 else int(c)

    def classify(self, codes) -> np.ndarray:
        """The :class:`CodeClass` of each code (``codes``: unsigned or non-negative integers below
        ``2**bits``), as a uint8 array shaped like ``codes``."""
        c = np.asarray(codes)
        if c.dtype.kind not in "ui":
            raise TypeError(f"codes must be an integer array, got dtype {c.dtype}")
        if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << self.bits)):
            raise ValueError(f"codes must be in 0..{(1 << self.bits) - 1} for the {self.bits}-bit "
                             f"format {self}")
        c = c.astype(np.uint64)
        M = self.man_bits
        signbit = np.uint64(1 << (self.exp_bits + M)) if self.signed else np.uint64(0)
        mag = c & ~signbit if self.signed else c
        e = mag >> np.uint64(M)
        m = mag & np.uint64((1 << M) - 1)
        out = np.full(c.shape, CodeClass.NORMAL, dtype=np.uint8)
        if self.has_zero:
            field0 = e == 0
            out[field0 & (m == 0)] = CodeClass.ZERO
            out[field0 & (m != 0)] = CodeClass.SUBNORMAL if self.subnormals else CodeClass.ZERO
        special = mag > np.uint64(self._maxmag)
        out[special] = CodeClass.NAN
        if self.inf:
            out[mag == np.uint64(self._maxmag + 1)] = CodeClass.INFINITE
        if self.signed and not self.negative_zero and self.has_zero:
            out[c == signbit] = CodeClass.NAN
        return out

    @property
    def dynamic_range(self) -> float:
        """``log2(max / smallest positive value)``, in binades (octaves)."""
        return float(np.log2(self.max) - np.log2(self.min_subnormal))

    @property
    def num_finite(self) -> int:
        """Number of distinct finite values (+0 and -0 count once)."""
        per_sign = self._maxmag + 1
        if self.has_zero and not self.subnormals:
            per_sign -= (1 << self.man_bits) - 1        # flushed codes decode as zero
        if not self.signed:
            return per_sign
        return 2 * per_sign - (1 if self.has_zero else 0)

    def values(self) -> np.ndarray:
        """All distinct finite values, sorted, as float64 (for formats of at most 24 bits)."""
        if self.exp_bits + self.man_bits > 24:
            raise ValueError(f"values() enumerates at most 2**24 magnitude codes; this format has "
                             f"2**{self.exp_bits + self.man_bits}")
        mags = np.arange(self._maxmag + 1, dtype=np.uint64)
        pos = self.decode(mags.astype(self.dtype))
        vals = np.concatenate([pos, -pos]) if self.signed else pos
        return np.unique(vals)

    # ----------------------------------------------------------------------------- naming
    @property
    def spec(self) -> str:
        """A spec string that `get_format` parses back to an equal format: the element spec, or
        a preset name where the grammar cannot express the format (E8M0, ``p3109_k8p3``), or
        the P3109 name (``binary11p1se``), else the ``repr``."""
        spec = write_element_spec(self)
        if spec is not None:
            return spec
        for name in ELEMENT_PRESET_FIELDS:
            if element_format(name) == self:
                return name
        return p3109_name(self) or repr(self)

    def __str__(self) -> str:
        return self.name or self.spec

    def describe(self) -> dict[str, Any]:
        """Properties as a JSON-ready dict (what `fpx info` prints)."""
        return {
            "name": str(self), "spec": self.spec, "bits": self.bits,
            "exp_bits": self.exp_bits, "man_bits": self.man_bits, "bias": self.bias,
            "signed": self.signed, "subnormals": self.subnormals, "nan_codes": self.nan_codes,
            "inf": self.inf, "negative_zero": self.negative_zero, "has_zero": self.has_zero,
            "max": self.max, "min_normal": self.min_normal, "min_subnormal": self.min_subnormal,
            "epsilon": self.epsilon, "dynamic_range_binades": self.dynamic_range,
            "num_finite": self.num_finite, "emin": self.emin, "emax": self.emax,
            "has_nan": self.has_nan, "parity": self.parity,
            "epsneg": self.epsneg, "max_code": self.max_code, "nan_code": self.nan_code,
        }

    # ----------------------------------------------------------------------------- kernels
    def encode(self, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
               sr_bits: int | None = None, random_bits=None) -> np.ndarray:
        """Round ``x`` (float16/bfloat16/float32/float64, any shape) once into this format.

        Returns unsigned codes of dtype :attr:`dtype`, shaped like ``x``.  ``rounding`` is one of
        ``rne rna rtz rtp rtn rto sr``; ``saturate`` clamps overflow to ±max (otherwise IEEE 754
        §7.4 rules, docs/numerics.md); ``seed``/``sr_bits`` drive stochastic rounding.

        ``random_bits`` (``rounding="sr"`` only, CPU only, instead of ``seed``): an integer
        array shaped like ``x``, the ``k`` random bits a hardware generator gives each element
        (``k = sr_bits``, or the width of ``random_bits``' unsigned dtype when ``sr_bits`` is
        None).  The rule: ``t`` is the ``k`` bits just below the last place the format keeps
        (the discarded bits truncated to ``k``, zero-padded where fewer are discarded); the
        magnitude rounds up iff ``t + r >= 2**k``, the carry out of their ``k``-bit sum
        (docs/numerics.md, "Stochastic rounding with given bits").  ``ValueError`` for a
        value outside ``0 .. 2**k - 1``, another shape or dtype, or a CUDA array.
        """
        return kernels.encode(self, x, rounding, saturate, seed, sr_bits, random_bits)

    def decode(self, codes, dtype=np.float64) -> np.ndarray:
        """Values of ``codes`` (any unsigned or non-negative integer array) as ``dtype``."""
        return kernels.decode(self, codes, dtype)

    def quantize(self, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
                 sr_bits: int | None = None, out=None, random_bits=None):
        """``decode(encode(x))`` in one pass, with ``x``'s dtype and shape.

        ``out``: optional preallocated float32/float64 numpy array (x's dtype and shape) to write
        into, as with numpy's ``out=``, or for a CUDA ``x`` a CUDA array of x's dtype and shape
        (``out=x``: in place); it is returned.  ``random_bits``: stochastic rounding
        with the caller's bits, as in :meth:`encode` (not together with ``out``)."""
        return kernels.quantize(self, x, rounding, saturate, seed, sr_bits, out, random_bits)

    # ----------------------------------------------------------------------------- kernel params
    @cached_property
    def params(self) -> tuple[int, ...]:
        """The format tuple the scalar core reads (indices ``core.F_*``)."""
        M = self.man_bits
        signbit = (1 << (self.exp_bits + M)) if self.signed else 0
        if self.signed and not self.negative_zero:
            nanpos = nanneg = signbit
        elif self.nan_codes > 0:
            # The IEEE quiet NaN: the smallest NaN code with the mantissa MSB set, else the top.
            first, top = self._maxmag + 1 + int(self.inf), (1 << (self.exp_bits + M)) - 1
            nanmag = top
            if M > 0:
                quiet = first if (first >> (M - 1)) & 1 else \
                    (first & ~((1 << M) - 1)) | (1 << (M - 1))
                nanmag = quiet if quiet <= top else top
            nanpos, nanneg = nanmag, nanmag | signbit
        else:
            nanpos = nanneg = -1
        t = [0] * core.F_LEN
        t[core.F_E] = self.exp_bits
        t[core.F_M] = M
        t[core.F_BIAS] = self.bias
        t[core.F_EMIN] = self.emin
        t[core.F_EMAXFIELD] = (1 << self.exp_bits) - 1
        t[core.F_MAXMAG] = self._maxmag
        t[core.F_INFMAG] = self._maxmag + 1 if self.inf else -1
        t[core.F_SIGNBIT] = signbit
        t[core.F_SUBNORMALS] = int(self.subnormals)
        t[core.F_HASZERO] = int(self.has_zero)
        t[core.F_NEGZERO] = int(self.negative_zero)
        t[core.F_NANPOS] = nanpos
        t[core.F_NANNEG] = nanneg
        t[core.F_PARITY] = int(self.parity == "code")
        return core.as_int64_tuple(t)

    def fits(self, dtype) -> bool:
        """Whether every finite value of this format is exactly a value of float ``dtype``
        (float16, bfloat16, float32 or float64)."""
        dm, dqmin, demax = FLOAT_LAYOUTS[float_kind(dtype)]
        return self.man_bits <= dm and self.emin - self.man_bits >= dqmin and self.emax <= demax


@functools.lru_cache(maxsize=None)
def element_format(name: str) -> FloatFormat:
    """An element format by preset name, alias or element spec, case-insensitive (see
    :mod:`fpformat.names`); ``ValueError`` naming the grammar for anything else."""
    key = canonical_name(name)
    if key in ELEMENT_PRESET_FIELDS:
        return FloatFormat(**ELEMENT_PRESET_FIELDS[key], name=key)
    p3109 = p3109_fields(key)
    if p3109 is not None:
        if p3109["exp_bits"] > MAX_EXP_BITS:
            raise ValueError(f"format {name!r}: needs {p3109['exp_bits']} exponent bits (bias "
                             f"2**{p3109['exp_bits'] - 1}); its values leave float64's range "
                             f"(exp_bits <= {MAX_EXP_BITS}: K - P <= {MAX_EXP_BITS} signed, "
                             f"K - P + 1 <= {MAX_EXP_BITS} unsigned)")
        try:
            return FloatFormat(**p3109)
        except ValueError as err:
            raise ValueError(f"format {name!r}: {err}") from None
    return parse_element_spec(key)


def parse_element_spec(spec: str) -> FloatFormat:
    """The format of an element spec ``[u]e<E>m<M>[b<BIAS>][fn|fnuz|ieee][_ftz]``."""
    return FloatFormat(**element_spec_fields(spec))


def _exact(fmt: FloatFormat, code: int) -> Fraction | float:
    """Exact value of a code (plain Python; used by `fpx info` and for documentation)."""
    M = fmt.man_bits
    signbit = 1 << (fmt.exp_bits + M) if fmt.signed else 0
    if not 0 <= code < (1 << fmt.bits):
        raise ValueError(f"code must be in 0..{(1 << fmt.bits) - 1}, got {code}")
    neg = bool(code & signbit) if signbit else False
    mag = code & (signbit - 1) if signbit else code
    if neg and mag == 0 and not fmt.negative_zero and fmt.has_zero:
        return float("nan")
    if mag > fmt._maxmag:
        if fmt.inf and mag == fmt._maxmag + 1:
            return float("-inf") if neg else float("inf")
        return float("nan")
    e, m = mag >> M, mag & ((1 << M) - 1)
    if e == 0 and fmt.has_zero:
        v = Fraction(m, 1 << M) * Fraction(2) ** (1 - fmt.bias) if fmt.subnormals else Fraction(0)
    else:
        v = (1 + Fraction(m, 1 << M)) * Fraction(2) ** (e - fmt.bias)
    return -v if neg else v
