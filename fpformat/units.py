"""`MatrixUnit`: the numerical features of a block fused-multiply-add unit (a tensor core).

    from fpformat.units import MatrixUnit, get_unit
    get_unit("h100", "float8_e4m3fn", "float32")    # a preset, per input and output format
    MatrixUnit(fma=16, extra_bits=3, rounding="rne")  # a proposed unit, usable like a preset

The model is the block FMA of :mod:`fpformat.unit_core` (docs/gemm.md, "Matrix units"): exact
products, all terms aligned to the block's largest exponent and truncated below a window of
``23 + extra_bits`` fraction bits (one more under the carry-bit rule), an exact integer sum,
one final rounding.  A GEMM built from the instruction feeds each block's result to the next
block as its addend (:func:`fpformat.gemm.mma`).

Presets follow the parameters of the published models of Khattak and Mikaitis ("Accurate
Models of NVIDIA Tensor Cores", arXiv 2512.07004; repository
north-numerical-computing/MATLAB-tensor-core, ``models/*TC.m``, BSD-2); the tests reproduce
the measured V100, A100 and H100 outputs in ``shared/data/matrix-units`` bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import core, unit_core
from .format import FloatFormat, element_format
from .rounding import MODES, call_tuple, value_tuple

#: Input and output formats presets are defined for (any spelling get_format accepts).
IN_FORMATS = ("float16", "bfloat16", "tf32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
              "float8_e5m2fnuz")
OUT_FORMATS = ("float32", "float16")
#: How a block is summed: NVIDIA's aligned window, an exact sum (AMD CDNA1), a float32 tree
#: (AMD CDNA2), a late partial sum, whole or in odd/even groups (AMD CDNA3).
SUMMATIONS = ("aligned", "exact", "pairwise", "late", "odd-even")
#: Widest input significand the exact-product path holds (two of them in 23 fraction bits).
MAX_INPUT_MAN_BITS = 11
ROUNDINGS = tuple(m for m in MODES if m != "sr")


@dataclass(frozen=True)
class MatrixUnit:
    """A block FMA unit (see the module docstring and :mod:`fpformat.unit_core`)."""

    #: Products added in one block (the instruction's fused group); K is cut into such blocks.
    fma: int
    #: How the block is summed: ``"aligned"`` (the window below; NVIDIA), ``"exact"`` (the exact
    #: sum of the products and ``c``, rounded once; AMD CDNA1) or ``"pairwise"`` (products in
    #: float32, a binary tree of float32 additions rounded to nearest even with subnormal results
    #: flushed, ``c`` added last; AMD CDNA2, float32 outputs only), ``"late"`` (the products'
    #: aligned sum, then ``c``, the smaller aligned to the other rounding toward -inf; AMD CDNA3)
    #: or ``"odd-even"`` (the same after summing even- and odd-indexed products apart; CDNA3 FP8).
    summation: str = "aligned"
    #: Fraction bits of the alignment window beyond float32's 23 (negative narrows it).
    extra_bits: int = 0
    #: Products stay unnormalised (significand in [1, 4)) and the window hangs below the largest
    #: raw exponent, so a top product >= 2 brings one more bit in, as NVIDIA's units behave;
    #: False normalises products first.
    carry_bit: bool = True
    #: Keep a sticky bit (the OR of the truncated bits) below the window.
    sticky: bool = False
    #: Rounding of each block's sum into the result: rne rna rtz rtp rtn rto.
    rounding: str = "rtz"
    #: Fraction bits of the result (None: the output format's); H100's FP8 path keeps 13.
    result_bits: int | None = None
    #: Lowest exponent the alignment window is anchored at (None: no bound): tiny blocks are
    #: truncated as if their largest term were ``2**min_exponent``.
    min_exponent: int | None = None
    #: Carry bits of the block adder beyond its sign bit and the 2 integer bits one product
    #: needs (None: unbounded, as the published models have it); a sum that needs more wraps
    #: around in two's complement, as a too-narrow hardware adder does.
    carry_bits: int | None = None
    #: Subnormal inputs used as they are (False: read as zero).
    subnormal_inputs: bool = True
    #: Subnormal results kept (False: flushed to zero, sign kept).
    subnormal_outputs: bool = True
    #: Display name (a preset name or the spec); not part of equality.
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for pname in ("fma", "extra_bits"):
            v = getattr(self, pname)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{pname} must be an int, got {type(v).__name__}")
        if not 1 <= self.fma <= 1 << 16:
            raise ValueError(f"fma must be in 1..65536 (products per block), got {self.fma}")
        if not -23 <= self.extra_bits <= 20:      # the block's integer sum stays in 63 bits
            raise ValueError(f"extra_bits must be in -23..20 (window 0..43 fraction bits), "
                             f"got {self.extra_bits}")
        if self.summation not in SUMMATIONS:
            raise ValueError(f"summation must be one of {', '.join(SUMMATIONS)}, "
                             f"got {self.summation!r}")
        if self.summation in ("late", "odd-even"):
            if self.sticky or self.result_bits is not None or self.min_exponent is not None \
                    or self.rounding != "rne" or not 0 <= self.extra_bits <= 8:
                raise ValueError(f"summation={self.summation!r} (AMD CDNA3) takes extra_bits "
                                 f"in 0..8 and rounding 'rne', without sticky, result_bits or "
                                 f"min_exponent")
        elif self.summation != "aligned":
            window = {"extra_bits": self.extra_bits != 0, "sticky": self.sticky,
                      "result_bits": self.result_bits is not None,
                      "min_exponent": self.min_exponent is not None}
            if any(window.values()):
                raise ValueError(f"{', '.join(k for k, v in window.items() if v)} describe the "
                                 f"aligned window and have no effect with summation="
                                 f"{self.summation!r}; leave them at their defaults")
        if self.summation == "pairwise" and (self.rounding != "rne"
                                             or self.fma & (self.fma - 1)):
            raise ValueError(f"summation='pairwise' adds in float32 with rounding 'rne' over a "
                             f"power-of-two fma; got rounding={self.rounding!r}, fma={self.fma}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, "
                             f"got {self.rounding!r}")
        for pname, lo, hi in (("result_bits", 1, 23), ("min_exponent", -1100, 128),
                              ("carry_bits", 0, 16)):
            v = getattr(self, pname)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                  or not lo <= v <= hi):
                raise ValueError(f"{pname} must be None or an int in {lo}..{hi}, got {v!r}")
        if self.carry_bits is not None and self.summation != "aligned":
            raise ValueError(f"carry_bits bounds the aligned window's adder; it has no "
                             f"effect with summation={self.summation!r}")
        for pname in ("carry_bit", "sticky", "subnormal_inputs", "subnormal_outputs"):
            if not isinstance(getattr(self, pname), bool):
                raise TypeError(f"{pname} must be a bool, got {getattr(self, pname)!r}")

    # ----------------------------------------------------------------------------- naming
    @property
    def spec(self) -> str:
        """``fma<N>/(x<extra>|exact|pairwise|late<extra>|odd-even<extra>)/<rounding>[/p<bits>]
        [/min<exp>][/c<carry bits>][/sticky][/nocarry][/ftzin][/ftzout]``, which
        :func:`get_unit` parses back."""
        window = (f"x{self.extra_bits}" if self.summation == "aligned" else
                  f"{self.summation}{self.extra_bits}" if self.summation in ("late", "odd-even")
                  else self.summation)
        parts = [f"fma{self.fma}", window, self.rounding]
        if self.result_bits is not None:
            parts.append(f"p{self.result_bits}")
        if self.min_exponent is not None:
            parts.append(f"min{self.min_exponent}")
        if self.carry_bits is not None:
            parts.append(f"c{self.carry_bits}")
        carry = self.carry_bit or self.summation != "aligned"
        parts += [flag for flag, on in (("sticky", self.sticky), ("nocarry", not carry),
                                        ("ftzin", not self.subnormal_inputs),
                                        ("ftzout", not self.subnormal_outputs)) if on]
        return "/".join(parts)

    def __str__(self) -> str:
        return self.name or self.spec

    def describe(self) -> dict[str, Any]:
        """Properties as a JSON-ready dict."""
        return {"name": str(self), "spec": self.spec, "fma": self.fma,
                "summation": self.summation,
                "extra_bits": self.extra_bits, "window_fraction_bits": 23 + self.extra_bits,
                "carry_bit": self.carry_bit, "sticky": self.sticky, "rounding": self.rounding,
                "result_bits": self.result_bits, "min_exponent": self.min_exponent,
                "carry_bits": self.carry_bits,
                "subnormal_inputs": self.subnormal_inputs,
                "subnormal_outputs": self.subnormal_outputs}

    # ----------------------------------------------------------------------------- kernel params
    def tuples(self, in_format: FloatFormat, out_format: FloatFormat):
        """``(U, F, C, V)`` for :func:`fpformat.unit_core.block_fma`: the unit tuple and the
        result format's format, call and value tuples."""
        if in_format.man_bits > MAX_INPUT_MAN_BITS:
            raise ValueError(f"in_format must have at most {MAX_INPUT_MAN_BITS} mantissa bits "
                             f"(products are held exactly in 23 fraction bits), got {in_format}")
        if out_format.exp_bits > 8 or out_format.man_bits > 23 or not out_format.signed:
            raise ValueError(f"out_format must be a signed format within float32 (the unit "
                             f"accumulates float32 significands), got {out_format}")
        if self.summation in ("pairwise", "late", "odd-even") and \
                out_format != element_format("float32"):
            raise ValueError(f"summation={self.summation!r} units add in float32: out_format "
                             f"must be float32, got {out_format}")
        bits = out_format.man_bits if self.result_bits is None else \
            min(self.result_bits, out_format.man_bits)
        result = FloatFormat(out_format.exp_bits, bits, bias=out_format.bias,
                             nan_codes=(1 << bits) - 1, inf=True)
        C = call_tuple(result, self.rounding, False, None)
        V = value_tuple(result, C, core.SRC_FLOAT64)
        t = [0] * unit_core.U_LEN
        t[unit_core.U_FMA] = self.fma
        t[unit_core.U_EXTRA] = self.extra_bits
        t[unit_core.U_CARRY] = int(self.carry_bit)
        t[unit_core.U_STICKY] = int(self.sticky)
        t[unit_core.U_IN_M] = in_format.man_bits
        t[unit_core.U_OUT_EMAX] = out_format.emax
        t[unit_core.U_OUT_EMIN] = out_format.emin
        t[unit_core.U_OUT_SUB] = int(self.subnormal_outputs)
        t[unit_core.U_MIN_EXP] = -(1 << 30) if self.min_exponent is None else self.min_exponent
        t[unit_core.U_SUM] = SUMMATIONS.index(self.summation)
        t[unit_core.U_CARRY_BITS] = -1 if self.carry_bits is None else self.carry_bits
        return core.as_int64_tuple(t), result.params, C, V


