"""Scaling-block sizes: the one parser of block specs and the one log2 B of the project.

A block is the number of consecutive elements that share one high-precision scale factor:

* an integer B >= 1 (B = 1: every element has its own scale, so no quantization penalty);
* ``"channel"``: one scale per row along the reduction axis;
* ``"tensor"``: one scale for the whole tensor;
* None: no scale at all (elements cast directly, or an unquantized run).

Sun et al. (arXiv 2501.02423, §3.6) found that channel-wise scaling acts in their law like a
block of log2 B ≈ 13.1567 elements.  Standard library only: training, the analyzer and the report
all import this module.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

#: Sun et al. §3.6: channel-wise scaling behaves like a block of log2 B ≈ 13.1567 elements.
CHANNEL_LOG2B = 13.1567
#: Tensor-wise scaling.  Sun et al. fit log2 B_tensor as a power law in N and D (Fig. 12) but do
#: not publish its constants; following the project contract it is treated like channel-wise.
TENSOR_LOG2B = CHANNEL_LOG2B

#: Block specs that are not a number of elements, with the log2 B the scaling law uses for each.
WHOLE_AXIS_LOG2B: dict[str, float] = {"channel": CHANNEL_LOG2B, "tensor": TENSOR_LOG2B}
#: Words that mean "no scaling factor" to :func:`parse_block`.
NO_BLOCK_WORDS = ("", "none")
#: Words that mean an unquantized run to :func:`block_log2` (log2 B = 0: no penalty).
UNQUANTIZED_WORDS = ("none", "bf16", "unquantized")

Block = int | Literal["channel", "tensor"] | None


def parse_block(block: object, *, name: str = "block", allow_none: bool = True) -> Block:
    """A block spec as an int >= 1, ``"channel"``, ``"tensor"`` or None (no scaling).

    Accepts ints and their decimal strings (``"32"``), the two words in any case, and, with
    ``allow_none``, None, ``""`` and ``"none"``.  ``TypeError`` for a bool; ``ValueError``
    naming ``name`` and the allowed values for anything else.
    """
    if isinstance(block, bool):
        raise TypeError(_expected(name, allow_none, block))
    if block is None and allow_none:
        return None
    if isinstance(block, numbers.Integral):
        if block < 1:
            raise ValueError(f"{name}: block size must be >= 1, got {block}")
        return int(block)
    if isinstance(block, str):
        word = block.strip().lower()
        if allow_none and word in NO_BLOCK_WORDS:
            return None
        if word in WHOLE_AXIS_LOG2B:
            return word  # type: ignore[return-value]
        try:
            size = int(word)
        except ValueError:
            raise ValueError(_expected(name, allow_none, block)) from None
        return parse_block(size, name=name)
    raise ValueError(_expected(name, allow_none, block))


def _expected(name: str, allow_none: bool, got: object) -> str:
    words = "'channel', 'tensor' or 'none'" if allow_none else "'channel' or 'tensor'"
    return f"{name}: expected an integer block size >= 1, {words}, got {got!r}"


def block_log2(block: object, *, name: str = "B") -> float:
    """log2 B of one block for the scaling law.

    ``block``: a real number >= 1 (fitted or synthetic data may carry B = 2**13.1567), its
    decimal string, ``"channel"``/``"tensor"`` (:data:`CHANNEL_LOG2B`), or None and the words of
    :data:`UNQUANTIZED_WORDS` for an unquantized run (0: the law reduces to its base part).
    ``TypeError`` for a bool; ``ValueError`` naming ``name`` for anything else.
    """
    if block is None:
        return 0.0
    if isinstance(block, bool):
        raise TypeError(f"{name}: expected a block size >= 1, 'channel' or 'tensor', "
                        f"got {block!r}")
    if isinstance(block, str):
        word = block.strip().lower()
        if word in UNQUANTIZED_WORDS:
            return 0.0
        if word in WHOLE_AXIS_LOG2B:
            return WHOLE_AXIS_LOG2B[word]
        try:
            size = float(word)
        except ValueError:
            raise ValueError(f"{name}: expected a block size >= 1, 'channel' or 'tensor', "
                             f"got {block!r}") from None
    else:
        size = float(block)  # type: ignore[arg-type]
    if not math.isfinite(size) or size < 1.0:
        raise ValueError(f"{name}: block size must be a finite number >= 1, got {block!r}")
    return math.log2(size)

