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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np
import torch

import fpformat
from fpformat import get_format

from .. import results
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
from .qlinear import (
    TARGETS,
    QuantConfig,
    load_quant_state,
    quant_state,
    quantize_model,
    set_quant_step,
    specialize_kernels,
)

#: Largest accepted seed: torch, numpy's PCG64 and SQLite all hold it exactly.
MAX_SEED = 2**63 - 1


def _check_int(name: str, v: object, low: int, high: int | None = None) -> None:
    """ValueError naming ``name`` unless ``v`` is an int (not a bool) in [low, high]."""
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: must be an integer {span}, got {v!r}")


def _check_real(name: str, v: object, low: float, high: float | None, *, low_open: bool = False,
                high_open: bool = False, hint: str = "") -> None:
    """ValueError naming ``name`` unless ``v`` is a finite real number in the interval (NaN and
    infinities are refused everywhere: they cannot be stored as JSON and train nothing)."""
    ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
          and (v > low if low_open else v >= low)
          and (high is None or (v < high if high_open else v <= high)))
    if not ok:
        span = ("(" if low_open else "[") + f"{low:g}, " + \
            ("inf)" if high is None else f"{high:g}" + (")" if high_open else "]"))
        raise ValueError(f"{name}: must be a finite number in {span}"
                         + (f" ({hint})" if hint else "") + f", got {v!r}")


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
    precision: "fp32" or "bf16" (autocast; CUDA only -- :func:`train` refuses bf16 elsewhere).
    seed: initialisation, batch order and stochastic-rounding seed, an integer in [0, 2^63).

    Every field is checked on construction (``ValueError`` naming the field and the allowed
    values): integers in range, every real finite and in range, so a stored config is plain JSON.
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
        # Everything is checked here, before a run row or checkpoint can be written: a bad
        # value must never produce a 'failed' row, a key built from it, or "lr": Infinity in a
        # stored config (not JSON).
        for name in ("layers", "d_model", "tokens", "seq_len", "batch_size", "eval_tokens",
                     "eval_points"):
            _check_int(name, getattr(self, name), 1)
        if self.n_heads is not None:
            _check_int("n_heads", self.n_heads, 1)
        _check_int("seed", self.seed, 0, MAX_SEED)
        if self.lr is not None:
            _check_real("lr", self.lr, 0, None, low_open=True,
                        hint="a learning rate such as 1e-3, or None for the size default")
        _check_real("warmup_frac", self.warmup_frac, 0, 1, high_open=True)
        _check_real("min_lr_frac", self.min_lr_frac, 0, 1)
        _check_real("weight_decay", self.weight_decay, 0, None)
        _check_real("grad_clip", self.grad_clip, 0, None, low_open=True,
                    hint="a global gradient norm such as 1.0")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2:
            raise ValueError(f"betas: must be two numbers in [0, 1), got {self.betas!r}")
        for i, b in enumerate(betas):
            _check_real(f"betas[{i}]", b, 0, 1, high_open=True)
        fracs = tuple(self.ckpt_fracs) if isinstance(self.ckpt_fracs, (tuple, list)) else None
        if not fracs:
            raise ValueError(f"ckpt_fracs: must be a non-empty list of fractions in (0, 1] "
                             f"(the weights kept for PTQ), got {self.ckpt_fracs!r}")
        for f in fracs:
            _check_real("ckpt_fracs", f, 0, 1, low_open=True)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not isinstance(self.quant, QuantConfig):
            raise TypeError(f"quant must be a QuantConfig, got {type(self.quant).__name__}")
        if not isinstance(self.corpus, CorpusSpec):
            raise TypeError(f"corpus must be a CorpusSpec, got {type(self.corpus).__name__}")
        object.__setattr__(self, "ckpt_fracs", tuple(sorted(set(float(f) for f in fracs))))
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
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


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, of another run or model, or a
    pickle that would run code (refused before anything in it runs).  The message is one line
    naming the file."""


class TrainingDiverged(ValueError):
    """The training loss (or gradient norm, or validation loss) became NaN or infinite.  The run
    is recorded as failed; the message names the step and says what to change."""


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
    try:
        # The stored config must be standard JSON (no NaN/Infinity), whatever built ``cfg``.
        json.dumps(full, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run config is not plain JSON ({exc}); check the config's "
                         "numbers") from exc
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
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint.
    ``obj`` holds only tensors, dicts, lists, tuples, numbers, strings, bools and None, so it
    loads under ``torch.load(weights_only=True)`` (:func:`_load_file`)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _reason(exc: BaseException) -> str:
    """One line saying why a checkpoint failed to load (torch's messages span many lines)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        # weights_only refused an instruction: say which, without torch's advice to turn the
        # protection off.
        tail = text.split("WeightsUnpickler error:", 1)[1]
        detail = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        detail = detail.split(" was not an allowed global", 1)[0]
        if "Unsupported global" in detail:
            text = "it refers to code, which is never run: " + \
                detail.replace("Unsupported global: ", "")
        else:
            text = f"not a plain-weights pickle: {detail}"
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        first = first.split(". ", 1)[0]            # the first sentence says what broke
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _load_file(path: Path, device) -> dict:
    """The dict saved in checkpoint ``path``, loaded with ``weights_only=True``: tensors, dicts,
    lists, tuples, numbers, strings and None only -- a pickle naming any other callable is
    refused before it runs.  :class:`CheckpointError` naming the file for anything unreadable
    (garbage, truncated, empty, not a dict); ``FileNotFoundError`` when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found (or not a file): {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about foreign pickle protocols; the one-line error below says enough.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:   # torch.load raises a different type for each kind of damage
        raise CheckpointError(f"checkpoint {path}: cannot be loaded ({_reason(exc)})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: not an fpx checkpoint (holds a "
                              f"{type(state).__name__}, not a dict)")
    return state


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _format_columns(q: QuantConfig) -> tuple[int | None, int | None, str | None, str, str]:
    """(exp_bits, man_bits, block, fmt, targets) for the runs table (a recipe run: fmt
    ``"recipe"``, no single E/M or block, the GEMM inputs it quantizes)."""
    if q.recipe is not None:
        quantized = ",".join(t for t in TARGETS if q.spec(t) is not None)
        return None, None, None, results.RECIPE_FMT, quantized
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
    A ``last.pt`` that cannot be used (corrupt, truncated, of another run, a pickle that would
    run code) is never executed: a warning naming it goes to stderr and the run trains from
    scratch (the file is replaced at the next save), so a damaged resume point never makes a
    run fail for good.
    A loss or gradient norm that becomes NaN/inf raises :class:`TrainingDiverged` (a
    ``ValueError`` naming the step) and the run is recorded as failed.
    Everything the user chose is checked before the run row is written: ``ValueError`` for
    bf16 without CUDA, a sequence or evaluation set the corpus cannot hold.
    threads: CPU threads for torch and the numba kernels (None: leave as is).  On a busy or
        small machine 1 thread per worker is much faster than oversubscribed pools.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if stop_after_steps is not None:
        _check_int("stop_after_steps", stop_after_steps, 0)
    _check_real("ckpt_every_s", ckpt_every_s, 0, None)
    if threads is not None:
        set_threads(threads)
    dev = resolve_device(device)
    if cfg.precision == "bf16" and dev.type != "cuda":
        # bf16 autocast runs on CUDA only: a CPU run would be fp32 recorded as bf16.
        raise ValueError(f"precision 'bf16' needs a CUDA device (got {dev}); use precision "
                         "'fp32' (--precision fp32) on the CPU")
    corpus = load_corpus(cfg.corpus, tokenizer, cache_dir)
    _check_fits(cfg, corpus)
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
        recipe = ({"recipe": cfg.quant.recipe, "recipe_hash": cfg.quant.recipe_hash}
                  if cfg.quant.recipe is not None else {})
        store.mark_running(db, key, full, n_params=n_params,
                           tokens=cfg.steps * cfg.batch_size * cfg.seq_len, exp_bits=e,
                           man_bits=m, block=blk, fmt=fmt, targets=targets, **recipe)
    try:
        return _train(cfg, key, corpus, mcfg, n_params, dev, run_dir, db, progress, compile,
                      stop_after_steps, ckpt_every_s)
    except BaseException as exc:
        if db is not None and not isinstance(exc, KeyboardInterrupt):
            store.mark_failed(db, key, f"{type(exc).__name__}: {exc}")
        raise


def _check_fits(cfg: TrainConfig, corpus: Corpus) -> None:
    """ValueError (before anything is written) when the corpus cannot hold the run's windows."""
    if corpus.train.size <= cfg.seq_len + 1:
        raise ValueError(f"seq_len={cfg.seq_len} does not fit the training split of "
                         f"{corpus.train.size} tokens; lower seq_len (--seq-len) or give a larger "
                         "corpus (--corpus, --max-bytes)")
    n_seq = max(cfg.eval_tokens // cfg.seq_len, 1)
    if n_seq * cfg.seq_len + 1 > corpus.val.size:
        raise ValueError(f"eval_tokens={cfg.eval_tokens} exceeds the held-out split of "
                         f"{corpus.val.size} tokens; lower eval_tokens (--eval-tokens) or give a "
                         "larger corpus (--corpus, --max-bytes)")


def _build(cfg: TrainConfig, mcfg: ModelConfig, dev: torch.device):
    """A freshly initialised model (seeded: the same weights every time) and its optimizer."""
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
    return model, opt


def _resume(last: Path, key: str, cfg: TrainConfig, model: torch.nn.Module, opt,
            dev: torch.device) -> tuple[int, list, float, float, float]:
    """Load the resume point ``last`` into ``model`` and ``opt``; returns ``(step, curve, wall_s,
    train_s, cpu_s)``.  :class:`CheckpointError` naming the file when it is unreadable, of
    another run, or inconsistent with this run (``model``/``opt`` may then be half-loaded)."""
    state = _load_file(last, dev)
    if state.get("key") != key:
        raise CheckpointError(f"checkpoint {last}: belongs to another run "
                              f"(key {str(state.get('key'))[:40]!r}, expected {key})")
    try:
        step, curve = state["step"], state["curve"]
        times = [state["wall_s"], state["train_s"], state.get("cpu_s", 0.0)]
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= cfg.steps:
            raise ValueError(f"step {step!r} is not in [0, {cfg.steps}]")
        evals = sum(1 for s in cfg.eval_steps if s <= step)
        if (not isinstance(curve, list) or len(curve) != evals
                or not all(isinstance(c, list) and len(c) == 2 and all(map(_is_number, c))
                           for c in curve)):
            raise ValueError(f"the loss curve does not match step {step}")
        if not all(_is_number(t) and t >= 0 for t in times):
            raise ValueError("the recorded times are not non-negative numbers")
        model.load_state_dict(state["model"])
        if cfg.quant.delayed:
            if "quant_state" not in state:
                raise ValueError("it holds no delayed-scaling state (amax histories)")
            load_quant_state(model, state["quant_state"])
        opt.load_state_dict(state["opt"])
        # load_state_dict does not compare optimizer moments with the parameters' shapes; a
        # mismatch would only fail at the next step, on every resume.
        for group in opt.param_groups:
            for p in group["params"]:
                for name, v in opt.state.get(p, {}).items():
                    if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                        raise ValueError(f"optimizer state {name!r} has shape "
                                         f"{tuple(v.shape)}, the parameter {tuple(p.shape)}")
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {last}: does not fit this run "
                              f"({_reason(exc)})") from exc
    return step, curve, float(times[0]), float(times[1]), float(times[2])


def _diverged(step: int, n_steps: int, what: str, value: float, cfg: TrainConfig):
    return TrainingDiverged(f"training diverged at step {step}/{n_steps} ({what} {value}); "
                            f"lower the learning rate (--lr; the peak was {cfg.peak_lr:g})")


def _train(cfg: TrainConfig, key: str, corpus: Corpus, mcfg: ModelConfig, n_params: int,
           dev: torch.device, run_dir: Path, db, progress: bool, compile: bool,
           stop_after_steps: int | None, ckpt_every_s: float) -> RunResult:
    model, opt = _build(cfg, mcfg, dev)
    autocast = cfg.precision == "bf16" and dev.type == "cuda"

    n_steps, bt = cfg.steps, cfg.batch_size * cfg.seq_len
    eval_steps, ckpt_steps = cfg.eval_steps, cfg.ckpt_steps
    eval_bs = max(cfg.batch_size, 16)

    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    step, curve, wall_prev, train_time_prev, cpu_prev = 0, [], 0.0, 0.0, 0.0
    if last.exists():
        try:
            step, curve, wall_prev, train_time_prev, cpu_prev = _resume(last, key, cfg, model,
                                                                        opt, dev)
        except (CheckpointError, OSError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            print(f"warning: {msg}; training run {key} from scratch (the file is replaced at "
                  "the next save)", file=sys.stderr)
            model, opt = _build(cfg, mcfg, dev)     # the failed load may have copied tensors
    fwd = torch.compile(model) if compile else model

    def extra_state() -> dict:
        # Delayed scaling's amax histories: without them a resumed run would scale afresh.
        return {"quant_state": quant_state(model)} if cfg.quant.delayed else {}

    def save_last() -> None:
        _atomic_save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(),
                      **extra_state(), "step": step, "curve": curve,
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
                raise _diverged(step, n_steps, "loss", float(loss.detach()), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm):
                # Clipping an infinite norm turns the gradients into NaN: stop before the step.
                raise _diverged(step, n_steps, "gradient norm", float(norm), cfg)
            opt.step()
            step += 1
            done_here += 1
            train_s += time.perf_counter() - ts
            bar.update(bt, loss=float(loss.detach()), lr=cfg.lr_at(step - 1))
            if step in eval_steps:
                vl = evaluate(model, corpus.val, cfg.eval_tokens, eval_bs, cfg.seq_len, dev,
                              autocast)
                if not math.isfinite(vl):
                    raise _diverged(step, n_steps, "validation loss", vl, cfg)
                curve.append([step * bt, vl])
            if step in ckpt_steps:
                _atomic_save({"key": key, "model": model.state_dict(), **extra_state(),
                              "step": step,
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
    trained).  Returns ``(model, state)``.

    Loaded with ``weights_only=True``: a file that would run code is refused unexecuted.
    ``CheckpointError`` (a ``ValueError``, one line naming the file) for a corrupt, truncated or
    foreign file; ``FileNotFoundError`` when ``path`` is not a file."""
    path = Path(path)
    state = _load_file(path, device)
    try:
        mc, qd = state["model_config"], state["quant"]
        if not isinstance(mc, dict) or not isinstance(qd, dict):
            raise TypeError("model_config and quant must be dicts")
        model = Decoder(ModelConfig(**mc))
        q = QuantConfig.from_dict(qd)
        if q.active:
            quantize_model(model, q)
        model.load_state_dict(state["model"])
        if q.delayed:
            load_quant_state(model, state["quant_state"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a model checkpoint fpx can rebuild "
                              f"({_reason(exc)}); delete it to use the run's other "
                              "checkpoints") from exc
    return model.to(device), state
