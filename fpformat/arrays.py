"""Input and output arrays: which dtypes the kernels accept and how they travel.

The kernels read float32 or float64 bit patterns.  float16 and bfloat16 inputs are widened to
float32 exactly (every float16/bfloat16 is a float32), and results that must come back in the
input's dtype are narrowed exactly (the caller checks that the format's values fit that dtype).
bfloat16 arrays may be ml_dtypes arrays or torch tensors.  This module is the one home of the
float dtype names: :func:`float_kind` reads any spelling (numpy, ml_dtypes, torch, a string).
CPU torch tensors are read and written through their own methods, so fpformat imports torch in
:mod:`fpformat.torch` alone; ml_dtypes is imported only to give bfloat16 results its dtype.
"""

from __future__ import annotations

import numpy as np

# numpy >= 1.25 keeps its exceptions in np.exceptions
_TooHard = getattr(getattr(np, "exceptions", np), "TooHardError")

#: The float dtypes the kernels accept, by name.
FLOAT_KINDS = ("float16", "bfloat16", "float32", "float64")

#: Per float kind: (mantissa bits, exponent of the smallest subnormal quantum, largest exponent).
FLOAT_LAYOUTS = {"float16": (10, -24, 15), "bfloat16": (7, -133, 127),
                 "float32": (23, -149, 127), "float64": (52, -1074, 1023)}


def float_kind(dtype) -> str:
    """The name of a float dtype in any spelling (``np.float32``, ``"float32"``, an ml_dtypes or
    torch dtype); ``TypeError`` for anything else."""
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "")
    if name in FLOAT_KINDS:
        return name
    try:
        name = np.dtype(dtype).name
    except TypeError:
        pass
    if name in FLOAT_KINDS:
        return name
    raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {dtype}")


def is_cuda_array(x) -> bool:
    """True for anything exposing ``__cuda_array_interface__`` (numba, CuPy, torch CUDA) and for
    numba's own device arrays, simulated ones included (under ``NUMBA_ENABLE_CUDASIM`` they have
    no interface, only numba's ``__cuda_ndarray__`` mark)."""
    if _is_torch(x):                    # torch raises RuntimeError (not AttributeError) on the
        return bool(getattr(x, "is_cuda", False))   # interface of a tensor requiring grad
    if isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__cuda_array_interface__") or bool(getattr(x, "__cuda_ndarray__", False))


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


#: numpy's own float dtypes by kind name (looked up before the slow ``dtype.name``).
_NATIVE_KINDS = {np.dtype(n): n for n in ("float16", "float32", "float64")}


def as_float_array(x) -> tuple[np.ndarray, str]:
    """Return ``(array, kind)``: a float32/float64 numpy array holding ``x``'s values exactly and
    the name of ``x``'s float kind.  Raises ``TypeError`` for non-float inputs."""
    if _is_torch(x):
        return _torch_values(x)
    if isinstance(x, np.ndarray) or np.isscalar(x) and hasattr(x, "dtype"):
        arr = np.asarray(x)
    else:
        arr = np.asarray(x)
        if arr.dtype.kind in "iub":                  # Python ints/lists: treat as real numbers
            arr = arr.astype(np.float64)
    if not arr.dtype.isnative:                      # big-endian data: the kernels read bits
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = _NATIVE_KINDS.get(arr.dtype) or arr.dtype.name      # dtype.name is slow
    if kind not in FLOAT_KINDS:
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 array, "
                        f"got dtype {arr.dtype}")
    return _widened(arr, kind), kind


def _widened(arr: np.ndarray, kind: str) -> np.ndarray:
    """float16 (numpy's conversion) and bfloat16 (any 2-byte dtype holding its bits) widened to
    float32 exactly, NaN payloads and signs kept; float32/float64 as they are."""
    if kind == "float16":
        return arr.astype(np.float32)
    if kind == "bfloat16":
        wide = (np.ascontiguousarray(arr).view(np.uint16).astype(np.uint32) << np.uint32(16))
        return wide.view(np.float32)
    return arr


def check_out(x, out: np.ndarray) -> None:
    """The ``out=`` rules every quantize shares: ``out`` is writeable, and it is either ``x``
    itself (in place: each element is read before it is written) or shares no memory with
    ``x`` (a partial overlap would read values the call has already overwritten)."""
    if not out.flags.writeable:
        raise ValueError("out is read-only: pass a writeable array, or omit out")
    if not isinstance(x, np.ndarray) or not np.may_share_memory(x, out):
        return
    same = (x.__array_interface__["data"][0] == out.__array_interface__["data"][0]
            and x.shape == out.shape and x.strides == out.strides and x.dtype == out.dtype)
    if same:
        return
    try:
        overlap = np.shares_memory(x, out, max_work=1 << 20)
    except _TooHard:                                # undecided within the bound: refuse
        overlap = True
    if overlap:
        raise ValueError("out overlaps x without being x itself: pass out=x to quantize in "
                         "place, or a separate array")


