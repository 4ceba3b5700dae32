"""The IEEE P3109 family against the working group's own material.

* Every code of every one of the 234 hexadecimal value tables (K = 3..11, every precision,
  signedness and domain): the tables themselves are IEEE's and carry no licence, so the
  repository keeps only a SHA-256 digest of each table's content in a canonical form
  (``tests/data/p3109/README.md`` says where they come from and how the digests were made).
  fpformat's own table of each format -- the value ``decode`` gives every code and whether it
  is subnormal -- must hash to the same digest; on a mismatch the test prints fpformat's rows,
  to diff against the upstream file.  ``encode`` of each finite value and of ±inf and NaN must
  give the code back.  In the default suite (a few seconds).
* Rounding to nearest (ties to even) and to odd against the interim report's definition of
  ``ωRoundToPrecision`` (section 4.7.4), written out below from the report alone: for P = 1 the
  tie goes to the neighbour whose *code* is even (``CodeIsEven``), not the significand's parity.

Regenerate the digests from a clone of the working group's repository::

    python tests/test_p3109_tables.py "/path/to/Public/Value Tables/Hexadecimal"
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import floor_log2, reference, same_float

from fpformat import get_format
from fpformat.describe import code_class
from fpformat.testing import formats

DIGESTS = Path(__file__).parent / "data" / "p3109" / "digests.json"


def canonical(rows) -> str:
    """The canonical text of a table: one line ``code,value,mark`` per code in order, the code
    in lower-case hexadecimal without padding, the value as ``float.hex`` (``inf``, ``-inf``,
    ``nan`` for the specials), the mark ``*`` for a subnormal value, else empty."""
    lines = []
    for code, value, subnormal in rows:
        v = ("nan" if math.isnan(value) else "inf" if value == math.inf
             else "-inf" if value == -math.inf else float(value).hex())
        lines.append(f"{code:x},{v},{'*' if subnormal else ''}\n")
    return "".join(lines)


def digest(rows) -> str:
    return hashlib.sha256(canonical(rows).encode("ascii")).hexdigest()


def upstream_rows(path: Path) -> list[tuple[int, float, bool]]:
    """Rows of one upstream CSV (columns ``codepoint,value,subnormal``; values in C's ``%a``
    notation or ``Inf``, ``-Inf``, ``NaN``; ``*`` marks a subnormal)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["codepoint", "value", "subnormal"], path
    special = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return [(int(c, 16), special[v.strip()] if v.strip() in special else float.fromhex(v),
             s.strip() == "*") for c, v, s in rows[1:]]


def fpformat_rows(fmt) -> list[tuple[int, float, bool]]:
    codes = np.arange(1 << fmt.bits, dtype=np.uint64).astype(fmt.dtype)
    values = fmt.decode(codes)
    return [(int(c), float(v), code_class(fmt, int(c)) == "subnormal")
            for c, v in zip(codes, values)]


def expected_names() -> set[str]:
    names = set()
    for K in range(3, 12):
        for sign, top in (("s", K - 1), ("u", K)):
            for P in range(1, top + 1):
                names |= {f"Binary{K}p{P}{sign}e", f"Binary{K}p{P}{sign}f"}
    return names


def digests() -> dict[str, str]:
    return json.loads(DIGESTS.read_text())["tables"]


def test_the_digests_cover_the_234_tables():
    assert set(digests()) == expected_names() and len(digests()) == 234


@pytest.mark.parametrize("name", sorted(expected_names()))
def test_every_code_of_the_table(name):
    fmt = get_format(name)                      # case-insensitive: the tables' own spelling
    rows = fpformat_rows(fmt)
    assert digest(rows) == digests()[name], (
        f"{name}: fpformat's table differs from the working group's; fpformat's rows "
        f"(canonical form, see canonical()):\n" + canonical(rows)[:2000])
    want = np.array([v for _, v, _ in rows])
    codes = np.arange(1 << fmt.bits, dtype=np.uint64).astype(fmt.dtype)
    assert same_float(reference(fmt).decode_all(), want).all()
    for code, value, _sub in rows:
        v = fmt.code_value(code)
        if not isinstance(v, float):
            assert v == Fraction(value), (name, hex(code))
    finite = np.isfinite(want)
    assert (fmt.encode(want[finite]) == codes[finite]).all(), name
    for special in (math.inf, -math.inf, math.nan):      # where the table has the special
        for code in np.flatnonzero(same_float(want, special)):
            assert int(fmt.encode(np.array([special]))[0]) == code, (name, special)
    assert get_format(fmt.spec) == fmt


# --------------------------------------------------------------- the report's rounding, literally
def round_to_precision(X: Fraction, P: int, B: int, mode: str) -> Fraction:
    """ωRoundToPrecision_{P,B,mode}(X) for a finite X > 0, as section 4.7.4 states it."""
    Q = max(floor_log2(X), 1 - B) - P + 1
    S_tilde = X / Fraction(2) ** Q
    fl = math.floor(S_tilde)
    nu = S_tilde - fl
    code_is_even = fl % 2 == 0 if P > 1 else (fl == 0 or (Q + B) % 2 == 0)
    if mode == "rne":
        away = nu > Fraction(1, 2) or (nu == Fraction(1, 2) and not code_is_even)
    elif mode == "rto":
        away = nu > 0 and code_is_even
    else:
        raise ValueError(mode)
    return (fl + int(away)) * Fraction(2) ** Q


