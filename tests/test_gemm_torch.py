"""fpformat.gemm_torch: emulated GEMMs inside autograd."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fpformat.gemm import Accumulator, matmul  # noqa: E402
from fpformat.gemm_torch import emulated_linear, emulated_mm  # noqa: E402


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 40, generator=g, requires_grad=True)
    w = torch.randn(5, 40, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    return x, w, b


def test_float32_accumulator_is_close_to_torch_and_gradients_flow():
    x, w, b = _data()
    y = emulated_linear(x, w, b, Accumulator("float32"))
    ref = torch.nn.functional.linear(x, w, b)
    assert y.shape == ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    gx, gw, gb = x.grad.clone(), w.grad.clone(), b.grad.clone()
    x.grad = w.grad = b.grad = None
    ref.sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, b.grad)


def test_forward_equals_numpy_emulation_and_narrow_accumulator_differs():
    x, w, b = _data(1)
    acc = Accumulator("e5m4", "rtz")
    y = emulated_linear(x, w, None, acc, backward_acc=None)
    want = matmul(x.detach().reshape(-1, 40).double().numpy(), w.detach().double().numpy().T,
                  accumulator=acc)
    assert np.array_equal(y.detach().reshape(-1, 5).double().numpy(), want)
    assert (y - torch.nn.functional.linear(x, w)).abs().max() > 1e-2
    # The backward GEMMs use the given backward accumulator.
    y.sum().backward()
    gw_plain = w.grad.clone()
    w.grad = None
    emulated_linear(x, w, None, acc, backward_acc=acc).sum().backward()
    assert not torch.equal(gw_plain, w.grad)
    gy = torch.ones(6, 5)
    want_gw = emulated_mm(gy.t().contiguous(), x.detach().reshape(-1, 40), acc)
    assert torch.equal(w.grad, want_gw)


def test_errors():
    x, w, b = _data()
    with pytest.raises(ValueError, match="backward_acc"):
        emulated_linear(x, w, b, Accumulator(), backward_acc="other")
    with pytest.raises(ValueError, match="chain"):
        emulated_linear(x, w.t(), b)
    with pytest.raises(TypeError, match="acc"):
        emulated_mm(x[0], w.t(), "e8m13")