# --------------------------------------------------------------------------------- presets
def _nvidia(fma: int, extra_bits: int, rounding: str, min_exponent: int | None,
            result_bits: int | None = None) -> dict[str, Any]:
    return dict(fma=fma, extra_bits=extra_bits, rounding=rounding, min_exponent=min_exponent,
                result_bits=result_bits)


def _family(fma16: int, extra: int, fp32_min: int, fp16_min: int, tf32_fma: int,
            fp8: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """One GPU's presets: fp16/bf16 in blocks of ``fma16``, tf32 in blocks of ``tf32_fma``;
    float32 outputs truncate, float16 outputs of fp16 inputs round to nearest even (bf16
    inputs to float16 truncate, as the models have it); FP8 to float32 as ``fp8`` says."""
    rows = {(i, "float32"): _nvidia(fma16, extra, "rtz", fp32_min)
            for i in ("float16", "bfloat16")}
    rows[("tf32", "float32")] = _nvidia(tf32_fma, extra, "rtz", fp32_min)
    rows[("float16", "float16")] = _nvidia(fma16, extra, "rne", fp16_min)
    rows[("bfloat16", "float16")] = _nvidia(fma16, extra, "rtz", fp32_min)
    if fp8 is not None:
        rows.update({(i, "float32"): fp8 for i in ("float8_e4m3fn", "float8_e5m2")})
    return rows


# Published models (models/<GPU>TC.m of the repository above; fp16 -> fp32 unless said):
# V100 fma 4, neab 0; A100 (A2, A30) fma 8, neab 1, tf32 fma 4; Ada (L40S) as A100 plus FP8
# fma 16, neab -10 (13 result bits); H100 (H200) fma 16, neab 2, tf32 fma 8, FP8 fma 32,
# neab -10 (13 bits); B200 (RTX PRO 6000) as H100 but FP8 with neab 2.  min_exp_limit: -133
# (Hopper, Blackwell), -132 (Ampere, Ada) for float32 outputs; -19/-20/-21 for float16 ones.
_AMPERE = _family(8, 1, -132, -20, 4, None)
_ADA = _family(8, 1, -132, -20, 4, _nvidia(16, -10, "rtz", -132, 13))
_HOPPER = _family(16, 2, -133, -21, 8, _nvidia(32, -10, "rtz", -133, 13))
_BLACKWELL = _family(16, 2, -133, -21, 8, _nvidia(32, 2, "rtz", -133))
_GPUS: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
    "v100": {("float16", "float32"): _nvidia(4, 0, "rtz", None),
             ("float16", "float16"): _nvidia(4, 0, "rne", -19)},
    "a100": _AMPERE, "a2": _AMPERE, "a30": _AMPERE,
    "ada": _ADA, "l40s": _ADA,
    "h100": _HOPPER, "h200": _HOPPER,
    "b200": _BLACKWELL, "rtx-pro-6000": _BLACKWELL,
    # AMD (models/MI100MC.m, MI210MC.m; MI250 as MI210): float32 outputs, rne.
    "mi100": {("float16", "float32"): dict(fma=4, summation="exact", rounding="rne"),
              ("bfloat16", "float32"): dict(fma=2, summation="exact", rounding="rne")},
    **{gpu: {(i, "float32"): dict(fma=4, summation="pairwise", rounding="rne",
                                  subnormal_inputs=False, subnormal_outputs=False)
             for i in ("float16", "bfloat16")} for gpu in ("mi210", "mi250")},
    # AMD CDNA3 (models/MI300MC.m; MI300A, MI300X): late partial sum, neab 1; FP8 (FNUZ
    # inputs) in odd/even groups of 16.
    **{gpu: {**{(i, "float32"): dict(fma=8, summation="late", extra_bits=1, rounding="rne")
                for i in ("float16", "bfloat16")},
             ("tf32", "float32"): dict(fma=4, summation="late", extra_bits=1, rounding="rne"),
             **{(i, "float32"): dict(fma=16, summation="odd-even", extra_bits=1,
                                     rounding="rne")
                for i in ("float8_e4m3fnuz", "float8_e5m2fnuz")}}
       for gpu in ("mi300a", "mi300x")},
}
_PRESETS = {(u, i, o): fields for u, rows in _GPUS.items() for (i, o), fields in rows.items()}


