"""Named formats and the spec grammars: :func:`get_format` and the block presets.

``get_format(name)`` accepts:

* element preset names, aliases, P3109 names ``binary<K>p<P><s|u><e|f>`` and element spec
  strings ``[u]e<E>m<M>[b<BIAS>][fin|fn|fnuz|ieee][_ftz]`` (the tables and the grammars:
  :mod:`fpformat.names`; every name: docs/names.md), e.g. ``float8_e4m3fn``, ``e4m3`` (Sun et
  al.'s convention; max 480), ``e3m4b5``, ``ue4m3fn``, ``binary8p3se``; ``e8m0`` and ``ue8m0``
  are OCP's E8M0 (``float8_e8m0fnu``);
* torch, numpy and ml_dtypes dtype objects and scalar types (``torch.bfloat16``,
  ``ml_dtypes.float8_e4m3fn``, ``np.dtype(ml_dtypes.float4_e2m1fn)``, ``np.float16``), by name;
* block presets (``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e2m3``, ``mxfp6_e3m2``, ``mxfp4``,
  ``mxint8``, ``nvfp4``) and block specs ``ELEMENT/BLOCK[/SCALE][/RULE][@axisN]``
  (:func:`get_block_format`; the semantics: :mod:`fpformat.block`).

Names are case-insensitive.  ``fpx info NAME`` shows any of them.
"""

from __future__ import annotations

import re

from .block import BlockFormat
from .format import FloatFormat, element_format, parse_element_spec
from .intformat import IntFormat, int_format
from .names import ELEMENT_PRESET_FIELDS, canonical_name, dtype_name
from .scales import is_pow2_format

#: The element preset names (``get_format`` also takes aliases and element specs).
ELEMENT_PRESETS = tuple(ELEMENT_PRESET_FIELDS)

__all__ = ["BLOCK_PRESETS", "ELEMENT_PRESETS", "element_format", "get_block_format",
           "get_format", "parse_element_spec"]


def get_format(name):
    """A `FloatFormat` or `BlockFormat` by preset name, alias, spec string or dtype object
    (instances pass through).

    Raises ``ValueError`` naming the unknown format.
    """
    if isinstance(name, (FloatFormat, BlockFormat, IntFormat)):
        return name
    if not isinstance(name, str):
        name = _dtype_format_name(name)
    intf = int_format(name)           # int8, int4...: two's-complement integers (IntFormat)
    if intf is not None:
        return intf
    key = canonical_name(name)
    if key in ELEMENT_PRESET_FIELDS:
        return element_format(key)
    block = get_block_format(key)
    if block is not None:
        return block
    return element_format(key)


def _dtype_format_name(obj) -> str:
    """The format name of a torch, numpy or ml_dtypes dtype object or scalar type
    (:func:`fpformat.names.dtype_name`); ``TypeError`` for other objects, ``ValueError`` for a
    packed dtype."""
    name = dtype_name(obj)
    if name is None:
        raise TypeError(f"format must be a name string, FloatFormat, BlockFormat or a torch/"
                        f"numpy/ml_dtypes dtype, got {type(obj).__name__}")
    if name.endswith("_x2"):                # torch.float4_e2m1fn_x2: two codes in one byte
        raise ValueError(f"format {obj}: a packed dtype (two {name[:-3]} codes per byte); the "
                         f"element format is get_format({name[:-3]!r})")
    return name


# --------------------------------------------------------------------------------- block presets
def _mx(element: str, name: str) -> BlockFormat:
    return BlockFormat(element, 32, scale_format="float8_e8m0fnu", scale_rule="ocp", name=name)


BLOCK_PRESETS: dict[str, BlockFormat] = {
    "mxfp8_e4m3": _mx("float8_e4m3fn", "mxfp8_e4m3"),
    "mxfp8_e5m2": _mx("float8_e5m2", "mxfp8_e5m2"),
    "mxfp6_e2m3": _mx("float6_e2m3fn", "mxfp6_e2m3"),
    "mxfp6_e3m2": _mx("float6_e3m2fn", "mxfp6_e3m2"),
    "mxfp4": _mx("float4_e2m1fn", "mxfp4"),
    # MXINT8: 8-bit two's-complement integers with an implicit scale 2**-6, k/64 for
    # |k| <= 127 (-128 is never produced: the symmetric range OCP recommends).
    "mxint8": BlockFormat(FloatFormat(0, 7, bias=0, name="int8"), 32,
                          scale_format="float8_e8m0fnu", scale_rule="ocp", int_codes=True,
                          name="mxint8"),
    "nvfp4": BlockFormat("float4_e2m1fn", 16, scale_format="ue4m3fn", scale_rule="nvfp4",
                         name="nvfp4"),
}

_BLOCK_SPEC = re.compile(r"^(?P<el>[^/]+)/(?P<blk>\d+|channel|tensor|\d+x\d+)"
                         r"(?:/(?P<scale>[^/@]+?))?(?:/(?P<rule>ocp|amax|nvfp4)(?P<near>-nearest)?)?"
                         r"(?:@axis(?P<axis>-?\d+))?$")


def get_block_format(name: str) -> BlockFormat | None:
    """A block preset or ``ELEMENT/BLOCK[/SCALE][/RULE][@axisN]`` spec; None for other names.

    ``BLOCK`` is an int, ``channel``, ``tensor`` or ``RxC`` tiles; ``SCALE`` any element format
    name (``e8m0``, ``ue4m3fn``...); ``RULE`` ``ocp`` (default for power-of-two scales), ``amax``
    (default otherwise) or ``nvfp4``, optionally ``-nearest`` for amax scales rounded to nearest.
    """
    key = name.strip().lower()
    if key in BLOCK_PRESETS:
        return BLOCK_PRESETS[key]
    if "/" not in key:
        return None
    m = _BLOCK_SPEC.match(key)
    if not m:
        raise ValueError(f"unknown block format {name!r}: expected ELEMENT/BLOCK[/SCALE][/RULE], "
                         f"e.g. 'e2m1/32/e8m0', 'e4m3/channel', 'e2m1/16/ue4m3fn/nvfp4', "
                         f"'e4m3/128x128'")
    im = re.fullmatch(r"int(\d+)", m["el"])
    if im:                                   # two's-complement integers k * 2**(2 - B)
        bits = int(im[1])
        if not 2 <= bits <= 53:
            raise ValueError(f"block format {name!r}: intB needs 2 <= B <= 53, got {bits}")
        el = FloatFormat(0, bits - 1, bias=0, name=f"int{bits}")
    else:
        el = get_format(m["el"])
    if not isinstance(el, FloatFormat):
        raise ValueError(f"block format {name!r}: the element must be an element format")
    scale = get_format(m["scale"]) if m["scale"] else None
    if scale is not None and not isinstance(scale, FloatFormat):
        raise ValueError(f"block format {name!r}: the scale must be an element format")
    rule = m["rule"] or ("ocp" if scale is not None and is_pow2_format(scale) else "amax")
    blk = m["blk"]
    kw: dict = dict(scale_format=scale, scale_rule=rule,
                    scale_rounding="nearest" if m["near"] else "up", int_codes=bool(im), name=key)
    if m["axis"] is not None:
        kw["axis"] = int(m["axis"])
    if "x" in blk:
        r, c = blk.split("x")
        return BlockFormat(el, 32, tile=(int(r), int(c)), **kw)
    return BlockFormat(el, blk if blk in ("channel", "tensor") else int(blk), **kw)
