"""Golden test vectors for RTL verification of a float32 -> format conversion unit.

:func:`element_vectors` returns float32 inputs with the expected code and decoded value.  The
input set always contains, besides ``count`` random inputs:

* every tie (the midpoint between each pair of neighbouring values, both signs) and the float32
  numbers just below and just above it;
* every representable value;
* the overflow boundary (``max``, the threshold ``max + ulp/2`` and its float32 neighbours,
  ``2*max``), the underflow boundary (the smallest value, half of it and its neighbours) and the
  normal/subnormal boundary;
* ``±0``, ``±inf``, quiet and signalling NaN of both signs, float32 subnormals and the largest
  float32.

For formats with more than 2**14 magnitude codes the ties and values are sampled (``count``
bounds them) rather than enumerated.  Random inputs are drawn log-uniformly across the format's
range (plus a few binades either side) with random signs, from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .format import FloatFormat

ENUMERATE_LIMIT = 1 << 14


@dataclass(frozen=True)
class ElementVectors:
    """Inputs (float32), their kinds, and the expected codes and values."""
    inputs: np.ndarray      # float32
    kinds: np.ndarray       # str: tie, tie-1ulp, tie+1ulp, value, boundary, special, random
    codes: np.ndarray       # unsigned, fmt.dtype
    values: np.ndarray      # float64 decoded

    def __len__(self) -> int:
        return len(self.inputs)


def _f32_neighbours(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v.astype(np.float32)
    return (np.nextafter(v, np.float32(-np.inf)), np.nextafter(v, np.float32(np.inf)))


def element_inputs(fmt: FloatFormat, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 inputs and their kinds (see the module docstring)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, str]] = []
    nmag = fmt._maxmag + 1
    if nmag <= ENUMERATE_LIMIT:
        mags = np.arange(nmag, dtype=np.uint64)
    else:
        mags = np.unique(rng.integers(0, nmag, size=max(count, 1024), dtype=np.uint64))
    pos = np.unique(fmt.decode(mags.astype(fmt.dtype)))
    pos = pos[np.isfinite(pos)]
    vals = np.concatenate([pos, -pos]) if fmt.signed else pos
    f32_ok = np.abs(vals) <= np.finfo(np.float32).max
    parts.append((vals[f32_ok], "value"))
    ties = (pos[1:] + pos[:-1]) / 2                # exact in float64; float32 when M + 1 < 24
    ties = np.concatenate([ties, -ties]) if fmt.signed else ties
    ties = ties[np.abs(ties) <= np.finfo(np.float32).max]
    exact = ties.astype(np.float32).astype(np.float64) == ties
    t32 = ties[exact].astype(np.float32)
    below, above = _f32_neighbours(t32)
    parts += [(t32, "tie"), (below, "tie-1ulp"), (above, "tie+1ulp")]

    mx = fmt.max
    ulp_top = 2.0 ** (fmt.emax - fmt.man_bits)
    smallest = fmt.min_subnormal
    b = np.array([mx, mx + ulp_top / 2, mx + ulp_top, 2 * mx, smallest, smallest / 2,
                  smallest / 4, smallest * 0.75, fmt.min_normal], dtype=np.float64)
    b = b[np.abs(b) <= np.finfo(np.float32).max].astype(np.float32)
    lo, hi = _f32_neighbours(b)
    bnd = np.concatenate([b, lo, hi])
    bnd = np.concatenate([bnd, -bnd])
    parts.append((bnd, "boundary"))
    specials = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                         0x7F800001, 0xFF800001, 0x00000001, 0x80000001, 0x007FFFFF, 0x7F7FFFFF,
                         0xFF7FFFFF], dtype=np.uint32).view(np.float32)
    parts.append((specials, "special"))
    if count:
        lo_e = np.log2(smallest) - 3
        hi_e = min(np.log2(mx) + 3, 127.9)
        mag = 2.0 ** rng.uniform(lo_e, hi_e, size=count)
        sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
        parts.append(((mag * sign).astype(np.float32), "random"))
    # Each part becomes float32 on its own: NaN payloads must not pass through float64.
    inputs = np.concatenate([np.asarray(p).astype(np.float32) if p.dtype != np.float32 else p
                             for p, _ in parts])
    kinds = np.concatenate([np.full(len(p), k) for p, k in parts])
    return inputs, kinds


def element_vectors(fmt: FloatFormat, rounding: str = "rne", saturate: bool = False,
                    count: int = 1000, seed: int = 0, sr_bits: int | None = None) -> ElementVectors:
    """Golden vectors for ``fmt`` under ``rounding``/``saturate`` (stochastic rounding uses
    ``seed`` for the random bits too, element ``i`` drawing ``fpformat.core.sr_random``)."""
    inputs, kinds = element_inputs(fmt, count, seed)
    codes = fmt.encode(inputs, rounding=rounding, saturate=saturate, seed=seed, sr_bits=sr_bits)
    return ElementVectors(inputs, kinds, codes, fmt.decode(codes))


def write_element_vectors(vec: ElementVectors, fmt: FloatFormat, path: str, style: str = "csv",
                          header: list[str] | None = None) -> None:
    """Write ``vec`` as CSV (``index,kind,input_f32_hex,input,code_hex,value``) or as hex lines
    (``IIIIIIII CC`` — float32 input bits and expected code, for ``$readmemh``)."""
    width = (fmt.bits + 3) // 4
    in_bits = vec.inputs.view(np.uint32)
    with open(path, "w") as fh:
        for line in header or []:
            fh.write(("# " if style == "csv" else "// ") + line + "\n")
        if style == "csv":
            fh.write("index,kind,input_f32_hex,input,code_hex,value\n")
            for i in range(len(vec)):
                fh.write(f"{i},{vec.kinds[i]},{int(in_bits[i]):08X},{float(vec.inputs[i])!r},"
                         f"{int(vec.codes[i]):0{width}X},{float(vec.values[i])!r}\n")
        elif style == "hex":
            for i in range(len(vec)):
                fh.write(f"{int(in_bits[i]):08X} {int(vec.codes[i]):0{width}X}\n")
        else:
            raise ValueError(f"style must be csv or hex, got {style!r}")
