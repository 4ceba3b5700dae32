"""fpformat: a bit-exact emulator of arbitrary ExMy floating-point formats with block scaling.

    from fpformat import FloatFormat, BlockFormat, get_format
    f = get_format("float8_e4m3fn")
    codes = f.encode(x, rounding="rne", saturate=False)
    y = f.quantize(x)                      # == f.decode(codes), in x's dtype

One scalar core (:mod:`fpformat.core`) is compiled for the CPU (:mod:`fpformat.kernels`) and for
CUDA (:mod:`fpformat.cuda`); semantics are pinned in docs/numerics.md.
"""

from ._cache import invalidate_stale_cache

invalidate_stale_cache()              # numba's cache does not notice edits to the inlined core

from .block import BlockFormat  # noqa: E402
from .format import CodeClass, FloatFormat  # noqa: E402
from .intformat import IntFormat  # noqa: E402
from .presets import ELEMENT_PRESETS, get_format  # noqa: E402
from .scales import BlockEncoding  # noqa: E402

__all__ = ["FloatFormat", "BlockFormat", "IntFormat", "BlockEncoding", "CodeClass", "get_format",
           "ELEMENT_PRESETS"]
__version__ = "0.1.0"
