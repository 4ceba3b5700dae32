"""How the CPU kernels are run: numba options, threads, specialisation and random streams.

Shared by the element kernels (:mod:`fpformat.kernels`), the block kernels
(:mod:`fpformat.block_kernels`, :mod:`fpformat.block_core`), the GPU kernels
(:mod:`fpformat.cuda`) and the matrix units (:mod:`fpformat.gemm`), so that they agree on what a
seed means, which source layout the core reads and when a specialised compilation pays off.

Each CPU loop exists in two compilations of the same source: *generic* (the format and call
tuples are runtime arguments; one compilation serves every format and mode) and *specialised*
(the tuples are compile-time constants, so the compiler folds the mode and the format away).
A specialised compilation costs about a second for an element kernel and 10 to 30 seconds for a
block kernel (measured on one Ice Lake core; cached on disk by numba), so a combination is
specialised once it has processed ``SPECIALIZE_AFTER`` elements in this process, or at once after
:func:`fpformat.kernels.specialize`.  ``FPFORMAT_SPECIALIZE=never|always`` overrides the policy.
"""

from __future__ import annotations

import os
import threading
import types
from typing import Any, Callable

import numba
import numpy as np

from . import core

#: Options of every CPU kernel: threads, numba's on-disk cache, no GIL, numpy float semantics.
JIT = dict(parallel=True, cache=True, nogil=True, error_model="numpy")
#: :data:`JIT` without threads, for the one-thread twin of a short loop (a call that enters a
#: parallel region pays for it even on one thread).
SERIAL_JIT = dict(cache=True, nogil=True, error_model="numpy")


def njit_as(py_func, suffix: str, options: dict):
    """``numba.njit(**options)(py_func)`` under the name ``py_func``'s plus ``suffix``: for a
    second compilation of one source (the one-thread twin of a threaded loop).  numba's
    on-disk cache tells compilations apart by the function's name, code, closure and
    signature, not by the options they were compiled with: two compilations of one function
    would share its cache entries, and a later process would load whichever was saved last
    for both."""
    twin = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + suffix,
                              py_func.__defaults__, py_func.__closure__)
    twin.__qualname__ = py_func.__qualname__ + suffix
    twin.__module__, twin.__doc__ = py_func.__module__, py_func.__doc__
    return numba.njit(**options)(twin)


#: Elements per (kernel, format, call, source) before the specialised compilation is used.
SPECIALIZE_AFTER = 1 << 26
#: Elements under which a call runs on one thread.
SERIAL_BELOW = 1 << 15


class threads_for:
    """Context manager: run calls of fewer than ``SERIAL_BELOW`` elements on one thread (waking
    the pool costs more than the work, and much more on a busy machine).  ``with threads_for(n)
    as threads``: the number of threads the call runs on; its ``saved``, once entered: numba's
    thread count outside it (the run's: 1 where the whole run is on one thread)."""

    def __init__(self, n: int):
        self.serial = n < SERIAL_BELOW

    def __enter__(self) -> int:
        self.saved = numba.get_num_threads()
        if self.serial and self.saved != 1:
            numba.set_num_threads(1)
        return 1 if self.serial else self.saved

    def __exit__(self, *exc):
        if self.serial and self.saved != 1:
            numba.set_num_threads(self.saved)


class HashedKey(tuple):
    """A specialisation key that hashes once: equal to, and hashed like, the plain tuple of its
    items.  A key holds a format's constant tuples (some 70 numbers), and a training step asks
    about the same few keys a hundred times, where hashing the plain tuple, twice a call, cost
    1.5 to 2 us of a 12 us call (NVFP4, 32 x 32, one thread)."""

    def __new__(cls, items):
        key = super().__new__(cls, items)
        key._hash = tuple.__hash__(key)
        return key

    def __hash__(self) -> int:
        return self._hash


class IdentityCache:
    """Values made from an object once, found again by the object's identity and a few flags
    rather than by its hash (the objects here are kernels' constant tuples, some 70 numbers,
    whose hashing cost a microsecond or two of a call of a few microseconds).  Each entry holds
    its object, so that the object's id stays its own while the entry lives."""

    def __init__(self, make: Callable[..., Any]):
        #: ``make(obj, *flags)``: the value for ``obj`` and ``flags``
        self.make = make
        self._entries: dict[tuple, tuple[Any, Any]] = {}

    def get(self, obj: Any, flags: tuple) -> Any:
        """``make(obj, *flags)``, made on the first request for this object and flags."""
        key = (id(obj), flags)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not obj:
            entry = self._entries[key] = (obj, self.make(obj, *flags))
        return entry[1]


_seen: dict[tuple, int] = {}        # elements processed per specialisation key, this process
_ready: set[tuple] = set()          # the keys past SPECIALIZE_AFTER (the counts stop there)
_seen_lock = threading.Lock()


def want_specialized(key: tuple, n: int) -> bool:
    """Count ``n`` more elements for ``key`` (kernel name and its constant tuples; a
    :class:`HashedKey` where a caller asks often) and say whether the specialised compilation
    should run them."""
    policy = os.environ.get("FPFORMAT_SPECIALIZE", "auto")
    if policy == "never":
        return False
    if policy == "always" or key in _ready:
        return True
    with _seen_lock:
        total = _seen.get(key, 0) + n
        _seen[key] = total
        if total >= SPECIALIZE_AFTER:
            _ready.add(key)
    return total >= SPECIALIZE_AFTER


def prefer_specialized(key: tuple) -> None:
    """Make the next call for ``key`` use the specialised compilation (under the ``auto``
    policy), as if it had already processed ``SPECIALIZE_AFTER`` elements."""
    with _seen_lock:
        _seen[key] = max(_seen.get(key, 0), SPECIALIZE_AFTER)
        _ready.add(key)


def source_layout(fmt, dtype) -> tuple[int, ...]:
    """The source layout (``core.SRC_*``) the core reads inputs of ``dtype`` in for ``fmt``:
    float32 bits where every value of the format is within float32's layout, else float64."""
    if np.dtype(dtype) in (np.float32, np.float16) and fmt.man_bits <= 23 and fmt.emin >= -126:
        return core.SRC_FLOAT32
    return core.SRC_FLOAT64


def seed_key(seed, mode: int) -> np.uint64:
    """The stochastic-rounding stream key for ``seed`` (a fresh random seed for ``None``); 0 for
    the deterministic modes.  ``TypeError`` for a seed that is not an int."""
    if mode != core.SR:
        return np.uint64(0)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return np.uint64(_sr_key(np.uint64(int(seed) % (1 << 64))))   # numba returns an int


#: :func:`fpformat.core.sr_key` compiled: 0.6 us a call against 3.7 us in numpy scalars (a
#: training step derives a key per quantize call).
_sr_key = numba.njit(cache=True, nogil=True)(core.sr_key)