def restore_dtype(out: np.ndarray, kind, like=None):
    """Convert a float32/float64 result back to ``kind`` and to a torch tensor when ``like``
    is one.

    One rounding (to nearest even) from the result's exact value -- exact when the values fit
    ``kind`` --, NaN keeping its sign (a quiet NaN: the CPU's rule, docs/numerics.md).  A torch
    result gets the numpy result's bits: torch's own conversions round float64 to float16 via
    float32 (twice) and write its float32 -> bfloat16 NaN with a fixed sign."""
    name = kind if isinstance(kind, str) else getattr(kind, "name", str(kind))
    if like is not None and _is_torch(like):
        if name not in FLOAT_KINDS:
            raise TypeError(f"dtype must be one of {', '.join(FLOAT_KINDS)}, got {kind}")
        res = np.asarray(restore_dtype(out, name))
        if name != "bfloat16":
            return like.new_tensor(res)                  # same dtype: a copy of the bits
        int16 = like.new_zeros(()).short().dtype         # torch.int16, via like
        bits = np.require(res, requirements="C").view(np.int16)
        return like.new_tensor(bits, dtype=int16).view(like.dtype)
    if name == "float16":
        out = out.astype(np.float16)
    elif name == "bfloat16":
        # float64 results (element x scale products) are rounded once: to float32 by round to
        # odd (24 bits, enough for a later nearest rounding to 8), then to nearest even
        f32 = _f64_to_f32_odd(out) if out.dtype == np.float64 else \
            np.ascontiguousarray(out, dtype=np.float32)
        u16 = _f32_to_bf16_bits(f32)
        if like is not None and not _is_torch(like):
            out = u16.view(np.asarray(like).dtype)
        else:
            out = _bf16_dtype_view(u16)
    elif name in ("float32", "float64"):
        out = out.astype(name, copy=False)
    else:
        raise TypeError(f"dtype must be one of {', '.join(FLOAT_KINDS)}, got {kind}")
    return out


def tensor_kind(t) -> str:
    """The float kind of a torch tensor; ``TypeError`` naming its dtype otherwise."""
    kind = str(t.dtype).replace("torch.", "")
    if kind not in FLOAT_KINDS:
        raise TypeError(f"tensor dtype must be float16, bfloat16, float32 or float64, "
                        f"got {t.dtype}")
    return kind


def _torch_values(t) -> tuple[np.ndarray, str]:
    """``as_float_array`` of a CPU torch tensor: a float32/float64 view, or an exact float32
    copy of a float16/bfloat16 tensor widened from its bits as a numpy array of that dtype is
    (so a tensor and an array with the same bits give the same results, NaNs included)."""
    kind = tensor_kind(t)
    if t.device.type != "cpu":
        raise ValueError(f"expected a CPU tensor, got device {t.device}")
    t = t.detach().contiguous()
    if kind == "bfloat16":
        t = t.view(t.new_zeros(()).short().dtype)        # torch.int16 (numpy has no bfloat16)
    return _widened(t.numpy(), kind), kind


def _f64_to_f32_odd(f64: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd (an inexact result gets an odd last bit), so that a
    following round to nearest of at most 22 bits equals rounding the float64 once."""
    f64 = np.ascontiguousarray(f64, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = f64.astype(np.float32)
        back = f32.astype(np.float64)
    b = f32.view(np.uint32).copy()
    adjust = (back != f64) & ~np.isnan(f64) & ((b & np.uint32(1)) == 0)
    down = adjust & (np.abs(back) > np.abs(f64))             # one ulp toward the exact value
    b[down] -= np.uint32(1)
    b[adjust & ~down] += np.uint32(1)
    return b.view(np.float32)


def _f32_to_bf16_bits(f32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even (exact for values that are
    bfloat16 values; NaN stays a quiet NaN with its sign)."""
    b = f32.view(np.uint32).astype(np.uint64)
    rounded = (b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = np.isnan(f32)
    out = rounded.astype(np.uint16)
    out[nan] = ((b[nan] >> np.uint64(16)) | np.uint64(0x0040)).astype(np.uint16)
    return out


def _bf16_dtype_view(u16: np.ndarray):
    try:
        import ml_dtypes  # optional: only to give bfloat16 numpy results a bfloat16 dtype
    except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
        return u16
    return u16.view(ml_dtypes.bfloat16)
