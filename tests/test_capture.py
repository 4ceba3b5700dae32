"""Tensors captured from a model feed the analyzer's measured format metrics."""

import json

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.metrics import load_tensors, save_tensors
from explorer.train.capture import capture_tensors
from explorer.train.model import Decoder, ModelConfig


def test_capture_weights_activations_gradients(tmp_path, capsys):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(layers=1, d_model=64, vocab_size=256))
    x = torch.randint(0, 256, (2, 32))
    t = capture_tensors(model, x, torch.roll(x, -1, 1), max_elements=1000)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for n in names:
        assert {f"{n}.weight", f"{n}.input", f"{n}.grad_output"} <= set(t)
    w = dict(model.named_modules())[names[0]].weight.detach().numpy().reshape(-1)
    assert set(t[f"{names[0]}.weight"].tolist()) <= set(w.astype(np.float32).tolist())
    assert all(a.size <= 1000 and np.isfinite(a).all() for a in t.values())
    assert all(p.grad is None for p in model.parameters())          # model left clean
    path = tmp_path / "t.npz"
    save_tensors(path, t)
    assert load_tensors(path).keys() == t.keys()
    code = main(["recommend", "--bits", "4", "--measure", "--samples", "1024",
                 "--tensors", str(path), "--json"])
    d = json.loads(capsys.readouterr().out)
    sq = d["widths"][0]["best"]["metrics"]["sqnr_db"]
    assert code == 0 and f"{names[0]}.weight/tensor" in sq


def test_tensors_without_measure_is_an_error(tmp_path, capsys):
    path = tmp_path / "t.npz"
    np.savez(path, a=np.ones(4))
    assert main(["recommend", "--bits", "4", "--tensors", str(path)]) == 2


def test_missing_tensors_file_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="^--tensors: file not found"):
        load_tensors(tmp_path / "none.npz", name="--tensors")
    assert main(["recommend", "--bits", "4", "--measure", "--tensors",
                 str(tmp_path / "none.npz")]) == 2
