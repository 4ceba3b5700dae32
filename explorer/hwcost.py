"""A first-order hardware-cost proxy for a floating-point multiply-accumulate (MAC) unit.

The unit multiplies two ExMy operands (sign-magnitude, hidden bit) and adds the product into a
wide accumulator, the datapath of a tensor-core-style MAC.  Its area is modelled as a sum of
components, each scaling with E and M the way the textbook circuit does (Ercegovac & Lang,
*Digital Arithmetic*, Morgan Kaufmann 2004, ch. 4 (multipliers) and ch. 8 (floating point)):

- significand multiplier: an (M+1) × (M+1) array of partial-product cells, ∝ (M+1)²;
- exponent adder: adds two E-bit exponents and removes the bias, ∝ E + 1;
- alignment shifter: moves the 2(M+1)-bit product into the accumulator by an amount whose range
  grows with the exponent range, a barrel shifter of ∝ 2(M+1) · (E+1) multiplexer cells;
- normalisation, rounding and sign logic, ∝ M + 1;
- a fixed per-unit overhead (operand registers, control).

Calibration: with the default weights the proxy reproduces the ratio of FP32 to FP16 multiplier
area in Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, Fig. 1.1.9
(45 nm: FP16 multiply 1640 µm², FP32 multiply 7700 µm², ratio 4.7; the (M+1)² term gives
24²/11² = 4.76).  Units are relative: :func:`mac_cost` divides by the cost of E4M3, so
E4M3 = 1.0.  This is a proxy for ranking layouts, not a synthesis result: override the weights
with :class:`HwCostModel` when you have area numbers for your own library and node.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

SOURCE = ("MAC area proxy: multiplier ∝ (M+1)², exponent adder ∝ E+1, alignment shifter ∝ "
          "2(M+1)(E+1), normalise/round ∝ M+1, plus fixed overhead (Ercegovac & Lang, Digital "
          "Arithmetic, 2004); multiplier weight calibrated to the FP32/FP16 multiplier area ratio "
          "of Horowitz, ISSCC 2014. Relative units, E4M3 = 1. Override with "
          "explorer.hwcost.HwCostModel.")


@dataclass(frozen=True)
class HwCostModel:
    """Weights (area per cell, arbitrary common unit) of the MAC components.

    multiplier: per partial-product cell of the (M+1)² array; exponent_adder: per exponent bit;
    shifter: per multiplexer cell of the 2(M+1)·(E+1) alignment shifter; normalize: per
    significand bit; overhead: fixed."""

    multiplier: float = 1.0
    exponent_adder: float = 1.0
    shifter: float = 0.25
    normalize: float = 1.0
    overhead: float = 4.0
    reference: tuple[int, int] = (4, 3)

    def __post_init__(self) -> None:
        for name in ("multiplier", "exponent_adder", "shifter", "normalize", "overhead"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name}: must be a number >= 0, got {v!r}")
        e, m = self.reference
        if e < 0 or m < 0:
            raise ValueError(f"reference: expected (E, M) >= 0, got {self.reference!r}")

    def breakdown(self, E: int, M: int) -> dict[str, float]:
        """Absolute (un-normalised) area per component for an (E, M) MAC."""
        E, M = _check(E, M)
        return {
            "multiplier": self.multiplier * (M + 1) ** 2,
            "exponent_adder": self.exponent_adder * (E + 1),
            "shifter": self.shifter * 2 * (M + 1) * (E + 1),
            "normalize": self.normalize * (M + 1),
            "overhead": self.overhead,
        }

    def area(self, E: int, M: int) -> float:
        return float(sum(self.breakdown(E, M).values()))

    def cost(self, E: int, M: int) -> float:
        """Area relative to the reference format (default E4M3 = 1.0)."""
        return self.area(E, M) / self.area(*self.reference)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_MODEL = HwCostModel()


def _check(E: int, M: int) -> tuple[int, int]:
    for name, v in (("E", E), ("M", M)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
    return int(E), int(M)


def mac_cost(E: int, M: int, model: HwCostModel = DEFAULT_MODEL, **overrides: float) -> float:
    """Relative MAC area of an (E, M) format under ``model`` (E4M3 = 1.0 by default).

    Keyword ``overrides`` replace single weights of ``model`` (``multiplier``,
    ``exponent_adder``, ``shifter``, ``normalize``, ``overhead``, ``reference``), e.g.
    ``mac_cost(4, 3, shifter=0.5)``."""
    if overrides:
        unknown = sorted(set(overrides) - set(model.to_dict()))
        if unknown:
            raise TypeError(f"overrides: unknown cost weight(s) {', '.join(unknown)}; expected "
                            f"{', '.join(model.to_dict())}")
        model = replace(model, **overrides)
    return model.cost(E, M)