ROUNDING_FORMATS = ["binary8p1se", "binary8p1ue", "binary5p1sf", "binary3p1uf", "binary11p1ue",
                    "binary12p1se", "binary8p3se", "binary6p2uf", "binary4p4uf", "binary9p2sf"]


def midpoints_and_neighbours(fmt) -> np.ndarray:
    """Every positive value, the midpoints of neighbours (exact in float64: one bit more), and
    the floats just around each midpoint, up to max."""
    if fmt.bits <= 12:
        v = fmt.values()
    else:                                       # binary12p1se: 2**11 codes, one value per binade
        v = np.unique(fmt.decode(np.arange(fmt.max_code + 1, dtype=fmt.dtype)))
    v = v[v >= 0]
    mids = (v[:-1] + v[1:]) / 2
    x = np.concatenate([v, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf)])
    return x[(x > 0) & (x <= fmt.max)]


@pytest.mark.parametrize("mode", ["rne", "rto"])
@pytest.mark.parametrize("name", ROUNDING_FORMATS)
def test_rounding_follows_the_report(name, mode):
    fmt = get_format(name)
    P, B = fmt.man_bits + 1, fmt.bias
    x = midpoints_and_neighbours(fmt)
    want = [float(round_to_precision(Fraction(float(a)), P, B, mode)) for a in x]
    assert fmt.quantize(x, rounding=mode).tolist() == want
    ref = reference(fmt)
    assert [ref.decode(c) for c in ref.encode_many(x, rounding=mode)] == want
    if fmt.signed:
        assert (-fmt.quantize(-x, rounding=mode)).tolist() == want


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["binary8p1se", "binary7p1uf", "binary11p1uf", "binary8p2se"]),
       st.floats(min_value=0, max_value=1, exclude_min=True), st.integers(-80, 80))
def test_nearest_matches_the_report_anywhere_in_range(name, frac, exp):
    fmt = get_format(name)
    x = math.ldexp(1 + frac, exp) if fmt.bias < 1000 else math.ldexp(1 + frac, exp - 1000)
    if not 0 < x <= fmt.max:
        return
    want = float(round_to_precision(Fraction(x), fmt.man_bits + 1, fmt.bias, "rne"))
    assert float(fmt.quantize(np.array([x]))[0]) == want


def test_p1_ties_examples():
    """The issue's example: binary8p1 (bias 64) sends 1.5 to 1.0 (code 64 is even), 3.0 to 4.0
    (code 65 is odd); E8M0 keeps ml_dtypes' rule (every tie up)."""
    k8p1 = get_format("p3109_k8p1")
    assert k8p1.quantize(np.array([1.5, 3.0, 6.0, 0.75])).tolist() == [1.0, 4.0, 4.0, 1.0]
    # to odd: away from the even code (1.0 is code 64: 1.5 -> 2.0), stay on an odd one (2.0)
    assert k8p1.quantize(np.array([1.5, 3.0]), rounding="rto").tolist() == [2.0, 2.0]
    e8m0 = get_format("float8_e8m0fnu")
    assert e8m0.quantize(np.array([1.5, 3.0, 6.0, 0.75])).tolist() == [2.0, 4.0, 8.0, 1.0]
    assert k8p1.parity == "code" and e8m0.parity == "significand"


DETERMINISTIC = ("rne", "rna", "rtz", "rtp", "rtn", "rto")


@settings(max_examples=60, deadline=None)
@given(fmt=formats(man_bits=0, max_bits=8, has_zero=True))
def test_code_parity_kernels_match_the_reference(fmt):
    """Any M = 0 format with parity="code": the kernels and the exact reference agree on every
    value, midpoint and its neighbours, in every deterministic mode, saturating or not."""
    fmt = dataclasses.replace(fmt, parity="code")
    v = fmt.values()
    mids = (v[:-1] + v[1:]) / 2
    x = np.concatenate([v, mids, np.nextafter(mids, -np.inf), np.nextafter(mids, np.inf),
                        [fmt.max * 1.5, np.inf, -np.inf, np.nan, 0.0, -0.0]])
    ref = reference(fmt)
    for mode in DETERMINISTIC:
        for saturate in (False, True):
            got = fmt.encode(x, rounding=mode, saturate=saturate)
            want = ref.encode_many(x, rounding=mode, saturate=saturate)
            assert got.tolist() == want.tolist(), (fmt, mode, saturate)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    found = {p.stem: digest(upstream_rows(p)) for p in sorted(root.glob("K*/P*/*/Binary*.csv"))
             if int(p.stem[6:p.stem.index("p")]) <= 11}
    doc = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    doc["tables"] = dict(sorted(found.items()))
    DIGESTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(found)} digests to {DIGESTS}")
