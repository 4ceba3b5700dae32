"""One run end to end: train it, quantize its checkpoints after training, capture its operands.

``fpx train`` is :func:`train_ptq_capture` plus argument parsing and printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..metrics import save_tensors
from . import store
from .capture import capture_from_run
from .data import load_corpus
from .ptq import PTQSpec, ptq_run
from .trainer import RunResult, TrainConfig, train

#: Held-out sequences (one batch) the captured activations and gradients come from.
CAPTURE_SEQUENCES = 4


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train_ptq_capture` did.

    ``run``: the training result; ``ptq``: every ``ptq`` row of this run in the results database
    (rows earlier calls wrote included), ordered by checkpoint tokens; ``capture``: the ``.npz``
    file of captured tensors, or None."""

    run: RunResult
    ptq: tuple[dict, ...] = ()
    capture: Path | None = None


def _check_capture_path(path: Path) -> None:
    """Fail now, not after an hour of training, for an output the capture could not write."""
    if path.is_dir():
        raise IsADirectoryError(f"capture: {path} is a folder; give a file name OUT.npz")
    if path.suffix != ".npz":
        raise ValueError(f"capture: {path} must end in .npz (numpy would write {path}.npz)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"capture: folder not found: {path.parent} (for {path})")


def train_ptq_capture(cfg: TrainConfig, *, db: str | Path | None = None, device: str = "auto",
                      ckpt_dir: str | Path | None = None, progress: bool = True,
                      compile: bool = False, threads: int | None = None,
                      ptq: Sequence[PTQSpec] = (),
                      capture: str | Path | None = None) -> TrainOutcome:
    """Train ``cfg`` (:func:`~explorer.train.trainer.train`: a run ``db`` holds finished is not
    trained again), then quantize every checkpoint with every spec of ``ptq`` and record the
    losses before and after in ``db`` (:func:`~explorer.train.ptq.ptq_run`, on the CPU), then
    save the weights, activations and output gradients of every linear layer of the last
    checkpoint on :data:`CAPTURE_SEQUENCES` held-out sequences to ``capture`` (``.npz``).

    Checked before any training: ``ValueError`` when ``ptq`` is given without ``db`` or
    ``capture`` does not end in ``.npz`` (numpy would append it, writing another file than the
    one named); ``FileNotFoundError`` when the folder of ``capture`` does not exist;
    ``IsADirectoryError`` when ``capture`` is a folder.  A checkpoint that cannot be loaded
    (corrupt, foreign, or carrying code, which is never run) stops PTQ or capture with a
    ``ValueError`` naming the file.
    """
    specs = list(ptq)
    if specs and db is None:
        raise ValueError("ptq: needs db, the results database the PTQ rows are stored in")
    if capture is not None:
        _check_capture_path(Path(capture))
    run = train(cfg, db=db, device=device, ckpt_dir=ckpt_dir, progress=progress,
                compile=compile, threads=threads)
    rows: tuple[dict, ...] = ()
    if specs:
        ptq_run(db, run.key, specs, ckpt_dir=ckpt_dir)
        rows = tuple(row for row in store.load_ptq(db) if row["run_key"] == run.key)
    path = None
    if capture is not None:
        path = Path(capture)
        corpus = load_corpus(cfg.corpus)
        save_tensors(path, capture_from_run(run.ckpt_dir, corpus.val, CAPTURE_SEQUENCES,
                                            cfg.seq_len, seed=cfg.seed))
    return TrainOutcome(run=run, ptq=rows, capture=path)
