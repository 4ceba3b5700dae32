"""Format facts for the report: standard neighbours of a format, property tables, SQNR sweeps.

Uses only the public :mod:`fpformat` API (``get_format``, ``FloatFormat`` properties and
``quantize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpformat import FloatFormat, get_format
from fpformat.describe import family_member

#: Standard element formats by total width, the neighbours a proposal is compared with.
STANDARD_BY_BITS: dict[int, tuple[str, ...]] = {
    4: ("float4_e2m1fn", "e1m2", "e3m0"),
    5: ("e2m2", "e3m1"),
    6: ("float6_e2m3fn", "float6_e3m2fn"),
    7: ("e3m3", "e4m2"),
    8: ("float8_e4m3fn", "float8_e4m3", "float8_e5m2", "float8_e3m4", "e4m3", "p3109_k8p4"),
    16: ("bfloat16", "float16"),
}


def neighbours(fmt: FloatFormat, limit: int = 6) -> list[str]:
    """Standard formats to compare ``fmt`` with: the same-width presets, then the IEEE-bias
    design-space format with the same E and M (``e{E}m{M}``) when it exists and differs from
    ``fmt`` (:func:`fpformat.describe.family_member`)."""
    names = list(STANDARD_BY_BITS.get(fmt.bits, ()))
    if not names:
        near = min(STANDARD_BY_BITS, key=lambda b: (abs(b - fmt.bits), b))
        names = list(STANDARD_BY_BITS[near])
    family = family_member(fmt) if fmt.signed else None
    if family is not None and family != fmt and family.name not in names:
        names.insert(0, family.name)
    return [n for n in names if get_format(n) != fmt][:limit]


def properties_row(name: str) -> tuple[str, ...]:
    """A table row: name, bits, E, M, bias, max, min normal, min subnormal, dynamic range
    (binades), epsilon, special values."""
    f = get_format(name)
    special = []
    if f.has_inf:
        special.append("±inf")
    if f.has_nan:
        special.append("NaN" if f.negative_zero else "NaN at −0")
    return (f"`{name}`", str(f.bits), str(f.exp_bits), str(f.man_bits), str(f.bias), f"{f.max:g}",
            f"{f.min_normal:g}", f"{f.min_subnormal:g}", f"{f.dynamic_range:.2f}",
            f"{f.epsilon:g}", ", ".join(special) or "none (all finite)")


PROPERTY_HEADERS = ("format", "bits", "E", "M", "bias", "max", "min normal", "min subnormal",
                    "dynamic range (binades)", "epsilon", "special codes")


def differences(fmt: FloatFormat, other: FloatFormat) -> str:
    """One sentence on how ``fmt`` differs from ``other`` (max, smallest value, range, epsilon)."""
    parts = []
    r = fmt.max / other.max
    parts.append(f"max {fmt.max:g} vs {other.max:g} ({_ratio(r)})")
    r = fmt.min_subnormal / other.min_subnormal
    parts.append(f"smallest {fmt.min_subnormal:g} vs {other.min_subnormal:g} ({_ratio(r)})")
    dr = fmt.dynamic_range - other.dynamic_range
    parts.append(f"dynamic range {dr:+.2f} binades")
    if fmt.man_bits != other.man_bits:
        parts.append(f"epsilon {fmt.epsilon:g} vs {other.epsilon:g}")
    else:
        parts.append("same epsilon")
    if (fmt.has_inf, fmt.has_nan) != (other.has_inf, other.has_nan):
        parts.append(f"specials: {_specials(fmt)} vs {_specials(other)}")
    return "; ".join(parts)


def _specials(f: FloatFormat) -> str:
    s = [x for x, on in (("inf", f.has_inf), ("NaN", f.has_nan)) if on]
    return "+".join(s) or "none"


def _ratio(r: float) -> str:
    if np.isclose(r, 1.0):
        return "same"
    k = np.log2(r)
    if np.isclose(k, round(k)):
        return f"×2^{int(round(k))}"
    return f"×{r:.3g}"


@dataclass(frozen=True)
class ScaleSweep:
    """SQNR (dB) of unscaled round-to-nearest quantization of N(0, σ²) data against log2 σ."""

    log2_sigma: np.ndarray
    sqnr_db: dict[str, np.ndarray]


def sqnr_db(x: np.ndarray, q: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σx² / Σ(x−q)²) in dB (inf when exact)."""
    noise = float(np.sum((x - q) ** 2))
    sig = float(np.sum(x ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(sig / noise)


def scale_sweep(names: list[str], samples: int, seed: int,
                log2_sigma: np.ndarray | None = None) -> ScaleSweep:
    """SQNR of each format on unscaled Gaussian data of standard deviation 2^s, over s.

    Without a scale factor the bias decides where the format is accurate: this is where a
    proposed bias shows.  Overflow saturates to ±max (what a training kernel does).
    """
    s = np.arange(-16.0, 12.5, 0.5) if log2_sigma is None else np.asarray(log2_sigma, float)
    base = np.random.default_rng(seed).standard_normal(samples)
    x = np.concatenate([base * 2.0 ** si for si in s])
    out = {}
    for name in names:
        q = get_format(name).quantize(x, rounding="rne", saturate=True)
        out[name] = np.array([sqnr_db(xi, qi) for xi, qi in zip(np.split(x, len(s)),
                                                                np.split(q, len(s)))])
    return ScaleSweep(s, out)
