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

Sizes are bounded: one file holds at most :data:`MAX_VECTOR_INPUTS` input numbers (``count``
element inputs, ``count`` blocks times the block length, or ``count`` dot products times ``k``),
so memory stays below a few hundred MB; larger requests are refused with that limit (write
several files with different seeds instead).  The writers replace their file atomically
(:func:`fpformat.files.atomic_write`): a failed write leaves the old file as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block import BlockFormat
from .files import atomic_write
from .format import FloatFormat
from .gemm import Accumulator, matmul, mma
from .presets import get_format
from .scales import BlockEncoding
from .units import get_unit

ENUMERATE_LIMIT = 1 << 14
STYLES = ("csv", "hex")
#: The most input numbers one set of vectors holds (see the module docstring): 2**22, about
#: 100 bytes of memory each while the set is built, and ~300 MB of CSV at most.
MAX_VECTOR_INPUTS = 1 << 22


def _check_size(count: object, per_vector: int, what: str, fixed: int = 0) -> None:
    """``ValueError`` unless ``count`` is an int >= 0 and ``(count + fixed) * per_vector`` (the
    random vectors, the ``fixed`` ones every set holds, ``per_vector`` inputs each) is within
    :data:`MAX_VECTOR_INPUTS` (``what`` names the sizes in the message)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    total = (int(count) + fixed) * int(per_vector)
    if total > MAX_VECTOR_INPUTS:
        raise ValueError(f"{what} = {total} input numbers exceeds the limit of "
                         f"{MAX_VECTOR_INPUTS} per file (MAX_VECTOR_INPUTS); lower them, or write "
                         f"several files with different seeds")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be csv or hex, got {style!r}")


def _open(path: str):
    """The vectors file, written atomically; characters UTF-8 cannot hold (a file name in the
    header's command line that is not valid UTF-8) are written as backslash escapes."""
    return atomic_write(path, "w", errors="backslashreplace")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def _write_header(fh, style: str, header: list[str] | None) -> None:
    """Comment lines first: ``# `` in CSV, ``// `` in hex files (``$readmemh`` skips them)."""
    for line in header or []:
        fh.write(("# " if style == "csv" else "// ") + line + "\n")


@dataclass(frozen=True)
class ElementVectors:
    """Inputs (float32), their kinds, and the expected codes and values (and, for stochastic
    rounding with given bits, each input's random bits and their width)."""
    inputs: np.ndarray      # float32
    kinds: np.ndarray       # str: tie, tie-1ulp, tie+1ulp, value, boundary, special, random
    codes: np.ndarray       # unsigned, fmt.dtype
    values: np.ndarray      # float64 decoded
    random_bits: np.ndarray | None = None   # uint64, one per input (random_bits= only)
    sr_bits: int | None = None              # their width k

    def __len__(self) -> int:
        return len(self.inputs)


def _f32_neighbours(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v.astype(np.float32)
    return (np.nextafter(v, np.float32(-np.inf)), np.nextafter(v, np.float32(np.inf)))


def element_inputs(fmt: FloatFormat, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 inputs and their kinds (see the module docstring)."""
    _check_size(count, 1, "count")
    _check_seed(seed)
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
                    count: int = 1000, seed: int = 0, sr_bits: int | None = None,
                    random_bits=None) -> ElementVectors:
    """Golden vectors for ``fmt`` under ``rounding``/``saturate`` (stochastic rounding uses
    ``seed`` for the random bits too, element ``i`` drawing ``fpformat.core.sr_random``).

    ``random_bits`` (``rounding="sr"``): a 1-D integer array of the bits a hardware generator
    gives, one per input in order; the first ``len(inputs)`` are used (``ValueError`` when
    there are fewer), with the rule of :meth:`FloatFormat.encode` and width ``sr_bits`` (None:
    the width of the array's unsigned dtype).  ``seed`` then draws the random inputs only."""
    inputs, kinds = element_inputs(fmt, count, seed)
    if random_bits is None:
        codes = fmt.encode(inputs, rounding=rounding, saturate=saturate, seed=seed,
                           sr_bits=sr_bits)
        return ElementVectors(inputs=inputs, kinds=kinds, codes=codes, values=fmt.decode(codes))
    r = _take_bits(random_bits, inputs.size, "input")
    codes = fmt.encode(inputs, rounding=rounding, saturate=saturate, sr_bits=sr_bits,
                       random_bits=r)
    width = sr_bits if sr_bits is not None else 8 * r.dtype.itemsize
    return ElementVectors(inputs=inputs, kinds=kinds, codes=codes, values=fmt.decode(codes),
                          random_bits=r.astype(np.uint64), sr_bits=int(width))


def load_random_bits(path: str) -> np.ndarray:
    """Random bits for :func:`element_vectors` from a file: a ``.npy`` file of a 1-D unsigned
    (or non-negative signed) integer array, read with ``np.load(allow_pickle=False)``, or text
    with one hexadecimal value per line (``0x`` optional; blank lines and lines starting with
    ``#`` or ``//`` skipped), read as uint64.  ``ValueError`` naming the file and the line for
    anything else (range checks against the width come with the encoding)."""
    if str(path).endswith(".npy"):
        try:
            r = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain .npy integer array ({exc})") from None
        if r.dtype.kind not in "ui":
            raise ValueError(f"{path}: random bits must be integers, got dtype {r.dtype}")
        if r.ndim != 1:
            raise ValueError(f"{path}: random bits must be a 1-D array, got shape {r.shape}")
        if r.size and int(r.min()) < 0:
            raise ValueError(f"{path}: random bits must be >= 0, got {int(r.min())}")
        return r
    values = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            t = line.strip()
            if not t or t.startswith("#") or t.startswith("//"):
                continue
            try:
                v = int(t, 16)
            except ValueError:
                raise ValueError(f"{path}, line {n}: expected one hexadecimal value, got "
                                 f"{t[:40]!r}") from None
            if not 0 <= v < 1 << 64:
                raise ValueError(f"{path}, line {n}: {t[:40]} is not a 64-bit unsigned value")
            values.append(v)
    return np.array(values, dtype=np.uint64)


def write_element_vectors(vec: ElementVectors, fmt: FloatFormat, path: str, style: str = "csv",
                          header: list[str] | None = None) -> None:
    """Write ``vec`` as CSV (``index,kind,input_f32_hex,input,code_hex,value``) or as hex lines
    (``IIIIIIII CC`` — float32 input bits and expected code, for ``$readmemh``).  Vectors with
    given random bits carry them too: a ``random_hex`` CSV column after ``input``, and a
    ``RR`` field between input and code in hex lines (``ceil(k/4)`` digits)."""
    _check_style(style)
    width = (fmt.bits + 3) // 4
    in_bits = vec.inputs.view(np.uint32)
    rb = vec.random_bits
    rw = 0 if rb is None else (int(vec.sr_bits) + 3) // 4
    with _open(path) as fh:
        _write_header(fh, style, header)
        if style == "csv":
            rcol = "" if rb is None else ",random_hex"
            fh.write(f"index,kind,input_f32_hex,input{rcol},code_hex,value\n")
            for i in range(len(vec)):
                r = "" if rb is None else f",{int(rb[i]):0{rw}X}"
                fh.write(f"{i},{vec.kinds[i]},{int(in_bits[i]):08X},{float(vec.inputs[i])!r}"
                         f"{r},{int(vec.codes[i]):0{width}X},{float(vec.values[i])!r}\n")
        else:
            for i in range(len(vec)):
                r = "" if rb is None else f" {int(rb[i]):0{rw}X}"
                fh.write(f"{int(in_bits[i]):08X}{r} {int(vec.codes[i]):0{width}X}\n")


# --------------------------------------------------------------------------------- block vectors
@dataclass(frozen=True)
class BlockVectors:
    """Golden vectors of a block format: each row of ``inputs`` (float32) is encoded on its own
    (one block, or one tensor for ``"nvfp4"``); ``encodings[r]`` and ``values[r]`` are row r's
    expected result."""
    inputs: np.ndarray          # (rows, block length) float32
    kinds: list[str]
    encodings: list[BlockEncoding]
    values: np.ndarray          # decoded, float64
    random_bits: np.ndarray | None = None   # uint64, inputs' shape (random_bits= only)
    sr_bits: int | None = None              # their width k

    def __len__(self) -> int:
        return self.inputs.shape[0]


def block_vectors(fmt: BlockFormat, rounding: str = "rne", saturate: bool = True, count: int = 100,
                  seed: int = 0, sr_bits: int | None = None, random_bits=None) -> BlockVectors:
    """Blocks to verify a block-quantization unit against: a zero block, blocks holding NaN, +inf
    and -inf, a block whose maximum saturates after scaling, the element grid with its ties,
    tiny and huge blocks at the scale's limits, and ``count`` random Gaussian blocks of random
    magnitude.  Rows have the block length (32 for ``"channel"``/``"tensor"``/tiles) and are
    encoded one at a time, so a NaN in one row does not spread to another.  A scale format
    without NaN has no encoding for a block holding NaN/inf: those three blocks are left out.

    ``random_bits`` (``rounding="sr"``): a 1-D integer array, one value per element in row
    order; the first ``rows * block length`` are used (``ValueError`` when there are fewer),
    width ``sr_bits`` (None: the array's unsigned dtype's width), by the rule of
    :meth:`FloatFormat.encode`; ``seed`` then draws the random blocks only."""
    k = fmt.block_size if isinstance(fmt.block_size, int) and fmt.tile is None else 32
    _check_size(count, k, f"(count + 8 fixed blocks) * block length {k}", fixed=8)
    _check_seed(seed)
    one_row = fmt if fmt.tile is None else BlockFormat(
        fmt.element, k, scale_format=fmt.scale_format, scale_rule=fmt.scale_rule,
        scale_rounding=fmt.scale_rounding, int_codes=fmt.int_codes)
    rng = np.random.default_rng(seed)
    el = fmt.element
    rows: list[np.ndarray] = []
    kinds: list[str] = []

    def add(v, kind):
        rows.append(np.asarray(v, dtype=np.float32).reshape(k))
        kinds.append(kind)

    add(np.zeros(k), "zero")
    for special, kind in ((np.nan, "nan"), (np.inf, "+inf"), (-np.inf, "-inf")):
        v = rng.standard_normal(k)
        v[k // 2] = special
        if fmt.scale_format is None or fmt.scale_format.has_nan:
            add(v, kind)
    top = el.max * 1.99                                   # amax just below the next binade
    add(np.linspace(-top, top, k), "saturating")
    vals = el.values()
    add(np.resize(np.concatenate([vals, (vals[1:] + vals[:-1]) / 2]), k), "element-grid+ties")
    add(np.full(k, 1e-40), "tiny")
    add(np.full(k, 3e38), "huge")
    for _ in range(count):
        add(rng.standard_normal(k) * np.exp2(rng.uniform(-20, 20)), "random")
    x = np.stack(rows)
    if random_bits is None:
        encs = [one_row.encode(x[r:r + 1], rounding=rounding, saturate=saturate, seed=seed,
                               sr_bits=sr_bits) for r in range(len(rows))]
        values = np.concatenate([one_row.decode(e) for e in encs])
        return BlockVectors(inputs=x, kinds=kinds, encodings=encs, values=values)
    rb = _take_bits(random_bits, x.size, "element").reshape(x.shape)
    encs = [one_row.encode(x[r:r + 1], rounding=rounding, saturate=saturate, sr_bits=sr_bits,
                           random_bits=rb[r:r + 1]) for r in range(len(rows))]
    values = np.concatenate([one_row.decode(e) for e in encs])
    width = sr_bits if sr_bits is not None else 8 * rb.dtype.itemsize
    return BlockVectors(inputs=x, kinds=kinds, encodings=encs, values=values,
                        random_bits=rb.astype(np.uint64), sr_bits=int(width))


def write_block_vectors(vec: BlockVectors, fmt: BlockFormat, path: str, style: str = "csv",
                        header: list[str] | None = None) -> None:
    """CSV ``block,kind,element,input_f32_hex,scale_code,element_code,value[,tensor_scale_hex]``
    (one line per element; scale codes in hex for a scale format, float32 bits otherwise), or hex
    lines ``IIIIIIII SS CC [TTTTTTTT]`` (the last field: the float32 tensor scale, nvfp4 only).
    Vectors with given random bits carry them: a ``random_hex`` CSV column after
    ``input_f32_hex``, and an ``RR`` field after the input in hex lines."""
    _check_style(style)
    bits = vec.inputs.view(np.uint32)
    ew = (fmt.element.bits + 3) // 4
    sw = 8 if fmt.scale_format is None else (fmt.scale_format.bits + 3) // 4
    nv = fmt.scale_rule == "nvfp4"
    rb = vec.random_bits
    rw = 0 if rb is None else (int(vec.sr_bits) + 3) // 4
    with _open(path) as fh:
        _write_header(fh, style, header)
        if style == "csv":
            fh.write("block,kind,element,input_f32_hex" + ("" if rb is None else ",random_hex")
                     + ",scale_code,element_code,value"
                     + (",tensor_scale_hex" if nv else "") + "\n")
        for r, enc in enumerate(vec.encodings):
            sc = enc.scales.reshape(-1)
            if fmt.scale_format is None:
                sc = sc.astype(np.float32).view(np.uint32)
            ts = f"{int(np.float32(enc.tensor_scale).view(np.uint32)):08X}" if nv else ""
            per = vec.inputs.shape[1] // len(sc)
            for j in range(vec.inputs.shape[1]):
                s = int(sc[min(j // per, len(sc) - 1)])
                c = int(enc.codes.reshape(-1)[j])
                rnd = "" if rb is None else f"{int(rb[r, j]):0{rw}X}"
                if style == "csv":
                    fh.write(f"{r},{vec.kinds[r]},{j},{int(bits[r, j]):08X},"
                             + (f"{rnd}," if rnd else "") + f"{s:0{sw}X},{c:0{ew}X},"
                             f"{float(vec.values[r, j])!r}" + (f",{ts}" if nv else "") + "\n")
                else:
                    fh.write(f"{int(bits[r, j]):08X} " + (f"{rnd} " if rnd else "")
                             + f"{s:0{sw}X} {c:0{ew}X}" + (f" {ts}" if nv else "") + "\n")


# --------------------------------------------------------------------------------- dot vectors
@dataclass(frozen=True)
class DotVector:
    """One golden vector for a MAC unit: input codes and the expected accumulator result.

    kind: ``random``, ``gaussian``, ``tie`` (a running sum lands on an accumulator midpoint),
        ``cancel`` (large terms cancelling), ``overflow`` (the accumulator overflows) or
        ``zero``.
    a_codes, b_codes: k codes each (element formats ``a_fmt``, ``b_fmt``).
    acc_code: the expected result code (format :func:`result_format`); acc_value its value.
    """
    kind: str
    a_codes: tuple[int, ...]
    b_codes: tuple[int, ...]
    acc_code: int
    acc_value: float


def _element_format(fmt, pname: str) -> FloatFormat:
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise TypeError(f"{pname} must be an element FloatFormat or its name, got {fmt!r}")
    return f


def _finite_codes(f: FloatFormat) -> np.ndarray:
    """Every code of ``f`` with a finite value (formats of at most 16 bits)."""
    codes = np.arange(1 << f.bits, dtype=np.uint64).astype(f.dtype)
    return codes[np.isfinite(f.decode(codes))]


def _tie_pairs(fa: FloatFormat, fb: FloatFormat, acc: FloatFormat, rng, want: int
               ) -> list[tuple[int, int, int, int]]:
    """Code pairs ``(a0, b0, a1, b1)`` with ``a0*b0`` an accumulator value and ``a0*b0 + a1*b1``
    exactly the midpoint between it and its upper neighbour."""
    ca, cb = _finite_codes(fa), _finite_codes(fb)
    va, vb = fa.decode(ca), fb.decode(cb)
    bidx = {float(v): int(c) for v, c in zip(vb, cb)}
    pos_a = [(float(v), int(c)) for v, c in zip(va, ca) if v > 0]
    out = []
    for _ in range(200 * want):
        if len(out) >= want:
            break
        v0, c0 = pos_a[rng.integers(len(pos_a))]
        w0 = float(vb[rng.integers(len(vb))])
        p0 = v0 * w0
        if p0 <= 0 or float(acc.quantize(np.array([p0]))[0]) != p0 or p0 >= acc.max:
            continue
        e = int(np.floor(np.log2(p0)))
        half = 2.0 ** (max(e, acc.emin) - acc.man_bits - 1)
        for v1, c1 in pos_a:
            w1 = half / v1
            if w1 in bidx:
                out.append((c0, bidx[w0], c1, bidx[w1]))
                break
    return out


def dot_vectors(a_fmt, b_fmt, acc_format, acc_rounding: str = "rne", k: int = 16,
                count: int = 100, seed: int = 0, chunk: int | None = None,
                **acc_options) -> list[DotVector]:
    """Golden vectors for a MAC unit computing a length-``k`` dot product of ``a_fmt`` and
    ``b_fmt`` codes into ``acc_format`` under ``acc_rounding`` (``chunk``/``acc_options``: the
    other :class:`Accumulator` fields, e.g. ``order``, ``fused_width``, ``saturate``).

    Besides ``count`` random vectors (codes uniform over the finite codes, half of them) and
    Gaussian data quantized into the formats (the other half), the set always holds tie cases
    (where the formats allow them), a cancellation case, an overflow case (where the products
    can reach the accumulator's range) and an all-zero case.  Deterministic in ``seed``.
    """
    fa = _element_format(a_fmt, "a_fmt")
    fb = _element_format(b_fmt, "b_fmt")
    if fa.bits > 16 or fb.bits > 16:
        raise ValueError("dot_vectors: a_fmt and b_fmt must have at most 16 bits")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    # Up to 11 fixed vectors (8 ties, cancel, overflow, zero) come on top of count.
    _check_size(count, k, f"(count + 11 fixed vectors) * k {k}", fixed=11)
    _check_seed(seed)
    acc = Accumulator(acc_format, acc_rounding, chunk=chunk, **acc_options)
    rng = np.random.default_rng(seed)
    ca, cb = _finite_codes(fa), _finite_codes(fb)
    rows_a: list[np.ndarray] = []
    rows_b: list[np.ndarray] = []
    kinds: list[str] = []

    def add(kind, xa, xb):
        rows_a.append(np.asarray(xa, dtype=np.uint64))
        rows_b.append(np.asarray(xb, dtype=np.uint64))
        kinds.append(kind)

    zero_a, zero_b = int(fa.encode(np.zeros(1))[0]), int(fb.encode(np.zeros(1))[0])
    for c0, d0, c1, d1 in _tie_pairs(fa, fb, acc.acc_format, rng, 4):
        xa = np.full(k, zero_a)
        xb = np.full(k, zero_b)
        xa[:2], xb[:2] = (c0, c1), (d0, d1)
        add("tie", xa, xb)
        if fa.signed:                                     # the negative tie
            xa2 = xa.copy()
            xa2[:2] |= 1 << (fa.bits - 1)
            add("tie", xa2, xb)
    big_a = int(fa.encode(np.array([fa.max]))[0])
    big_b = int(fb.encode(np.array([fb.max]))[0])
    if fa.signed:
        neg_big_a = big_a | (1 << (fa.bits - 1))
        small = rng.choice(ca, size=k)
        xa = small.astype(np.uint64)
        xa[0], xa[-1] = big_a, neg_big_a
        xb = rng.choice(cb, size=k).astype(np.uint64)
        xb[0] = xb[-1] = big_b
        add("cancel", xa, xb)
    if fa.max * fb.max * k > acc.acc_format.max:
        add("overflow", np.full(k, big_a), np.full(k, big_b))
    add("zero", np.full(k, zero_a), np.full(k, zero_b))
    n_rand = count - count // 2
    for _ in range(n_rand):
        add("random", rng.choice(ca, size=k), rng.choice(cb, size=k))
    for _ in range(count // 2):
        xa = fa.encode(rng.standard_normal(k), saturate=True)
        xb = fb.encode(rng.standard_normal(k), saturate=True)
        add("gaussian", xa, xb)
    codes_a = np.stack(rows_a)
    codes_b = np.stack(rows_b)
    A = fa.decode(codes_a.astype(fa.dtype))
    Bv = fb.decode(codes_b.astype(fb.dtype))
    # One dot product per row (stochastic rounding: vector r uses the stream of seed + r).
    vals = np.empty(len(kinds))
    codes = np.empty(len(kinds), dtype=np.int64)
    for r in range(len(kinds)):
        v, c = matmul(A[r:r + 1], Bv[r:r + 1].T, accumulator=acc, seed=seed + r, return_codes=True)
        vals[r], codes[r] = v[0, 0], int(c[0, 0])
    return [DotVector(kind=kinds[r], a_codes=tuple(int(x) for x in codes_a[r]),
                      b_codes=tuple(int(x) for x in codes_b[r]), acc_code=int(codes[r]),
                      acc_value=float(vals[r])) for r in range(len(kinds))]


def write_dot_vectors(vectors: list[DotVector], a_fmt, b_fmt, out_fmt, path: str,
                      style: str = "csv", header: list[str] | None = None) -> None:
    """Write dot vectors as CSV (``index,kind,a_codes,b_codes,acc_code,acc_value``; code lists
    are space-separated hex, k order) or hex lines (``AA.. BB.. RR``: all a codes, all b codes,
    the result code, for ``$readmemh``-style testbenches)."""
    _check_style(style)
    fa = _element_format(a_fmt, "a_fmt")
    fb = _element_format(b_fmt, "b_fmt")
    fo = _element_format(out_fmt, "out_fmt")
    wa, wb, wo = ((f.bits + 3) // 4 for f in (fa, fb, fo))
    with _open(path) as fh:
        _write_header(fh, style, header)
        if style == "csv":
            fh.write("index,kind,a_codes,b_codes,acc_code,acc_value\n")
        for i, v in enumerate(vectors):
            a_hex = " ".join(f"{c:0{wa}X}" for c in v.a_codes)
            b_hex = " ".join(f"{c:0{wb}X}" for c in v.b_codes)
            if style == "csv":
                fh.write(f"{i},{v.kind},{a_hex},{b_hex},{v.acc_code:0{wo}X},{v.acc_value!r}\n")
            else:
                fh.write(f"{''.join(f'{c:0{wa}X}' for c in v.a_codes)} "
                         f"{''.join(f'{c:0{wb}X}' for c in v.b_codes)} {v.acc_code:0{wo}X}\n")


# --------------------------------------------------------------------------------- mma vectors
#: Fixed (non-random) vectors an mma set may hold at most, on top of ``count``.
MMA_FIXED_MAX = 64


@dataclass(frozen=True)
class MmaVector:
    """One golden vector for a matrix unit: ``d = a . b + c`` of one output element.

    kind: ``edge`` (a term at the alignment window's last bit or just below it, or at the
        result's rounding point: truncation, ties and the carry bit show here), ``carry``
        (products >= 2), ``cancel`` (large terms cancelling), ``zero`` (an exact cancellation
        to +0), ``below-window`` (terms too small for the window), ``subnormal`` (subnormal
        inputs, addends or results), ``overflow``, ``special`` (NaN and infinities),
        ``random`` or ``gaussian``.
    a_codes, b_codes: k codes each (the input format), k order; c_code: the addend (output
    format); d_code, d_value: the expected result (output format; a NaN result is the format's
    canonical NaN code, any NaN is right).
    """
    kind: str
    a_codes: tuple[int, ...]
    b_codes: tuple[int, ...]
    c_code: int
    d_code: int
    d_value: float


def _pow2_pair(f: FloatFormat, x: int) -> tuple[float, float] | None:
    """Values ``(a, b)`` of ``f`` with ``a * b == 2**x`` (normal ones where possible)."""
    lo = f.emin - f.man_bits if f.subnormals else f.emin
    for xa in sorted(range(lo, f.emax + 1), key=lambda e: (abs(e - x / 2), e)):
        xb = x - xa
        if lo <= xb <= f.emax:
            return 2.0 ** xa, 2.0 ** xb
    return None


def mma_vectors(unit, in_format="float16", out_format="float32", k: int = 16, count: int = 100,
                seed: int = 0) -> list[MmaVector]:
    """Golden vectors for a matrix unit (:func:`fpformat.gemm.mma`): dot products of length
    ``k`` (cut into the unit's blocks as a GEMM built from the instruction does) of
    ``in_format`` codes plus an ``out_format`` addend.

    ``unit``: a preset name (for these formats), a spec or a
    :class:`~fpformat.units.MatrixUnit`.  Besides ``count`` random vectors (half with codes
    uniform over the finite codes, half Gaussian data rounded into the format; addends Gaussian
    or zero), the set always holds the cases that tell units apart (see :class:`MmaVector`):
    terms at and just below the edge of the unit's alignment window and at the result's rounding
    point (both signs, with and without a product >= 2 on top), carries, cancellation to zero,
    terms below the window, subnormal inputs and results, overflow, NaN and infinities.
    Deterministic in ``seed``."""
    fi = _element_format(in_format, "in_format")
    fo = _element_format(out_format, "out_format")
    u = get_unit(unit, fi, fo)
    u.tuples(fi, fo)                                       # the unit can take these formats
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    k = int(k)
    _check_size(count, k, f"(count + {MMA_FIXED_MAX} fixed vectors) * k {k}",
                fixed=MMA_FIXED_MAX)
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, np.ndarray, np.ndarray, float]] = []

    def add(kind, a, b, c=0.0):
        xa, xb = np.zeros(k), np.zeros(k)
        a, b = list(a)[:k], list(b)[:k]
        xa[:len(a)], xb[:len(b)] = a, b
        rows.append((kind, xa, xb, float(c)))

    bits = fo.man_bits if u.result_bits is None else min(u.result_bits, fo.man_bits)
    big_s = 2.0 - 2.0 ** -fi.man_bits                      # the largest significand: s*s >= 2
    T = min(2 * fi.emax - 2, fo.emax - 3)                  # the top term's exponent
    top = _pow2_pair(fi, T)
    if top is not None:
        window = 23 + u.extra_bits
        offsets = sorted({window - 1, window, window + 1, window + 2, bits, bits + 1, bits + 2})
        for carry in (False, True):
            ta, tb = top
            if carry:
                ta, tb = ta * big_s, tb * big_s            # a product >= 2 at the top exponent
            if not (np.isfinite(fi.quantize(np.array([ta, tb]))).all()):
                continue
            for j in offsets:
                low = _pow2_pair(fi, T - j)
                if low is None:
                    continue
                for sign in (1.0, -1.0):
                    add("edge", [ta, sign * low[0]], [tb, low[1]])
                odd = _pow2_pair(fi, T - bits)             # makes the result's last bit odd
                if odd is not None and not carry:
                    add("edge", [ta, odd[0], low[0]], [tb, odd[1], low[1]])
    add("carry", [big_s] * k, [big_s] * k)
    add("carry", [big_s, -1.0] + [big_s] * (k - 2), [big_s, 1.0] + [big_s] * (k - 2))
    add("zero", [], [])
    add("zero", [1.5, -1.5], [2.0, 2.0])
    add("zero", [1.0], [1.0], -1.0)                        # the addend cancels the product
    mx = fi.max
    small = fi.quantize(rng.standard_normal(k - 2))
    add("cancel", [mx, *small, -mx], [1.0] * k)
    add("cancel", [mx, -mx * (1 - 2.0 ** -fi.man_bits)], [1.0, 1.0])
    if top is not None:
        tiny = _pow2_pair(fi, T - (23 + u.extra_bits) - 4)
        if tiny is not None:
            add("below-window", [top[0]] + [tiny[0]] * (k - 1), [top[1]] + [tiny[1]] * (k - 1))
            add("below-window", [top[0]] + [-tiny[0]] * (k - 1), [top[1]] + [tiny[1]] * (k - 1))
    sub = fi.min_subnormal
    add("subnormal", [sub] * k, [1.0] * k)
    add("subnormal", [sub, fi.min_normal], [fi.max, 1.0])
    add("subnormal", [sub] * k, [sub] * k)
    add("subnormal", [], [], fo.min_subnormal * 3)
    add("subnormal", [sub], [sub], -fo.min_normal)
    p_small = _pow2_pair(fi, fo.emin - 1)                  # a product in the subnormal range
    if p_small is not None:
        add("subnormal", [p_small[0]], [p_small[1]])
        add("subnormal", [p_small[0], -p_small[0] / 2], [p_small[1], p_small[1]])
    add("overflow", [mx] * k, [mx] * k)
    add("overflow", [mx] * k, [mx] * k, fo.max)
    add("overflow", [-mx] * k, [mx] * k, -fo.max)
    specials = []
    if fi.has_nan:
        specials += [([np.nan], [1.0], 0.0)]
    if fi.inf:
        specials += [([np.inf], [1.0], 0.0), ([np.inf], [0.0], 0.0),
                     ([np.inf, -np.inf], [1.0, 1.0], 0.0), ([-np.inf, 1.0], [1.0, 1.0], 0.0)]
    specials += [([1.0], [1.0], np.inf), ([1.0], [1.0], -np.inf), ([1.0], [1.0], np.nan)]
    if fi.inf:
        specials.append(([np.inf], [1.0], -np.inf))
    for a, b, c in specials:
        add("special", a, b, c)
    n_fixed = len(rows)
    assert n_fixed <= MMA_FIXED_MAX, n_fixed
    finite = _finite_codes(fi) if fi.bits <= 16 else None
    for r in range(count):
        if r % 2 == 0:
            if finite is not None:
                xa = fi.decode(rng.choice(finite, size=k))
                xb = fi.decode(rng.choice(finite, size=k))
            else:                                          # wide formats: any magnitude
                xa = fi.quantize(rng.standard_normal(k) * np.exp2(rng.integers(-20, 20, k)))
                xb = fi.quantize(rng.standard_normal(k) * np.exp2(rng.integers(-20, 20, k)))
            c = 0.0
            kind = "random"
        else:
            xa = fi.quantize(rng.standard_normal(k), saturate=True)
            xb = fi.quantize(rng.standard_normal(k), saturate=True)
            c = float(fo.quantize(np.array(rng.standard_normal() * 4), saturate=True)) \
                if r % 4 == 1 else 0.0
            kind = "gaussian"
        add(kind, xa, xb, c)
    A = fi.quantize(np.stack([r[1] for r in rows]))        # exact: every value is one of fi
    B = fi.quantize(np.stack([r[2] for r in rows]))
    C = fo.quantize(np.array([r[3] for r in rows]))
    with np.errstate(invalid="ignore", over="ignore"):
        D = mma(A[:, None, :], B[:, :, None], C[:, None, None], u, fi, fo)[:, 0, 0]
    ca, cb = fi.encode(A), fi.encode(B)
    cc, cd = fo.encode(C), fo.encode(D.astype(np.float64))
    return [MmaVector(kind=rows[r][0], a_codes=tuple(int(x) for x in ca[r]),
                      b_codes=tuple(int(x) for x in cb[r]), c_code=int(cc[r]),
                      d_code=int(cd[r]), d_value=float(D[r])) for r in range(len(rows))]


def write_mma_vectors(vectors: list[MmaVector], in_format, out_format, path: str,
                      style: str = "csv", header: list[str] | None = None) -> None:
    """Write mma vectors as CSV (``index,kind,a_codes,b_codes,c_code,d_code,d_value``; code lists
    are space-separated hex, k order) or hex lines (``AA.. BB.. CC DD``: all a codes, all b
    codes, the addend's code, the expected result's code)."""
    _check_style(style)
    fi = _element_format(in_format, "in_format")
    fo = _element_format(out_format, "out_format")
    wi, wo = (fi.bits + 3) // 4, (fo.bits + 3) // 4
    with _open(path) as fh:
        _write_header(fh, style, header)
        if style == "csv":
            fh.write("index,kind,a_codes,b_codes,c_code,d_code,d_value\n")
        for i, v in enumerate(vectors):
            if style == "csv":
                a_hex = " ".join(f"{c:0{wi}X}" for c in v.a_codes)
                b_hex = " ".join(f"{c:0{wi}X}" for c in v.b_codes)
                fh.write(f"{i},{v.kind},{a_hex},{b_hex},{v.c_code:0{wo}X},{v.d_code:0{wo}X},"
                         f"{v.d_value!r}\n")
            else:
                fh.write(f"{''.join(f'{c:0{wi}X}' for c in v.a_codes)} "
                         f"{''.join(f'{c:0{wi}X}' for c in v.b_codes)} "
                         f"{v.c_code:0{wo}X} {v.d_code:0{wo}X}\n")


def _take_bits(random_bits, n: int, what: str) -> np.ndarray:
    """The first ``n`` of the caller's stochastic-rounding bits (a 1-D array, one per
    ``what``); ``ValueError`` when it is not 1-D or holds fewer."""
    r = np.asarray(random_bits)
    if r.ndim != 1:
        raise ValueError(f"random_bits must be a 1-D array (one value per {what}), got shape "
                         f"{r.shape}")
    if r.size < n:
        raise ValueError(f"random_bits holds {r.size} values; these vectors need {n} (one per "
                         f"{what}: lower count or give more bits)")
    return r[:n]
