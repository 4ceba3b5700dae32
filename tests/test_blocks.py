"""explorer.blocks: the one block-spec parser and log2 B, and the places that use them."""

import math

import numpy as np
import pytest

from explorer.blocks import CHANNEL_LOG2B, TENSOR_LOG2B, block_log2, parse_block
from explorer.report import ReportConfig
from explorer.results import run_log2_block


def test_parse_block_accepts_sizes_words_and_none():
    assert parse_block(32) == 32 and parse_block("32") == 32 and parse_block(" 64 ") == 64
    assert parse_block(np.int64(16)) == 16 and type(parse_block(np.int64(16))) is int
    assert parse_block(1) == 1
    assert parse_block("Channel") == "channel" and parse_block("tensor") == "tensor"
    assert parse_block(None) is None and parse_block("none") is None and parse_block("") is None


@pytest.mark.parametrize("bad", [0, -4, "0", "rows", "32.5", 32.0, [32]])
def test_parse_block_rejects_with_the_parameter_name(bad):
    with pytest.raises(ValueError, match="^--block: "):
        parse_block(bad, name="--block")


def test_parse_block_without_none():
    for bad in (None, "none", ""):
        with pytest.raises(ValueError, match="'channel' or 'tensor', got"):
            parse_block(bad, allow_none=False)
    with pytest.raises(TypeError):
        parse_block(True)


def test_block_log2():
    assert CHANNEL_LOG2B == TENSOR_LOG2B == 13.1567
    assert block_log2("channel") == block_log2("TENSOR") == 13.1567
    assert block_log2(32) == 5.0 and block_log2("128") == 7.0 and block_log2(1) == 0.0
    assert block_log2(2 ** 13.1567) == pytest.approx(13.1567, rel=1e-15)
    assert block_log2(None) == block_log2("none") == block_log2("bf16") == 0.0
    for bad in (0, 0.5, "rows", math.inf, math.nan, ""):
        with pytest.raises(ValueError, match="^B: "):
            block_log2(bad)
    with pytest.raises(TypeError, match="^B: "):
        block_log2(False)


def test_runs_table_block_column():
    assert run_log2_block("32") == 5.0 and run_log2_block("channel") == CHANNEL_LOG2B
    assert run_log2_block(None) == run_log2_block("") == TENSOR_LOG2B      # no block: per tensor


def test_report_config_block_uses_the_shared_parser():
    assert ReportConfig(block="32").block == 32 and ReportConfig(block=" Tensor ").block == "tensor"
    assert ReportConfig(block=2).log2_block == 1.0
    assert ReportConfig().log2_block == CHANNEL_LOG2B
    assert ReportConfig(block="tensor").block_label == "channel-wise (log2 B = 13.1567)"
    assert ReportConfig(block=64).block_label == "B = 64"
    with pytest.raises(ValueError, match="no quantization penalty"):
        ReportConfig(block=1)
    with pytest.raises(ValueError, match="^block: "):
        ReportConfig(block="none")
