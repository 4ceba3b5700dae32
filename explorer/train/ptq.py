"""Post-training quantization (PTQ) of a trained run's checkpoints, recorded in the ``ptq`` table.

For every checkpoint ``tokens_<n>.pt`` of a run (weights kept at several token counts of the same
run), the GEMM weights of the transformer blocks (the ones counted in N; embeddings and classifier
stay as they are) are quantized along their input (reduction) axis with a chosen element/block
format and the held-out loss is measured before and after.  Any quantization the run was *trained*
with is removed first, so ``val_loss_before`` is the full-precision model and the increase is
the PTQ degradation alone (Ouyang et al.'s QiD: ``ΔL = val_loss_after - val_loss_before``).

Methods: ``"rtn"`` (round to nearest even, every weight independently) and ``"gptq"`` (GPTQ-style
error compensation: columns quantized in order, the error of each spread over the remaining
columns through the inverse Hessian of calibration activations from the training split; block
scales are fixed from the original weights first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.blocks import parse_block
from fpformat import get_format
from fpformat.torch import quantize_values

from . import store
from .data import load_corpus, train_batch
from .model import Decoder
from .qlinear import OperandSpec, dequantize_model
from .trainer import TrainConfig, evaluate, load_checkpoint

METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class PTQSpec:
    """One PTQ format: element ``fmt`` name, ``block`` (int, 'channel', 'tensor', None), method."""

    fmt: str
    block: int | str | None = "channel"
    method: str = "rtn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block", parse_block(self.block))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        OperandSpec(self.fmt, self.block).build()   # validates the format name now

    @property
    def operand(self) -> OperandSpec:
        return OperandSpec(self.fmt, self.block, "rne")

    @property
    def label(self) -> str:
        return self.operand.label()

    @property
    def bits(self) -> int:
        f = self.operand.build()
        return int(getattr(f, "element", f).bits)


def _quantize_rtn(w: torch.Tensor, spec: PTQSpec) -> torch.Tensor:
    return quantize_values(w.detach().contiguous(), spec.operand.build(), rounding="rne",
                           saturate=True)


def _group_scales(w: torch.Tensor, spec: PTQSpec) -> torch.Tensor:
    """Per-element scale S = amax/max_elem of the element's block (Sun et al.'s rule)."""
    emax = float(get_format(spec.fmt).max)
    _, in_f = w.shape
    a = w.detach().abs()
    if spec.block is None:
        return torch.ones_like(w)
    if spec.block == "tensor":
        s = a.max().clamp_min(1e-30) / emax
        return s.expand_as(w).clone()
    size = in_f if spec.block == "channel" else int(spec.block)
    s = torch.empty_like(w)
    for j in range(0, in_f, size):
        amax = a[:, j:j + size].amax(dim=1, keepdim=True).clamp_min(1e-30)
        s[:, j:j + size] = amax / emax
    return s


def _quantize_gptq(w: torch.Tensor, H: torch.Tensor, spec: PTQSpec,
                   damp: float = 0.01) -> torch.Tensor:
    """GPTQ (Frantar et al., 2022) with fixed block scales: columns in order, errors compensated
    through the upper Cholesky factor of the damped inverse Hessian ``(X^T X)^-1``."""
    if getattr(get_format(spec.fmt), "element", None) is not None:
        raise ValueError("gptq needs an element format with an explicit block, not a block preset")
    el = get_format(spec.fmt)
    W = w.detach().double().clone()
    S = _group_scales(w, spec).double()
    n = W.shape[1]
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for j in range(n):
        col = W[:, j]
        q = quantize_values((col / S[:, j]).contiguous(), el, rounding="rne",
                            saturate=True) * S[:, j]
        Q[:, j] = q
        err = (col - q) / Hinv[j, j]
        W[:, j:] -= err.unsqueeze(1) * Hinv[j, j:].unsqueeze(0)
    return Q.to(w.dtype)


def _block_linears(model: Decoder) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.blocks.named_modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def quantize_weights(model: Decoder, spec: PTQSpec, calib: torch.Tensor | None = None) -> Decoder:
    """Quantize the block GEMM weights of ``model`` in place (``calib``: token ids for GPTQ)."""
    lins = _block_linears(model)
    if spec.method == "rtn":
        for _, m in lins:
            m.weight.copy_(_quantize_rtn(m.weight, spec))
        return model
    if calib is None:
        raise ValueError("gptq needs calibration tokens")
    Hs: dict[int, torch.Tensor] = {}

    def hook(mod, inp, _out):
        x = inp[0].reshape(-1, inp[0].shape[-1]).double()
        Hs[id(mod)] = Hs.get(id(mod), 0) + x.t() @ x

    # Sequential GPTQ: layer by layer, calibration activations through already-quantized layers.
    for _, m in lins:
        h = m.register_forward_hook(hook)
        model(calib)
        h.remove()
        m.weight.copy_(_quantize_gptq(m.weight, Hs.pop(id(m)), spec))
    return model


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(tokens, path)`` of every ``tokens_<n>.pt`` in ``run_dir``, by tokens."""
    out = []
    for p in Path(run_dir).glob("tokens_*.pt"):
        m = re.fullmatch(r"tokens_(\d+)\.pt", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def ptq_run(db: str | Path, key: str, specs: list[PTQSpec], *,
            ckpt_dir: str | Path | None = None, device: str = "cpu",
            cache_dir: str | Path | None = None, calib_seqs: int = 32) -> list[dict]:
    """PTQ every checkpoint of the finished run ``key`` with every spec; rows already in the
    ``ptq`` table are skipped.  Returns the rows written.  Checkpoints are loaded without running
    code (:func:`~explorer.train.trainer.load_checkpoint`): a damaged or planted one stops with a
    ``CheckpointError`` (``ValueError``) naming the file, after the rows of the checkpoints
    before it are recorded."""
    row = store.get_run(db, key)
    if row is None or row["status"] != "finished":
        raise ValueError(f"run {key!r} is not a finished run in {db}")
    cfg = TrainConfig.from_dict(json.loads(row["config_json"])["train"])
    corpus = load_corpus(cfg.corpus, None, cache_dir)
    run_dir = Path(ckpt_dir if ckpt_dir is not None else str(db) + ".ckpt") / key
    ckpts = checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints tokens_*.pt in {run_dir}")
    done = store.ptq_done(db, key)
    dev = torch.device(device)
    eval_bs = max(cfg.batch_size, 16)
    x, _ = train_batch(corpus.train, calib_seqs, cfg.seq_len, cfg.seed + 10_000, 0)
    calib = torch.from_numpy(x).to(dev)
    written = []
    for tokens, path in ckpts:
        todo = [s for s in specs if (tokens, s.label, s.method) not in done]
        if not todo:
            continue
        base, _ = load_checkpoint(path, device)
        dequantize_model(base)
        before = evaluate(base, corpus.val, cfg.eval_tokens, eval_bs, cfg.seq_len, dev)
        for s in todo:
            model, _ = load_checkpoint(path, device)
            dequantize_model(model)
            quantize_weights(model, s, calib)
            after = evaluate(model, corpus.val, cfg.eval_tokens, eval_bs, cfg.seq_len, dev)
            r = dict(run_key=key, ckpt_tokens=tokens, fmt=s.label, bits=s.bits, method=s.method,
                     val_loss_before=before, val_loss_after=after, n_params=row["n_params"])
            store.record_ptq(db, **r)
            written.append(r)
    return written
