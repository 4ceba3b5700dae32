"""Training one run: AdamW + warmup/cosine, deterministic, resumable, recorded in the store.

Recipe (Sun et al.): AdamW with betas (0.9, 0.95), weight decay 0.1 on matrices, gradient
clipping at global norm 1.0, linear warmup then cosine decay to 10 % of the peak learning rate.
The peak learning rate defaults to ``min(3e-3, 0.02/sqrt(d_model))`` (small models take large
rates).  Batches are pure functions of ``(seed, step)`` and checkpoints hold the model, optimizer
and loss curve, so a run killed at any point and restarted gives the same result as one that
was never interrupted.

``TrainConfig`` is everything that determines the numbers (its hash, with the corpus SHA-256,
is the run key); device, checkpoint folder and progress display are run-time options of
:func:`train`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np
import torch

import fpformat
from fpformat import get_format

from ..progress import Progress
from . import store
from .data import (
    Corpus,
    CorpusSpec,
    Tokenizer,
    default_cache_dir,
    eval_batches,
    load_corpus,
    train_batch,
)
from .model import Decoder, ModelConfig, param_count
from .qlinear import QuantConfig, quantize_model, set_quant_step, specialize_kernels


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    layers, d_model, n_heads: model shape (see :class:`ModelConfig`).
    tokens: training tokens D requested; the run takes ``tokens // (batch_size*seq_len)`` steps
        (at least one) and records the tokens actually seen.
    quant: which GEMM inputs are quantized, in which format.
    seq_len, batch_size: tokens per sequence, sequences per step.
    lr: peak learning rate; None -> ``min(3e-3, 0.02/sqrt(d_model))``.
    warmup_frac: share of steps in linear warmup; min_lr_frac: final LR / peak LR.
    eval_tokens: held-out tokens of the final (and every intermediate) validation loss.
    eval_points: number of validation points along the run (the last is the final loss).
    ckpt_fracs: fractions of the run whose model weights are kept for PTQ.
    precision: "fp32" or "bf16" (autocast; CUDA only).
    """

    layers: int
    d_model: int
    tokens: int
    quant: QuantConfig = field(default_factory=QuantConfig)
    n_heads: int | None = None
    seq_len: int = 128
    batch_size: int = 16
    lr: float | None = None
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    eval_tokens: int = 32768
    eval_points: int = 8
    ckpt_fracs: tuple[float, ...] = (0.25, 0.5, 1.0)
    precision: str = "fp32"
    corpus: CorpusSpec = field(default_factory=CorpusSpec)

    def __post_init__(self) -> None:
        for name in ("layers", "d_model", "tokens", "seq_len", "batch_size", "eval_tokens",
                     "eval_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if any(not 0 < f <= 1 for f in self.ckpt_fracs):
            raise ValueError(f"ckpt_fracs must lie in (0, 1], got {self.ckpt_fracs}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not isinstance(self.quant, QuantConfig):
            raise TypeError(f"quant must be a QuantConfig, got {type(self.quant).__name__}")
        object.__setattr__(self, "ckpt_fracs",
                           tuple(sorted(set(float(f) for f in self.ckpt_fracs))))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.model_config(256)   # validates the shape

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(layers=self.layers, d_model=self.d_model, vocab_size=vocab_size,
                           n_heads=self.n_heads, max_seq_len=self.seq_len)

    @property
    def steps(self) -> int:
        return max(self.tokens // (self.batch_size * self.seq_len), 1)

    @property
    def eval_steps(self) -> list[int]:
        """Optimizer steps after which the validation loss is measured (the last is final)."""
        n = self.steps
        return sorted({max(int(round(n * (i + 1) / self.eval_points)), 1)
                       for i in range(self.eval_points)})

    @property
    def ckpt_steps(self) -> list[int]:
        """Optimizer steps whose weights are kept as ``tokens_<n>.pt`` (one per distinct step of
        :attr:`ckpt_fracs`): what PTQ of this run works on."""
        return sorted({max(int(round(self.steps * f)), 1) for f in self.ckpt_fracs})

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else min(3e-3, 0.02 / math.sqrt(self.d_model))

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        n = self.steps
        warm = max(int(round(self.warmup_frac * n)), 1 if self.warmup_frac > 0 else 0)
        if step < warm:
            return self.peak_lr * (step + 1) / warm
        t = (step - warm) / max(n - warm, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * t))
        return self.peak_lr * (self.min_lr_frac + (1 - self.min_lr_frac) * cosine)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quant"] = self.quant.to_dict()
        d["corpus"] = self.corpus.to_dict()
        d["betas"] = list(self.betas)
        d["ckpt_fracs"] = list(self.ckpt_fracs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["quant"] = QuantConfig.from_dict(d.get("quant") or {})
        c = d.get("corpus") or {}
        d["corpus"] = CorpusSpec(paths=tuple(c.get("paths", ())),
                                 max_bytes=c.get("max_bytes", CorpusSpec.max_bytes),
                                 val_fraction=c.get("val_fraction", CorpusSpec.val_fraction))
        d["betas"] = tuple(d.get("betas", (0.9, 0.95)))
        d["ckpt_fracs"] = tuple(d.get("ckpt_fracs", (0.25, 0.5, 1.0)))
        return cls(**d)


class RunInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` when a stop was requested (:func:`set_stop_event`): the run saved
    its resume point ``last.pt`` at a step boundary first and stays ``'running'`` in the store;
    the same call later resumes it exactly."""


_STOP_EVENT = None


def set_stop_event(event) -> None:
    """Install a stop flag for this process: any object with ``is_set()`` (``threading.Event``,
    ``multiprocessing.Event``) or None.  While it is set, a training loop saves its resume point
    at the next step boundary and raises :class:`RunInterrupted` -- a clean stop, unlike a kill,
    which loses up to ``ckpt_every_s`` of work.  Sweep workers use it for SIGINT/SIGTERM."""
    global _STOP_EVENT
    if event is not None and not callable(getattr(event, "is_set", None)):
        raise TypeError(f"event must have an is_set() method, got {type(event).__name__}")
    _STOP_EVENT = event


def stop_requested() -> bool:
    """True when the stop flag installed by :func:`set_stop_event` is set."""
    return _STOP_EVENT is not None and bool(_STOP_EVENT.is_set())


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns.  ``val_loss`` in nats/token (NaN for a run stopped early by
    ``stop_after_steps``); ``params`` N; ``tokens`` seen; ``curve`` ``[[tokens, val_loss], ...]``;
    ``wall_s`` seconds; ``skipped`` is True when the store already held the run; ``ckpt_dir``
    holds its checkpoints; ``env`` the software and machine it ran on."""

    key: str
    val_loss: float
    params: int
    tokens: int
    curve: list
    wall_s: float
    tokens_per_s: float
    skipped: bool
    ckpt_dir: str
    env: dict


def set_threads(threads: int) -> None:
    """Set torch's and numba's CPU thread counts."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def run_identity(cfg: TrainConfig, corpus: Corpus, tokenizer_name: str) -> tuple[dict, str]:
    """The full configuration recorded for a run (config + corpus hash) and its key."""
    full = {"train": cfg.to_dict(), "corpus_sha256": corpus.sha256, "vocab_size": corpus.vocab_size,
            "tokenizer": tokenizer_name}
    return full, store.run_key(full)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: np.ndarray, n_tokens: int, batch: int, seq_len: int,
             device: torch.device, autocast: bool = False) -> float:
    """Mean next-token cross-entropy (nats) over the first ``n_tokens`` of ``tokens``."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_batches(tokens, n_tokens, batch, seq_len):
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model.loss(xt, yt)
        total += float(loss) * yt.numel()
        count += yt.numel()
    model.train(was)
    return total / count


def _env(device: torch.device, corpus: Corpus) -> dict:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
           "numba": numba.__version__, "platform": platform.platform(), "device": str(device),
           "threads": torch.get_num_threads(), "corpus_sha256": corpus.sha256,
           "corpus_source": corpus.source, "corpus_tokens": corpus.n_tokens}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["fpformat"] = getattr(fpformat, "__version__", "?")
    return env


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _format_columns(q: QuantConfig) -> tuple[int | None, int | None, str | None, str, str]:
    """(exp_bits, man_bits, block, fmt, targets) for the runs table."""
    if q.fmt is None:
        return None, None, None, "none", ",".join(t for t, _ in q.overrides)
    f = get_format(q.fmt)
    el = getattr(f, "element", None) or f
    block = q.block if getattr(f, "element", None) is None else getattr(f, "block_size", None)
    return (int(el.exp_bits), int(el.man_bits), None if block is None else str(block), q.fmt,
            ",".join(q.targets))


def train(cfg: TrainConfig, *, db: str | Path | None = None, device: str = "auto",
          ckpt_dir: str | Path | None = None, progress: bool = True,
          tokenizer: Tokenizer | None = None, cache_dir: str | Path | None = None,
          compile: bool = False, stop_after_steps: int | None = None,
          ckpt_every_s: float = 30.0, threads: int | None = None) -> RunResult:
    """Train one run (or return the stored result if ``db`` holds it finished).

    db: results database (None: nothing recorded, nothing skipped).
    ckpt_dir: where ``<key>/`` checkpoints go; default: beside the database
        (``<db>.ckpt/``), else ``$FPX_CACHE/ckpt``.  ``<key>/last.pt`` is the resume point,
        ``<key>/tokens_<n>.pt`` the weights kept for PTQ.
    stop_after_steps: stop (checkpointed, unfinished) after this many steps of this call;
        used by tests to simulate a kill.  Returns a result with ``val_loss = nan``.
    ckpt_every_s: seconds between resume checkpoints.
    A stop requested through :func:`set_stop_event` saves the resume point at the next step
    boundary and raises :class:`RunInterrupted` (the row stays 'running', not 'failed').
    threads: CPU threads for torch and the numba kernels (None: leave as is).  On a busy or
        small machine 1 thread per worker is much faster than oversubscribed pools.
    """
    if threads is not None:
        set_threads(threads)
    dev = resolve_device(device)
    corpus = load_corpus(cfg.corpus, tokenizer, cache_dir)
    tok_name = getattr(tokenizer, "name", type(tokenizer).__name__) if tokenizer else "bytes"
    full, key = run_identity(cfg, corpus, tok_name)
    mcfg = cfg.model_config(corpus.vocab_size)
    n_params = param_count(mcfg)
    if ckpt_dir is None:
        ckpt_dir = Path(str(db) + ".ckpt") if db is not None else default_cache_dir() / "ckpt"
    run_dir = Path(ckpt_dir) / key

    if db is not None:
        row = store.get_run(db, key)
        if row and row["status"] == "finished":
            return RunResult(key=key, val_loss=row["val_loss"], params=row["n_params"],
                             tokens=row["tokens"], curve=json.loads(row["curve_json"] or "[]"),
                             wall_s=row["wall_s"], tokens_per_s=row["tokens_per_s"], skipped=True,
                             ckpt_dir=str(run_dir), env=json.loads(row["env_json"] or "{}"))
        e, m, blk, fmt, targets = _format_columns(cfg.quant)
        store.mark_running(db, key, full, n_params=n_params,
                           tokens=cfg.steps * cfg.batch_size * cfg.seq_len, exp_bits=e,
                           man_bits=m, block=blk, fmt=fmt, targets=targets)
    try:
        return _train(cfg, key, corpus, mcfg, n_params, dev, run_dir, db, progress, compile,
                      stop_after_steps, ckpt_every_s)
    except BaseException as exc:
        if db is not None and not isinstance(exc, KeyboardInterrupt):
            store.mark_failed(db, key, f"{type(exc).__name__}: {exc}")
        raise


def _train(cfg: TrainConfig, key: str, corpus: Corpus, mcfg: ModelConfig, n_params: int,
           dev: torch.device, run_dir: Path, db, progress: bool, compile: bool,
           stop_after_steps: int | None, ckpt_every_s: float) -> RunResult:
    torch.manual_seed(cfg.seed)
    model = Decoder(mcfg)
    if cfg.quant.active:
        quantize_model(model, cfg.quant)
        if cfg.steps >= 200:          # long enough to repay compiling the specialised kernels
            specialize_kernels(model)
    model.to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.peak_lr, betas=cfg.betas, eps=1e-8)
    autocast = cfg.precision == "bf16" and dev.type == "cuda"
    fwd = torch.compile(model) if compile else model

    n_steps, bt = cfg.steps, cfg.batch_size * cfg.seq_len
    eval_steps, ckpt_steps = cfg.eval_steps, cfg.ckpt_steps
    eval_bs = max(cfg.batch_size, 16)

    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    step, curve, wall_prev, train_time_prev, cpu_prev = 0, [], 0.0, 0.0, 0.0
    if last.exists():
        state = torch.load(last, map_location=dev, weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step, curve = state["step"], state["curve"]
            wall_prev, train_time_prev = state["wall_s"], state["train_s"]
            cpu_prev = state.get("cpu_s", 0.0)

    def save_last() -> None:
        _atomic_save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(),
                      "step": step, "curve": curve,
                      "wall_s": wall_prev + (time.perf_counter() - t0),
                      "train_s": train_time_prev + train_s,
                      "cpu_s": cpu_prev + (time.process_time() - c0)}, last)

    t0 = time.perf_counter()
    c0 = time.process_time()     # CPU seconds of this process (all its threads)
    train_s = 0.0
    last_save = t0
    done_here = 0
    model.train()
    with Progress(n_steps * bt, f"train {key[:8]}", unit="tok", enabled=progress) as bar:
        bar.update(step * bt)
        while step < n_steps:
            if stop_after_steps is not None and done_here >= stop_after_steps:
                save_last()
                return RunResult(key=key, val_loss=float("nan"), params=n_params,
                                 tokens=step * bt, curve=curve,
                                 wall_s=wall_prev + time.perf_counter() - t0, tokens_per_s=0.0,
                                 skipped=False, ckpt_dir=str(run_dir), env={})
            if stop_requested():
                save_last()
                raise RunInterrupted(f"run {key} stopped at step {step}/{n_steps}; "
                                     f"resumes from {last}")
            ts = time.perf_counter()
            x, y = train_batch(corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed, step)
            xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step)
            set_quant_step(model, step)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                logits = fwd(xt)
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), yt.reshape(-1))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {float(loss)} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            done_here += 1
            train_s += time.perf_counter() - ts
            bar.update(bt, loss=float(loss.detach()), lr=cfg.lr_at(step - 1))
            if step in eval_steps:
                vl = evaluate(model, corpus.val, cfg.eval_tokens, eval_bs, cfg.seq_len, dev,
                              autocast)
                curve.append([step * bt, vl])
            if step in ckpt_steps:
                _atomic_save({"key": key, "model": model.state_dict(), "step": step,
                              "tokens": step * bt, "model_config": asdict(mcfg),
                              "quant": cfg.quant.to_dict()},
                             run_dir / f"tokens_{step * bt}.pt")
            if time.perf_counter() - last_save > ckpt_every_s and step < n_steps:
                save_last()
                last_save = time.perf_counter()
    wall = wall_prev + time.perf_counter() - t0
    train_total = train_time_prev + train_s
    val_loss = curve[-1][1]
    tps = n_steps * bt / train_total if train_total > 0 else 0.0
    env = _env(dev, corpus)
    env["cpu_s"] = round(cpu_prev + time.process_time() - c0, 3)   # CPU seconds, all threads
    if db is not None:
        store.mark_finished(db, key, val_loss=val_loss, curve=curve, tokens=n_steps * bt,
                            wall_s=wall, tokens_per_s=tps, env=env)
    if last.exists():
        last.unlink()
    return RunResult(key=key, val_loss=val_loss, params=n_params, tokens=n_steps * bt,
                     curve=curve, wall_s=wall, tokens_per_s=tps, skipped=False,
                     ckpt_dir=str(run_dir), env=env)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[Decoder, dict]:
    """Rebuild the model saved in a ``tokens_<n>.pt`` checkpoint (quantization re-applied as
    trained).  Returns ``(model, state)``."""
    state = torch.load(path, map_location=device, weights_only=False)
    model = Decoder(ModelConfig(**state["model_config"]))
    q = QuantConfig.from_dict(state["quant"])
    if q.active:
        quantize_model(model, q)
    model.load_state_dict(state["model"])
    return model.to(device), state