#: Units by name (case-insensitive), each with the (input, output) formats it has.
UNITS = tuple(sorted({u for u, _, _ in _PRESETS}))

_SPEC = re.compile(r"^fma(?P<fma>\d+)/(?:x(?P<extra>-?\d+)|(?P<sum>exact|pairwise)"
                   r"|(?P<late>late|odd-even)(?P<late_extra>\d+))"
                   r"/(?P<rounding>[a-z]+)"
                   r"(?:/p(?P<bits>\d+))?(?:/min(?P<min>-?\d+))?(?:/c(?P<carry>\d+))?"
                   r"(?P<flags>(?:/(?:sticky|nocarry|ftzin|ftzout))*)$")


def _format_name(fmt, known: tuple[str, ...], pname: str) -> str:
    """The preset name among ``known`` of ``fmt`` (a FloatFormat or any name of one)."""
    f = element_format(fmt) if isinstance(fmt, str) else fmt
    for name in known:
        if element_format(name) == f:
            return name
    raise ValueError(f"{pname} {fmt} has no preset; presets exist for {', '.join(known)} "
                     f"(or pass a MatrixUnit)")


def get_unit(name, in_format="float16", out_format="float32") -> MatrixUnit:
    """A unit by preset name (:data:`UNITS`; case-insensitive) for the given input
    and output formats, or by spec (:attr:`MatrixUnit.spec`); instances pass through.

    ``ValueError`` names the unknown unit, or the formats a preset has."""
    if isinstance(name, MatrixUnit):
        return name
    if not isinstance(name, str):
        raise TypeError(f"unit must be a name, a spec or a MatrixUnit, got {type(name).__name__}")
    key = name.strip().lower()
    m = _SPEC.match(key)
    if m:
        flags = set(filter(None, m["flags"].split("/")))
        return MatrixUnit(fma=int(m["fma"]), summation=m["sum"] or m["late"] or "aligned",
                          extra_bits=int(m["extra"] or m["late_extra"] or 0),
                          rounding=m["rounding"],
                          result_bits=int(m["bits"]) if m["bits"] else None,
                          min_exponent=int(m["min"]) if m["min"] else None,
                          carry_bits=int(m["carry"]) if m["carry"] else None,
                          sticky="sticky" in flags, carry_bit="nocarry" not in flags,
                          subnormal_inputs="ftzin" not in flags,
                          subnormal_outputs="ftzout" not in flags, name=key)
    if key not in UNITS:
        raise ValueError(f"unknown unit {name!r}: presets are {', '.join(UNITS)}, or a spec like "
                         f"'fma16/x2/rtz', 'fma4/exact/rne', 'fma8/late1/rne' (see "
                         f"MatrixUnit.spec for the grammar)")
    i = _format_name(in_format, IN_FORMATS, "in_format")
    o = _format_name(out_format, OUT_FORMATS, "out_format")
    fields = _PRESETS.get((key, i, o))
    if fields is None:
        have = sorted(f"{a}->{b}" for u, a, b in _PRESETS if u == key)
        raise ValueError(f"unit {key!r} has no preset for {i} inputs and {o} outputs; it has "
                         f"{', '.join(have)}")
    return MatrixUnit(**fields, name=f"{key}:{i}->{o}")
