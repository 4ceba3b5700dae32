"""Training data: token streams in memory-mapped ``.npy`` caches, a held-out split, batches.

Default corpus: the Python standard library's own ``.py`` sources on this machine
(``sysconfig.get_paths()['stdlib']``, ``site-packages``/``dist-packages`` excluded), read in sorted
path order and concatenated (each file followed by a NUL byte) up to ``max_bytes``.  Tokens are
bytes (vocabulary 256) unless a tokenizer is given.  The SHA-256 of the token stream is recorded
with every run, since the standard library differs between Python versions.

The last ``val_fraction`` of the stream is the held-out split.  A training batch is a pure
function of ``(seed, step)`` (random windows of the training split), so a resumed run sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MAX_BYTES = 8 * 2**20


class Tokenizer(Protocol):
    """Anything with ``vocab_size`` and ``encode(bytes) -> sequence of ints``."""

    vocab_size: int
    name: str

    def encode(self, data: bytes) -> "np.ndarray | list[int]": ...


class ByteTokenizer:
    """The default: one token per byte, vocabulary 256."""

    vocab_size = 256
    name = "bytes"

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8)


def default_cache_dir() -> Path:
    """``$FPX_CACHE`` or ``~/.cache/fpx``."""
    return Path(os.environ.get("FPX_CACHE") or Path.home() / ".cache" / "fpx")


def stdlib_files() -> list[Path]:
    """Sorted ``.py`` files of the standard library (third-party package folders excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root).parts
        if "site-packages" in rel or "dist-packages" in rel or "__pycache__" in rel:
            continue
        if p.is_file():
            out.append(p)
    return sorted(out, key=lambda q: q.relative_to(root).as_posix())


def _collect(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted((q for q in p.rglob("*") if q.is_file()),
                                key=lambda q: q.as_posix()))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"corpus path not found: {p}")
    if not files:
        raise ValueError(f"corpus: no files under {', '.join(map(str, paths))}")
    return files


@dataclass(frozen=True)
class CorpusSpec:
    """Where the tokens come from.

    paths: user text files/folders (folders read recursively, sorted); empty -> the stdlib corpus.
    max_bytes: cap on raw bytes read (the stream is cut there).
    val_fraction: trailing share of the token stream held out for validation.
    """

    paths: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    val_fraction: float = 1 / 16

    def __post_init__(self) -> None:
        if (isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int)
                or self.max_bytes < 1024):
            raise ValueError(f"max_bytes must be an integer >= 1024, got {self.max_bytes!r}")
        if (isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float))
                or not 0 < self.val_fraction < 0.5):
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return {"paths": [str(Path(p).resolve()) for p in self.paths], "max_bytes": self.max_bytes,
                "val_fraction": self.val_fraction}


@dataclass
class Corpus:
    """A tokenized corpus: ``train`` and ``val`` are read-only memory-mapped token arrays."""

    train: np.ndarray
    val: np.ndarray
    sha256: str
    vocab_size: int
    source: str
    n_files: int
    path: Path = field(default=Path())

    @property
    def n_tokens(self) -> int:
        return int(self.train.size + self.val.size)


def _raw_bytes(spec: CorpusSpec) -> tuple[bytes, int, str]:
    files = _collect(list(spec.paths)) if spec.paths else stdlib_files()
    source = "user:" + ",".join(spec.to_dict()["paths"]) if spec.paths else \
        "stdlib:" + sysconfig.get_paths()["stdlib"]
    chunks, total, n = [], 0, 0
    for f in files:
        data = f.read_bytes() + b"\0"
        chunks.append(data)
        total += len(data)
        n += 1
        if total >= spec.max_bytes:
            break
    return b"".join(chunks)[: spec.max_bytes], n, source


def load_corpus(spec: CorpusSpec | None = None, tokenizer: Tokenizer | None = None,
                cache_dir: str | Path | None = None) -> Corpus:
    """Build (once) and memory-map the token stream for ``spec``.

    The cache file name is a hash of the spec, the tokenizer's name and the file list with
    sizes and mtimes, so edits to the sources rebuild it.  Writes are atomic (tmp + rename), so
    concurrent workers never read a half-written cache.
    """
    spec = spec or CorpusSpec()
    tok = tokenizer or ByteTokenizer()
    files = _collect(list(spec.paths)) if spec.paths else stdlib_files()
    stamp = hashlib.sha256()
    stamp.update(json.dumps([spec.to_dict(), getattr(tok, "name", type(tok).__name__),
                             int(tok.vocab_size)]).encode())
    for f in files:
        st = f.stat()
        stamp.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    base = cdir / f"tokens-{stamp.hexdigest()[:16]}"
    npy, meta_path = base.with_suffix(".npy"), base.with_suffix(".json")
    if not (npy.exists() and meta_path.exists()):
        raw, n_files, source = _raw_bytes(spec)
        ids = np.asarray(tok.encode(raw))
        vs = int(tok.vocab_size)
        dtype = np.uint8 if vs <= 256 else np.uint16 if vs <= 65536 else np.uint32
        if ids.size and (ids.min() < 0 or ids.max() >= vs):
            raise ValueError(f"tokenizer produced ids outside [0, {vs})")
        ids = ids.astype(dtype)
        meta = {"sha256": hashlib.sha256(ids.tobytes()).hexdigest(), "vocab_size": vs,
                "source": source, "n_files": n_files, "n_tokens": int(ids.size)}
        pid = os.getpid()
        tmp = npy.with_name(f"{npy.stem}.{pid}.tmp.npy")
        np.save(tmp, ids)
        os.replace(tmp, npy)
        tmpm = meta_path.with_name(f"{meta_path.stem}.{pid}.tmp")
        tmpm.write_text(json.dumps(meta))
        os.replace(tmpm, meta_path)
    meta = json.loads(meta_path.read_text())
    ids = np.load(npy, mmap_mode="r")
    n_val = max(int(ids.size * spec.val_fraction), 1)
    if ids.size - n_val < 2048:
        raise ValueError(f"corpus too small: {ids.size} tokens (need a few thousand)")
    return Corpus(train=ids[: ids.size - n_val], val=ids[ids.size - n_val:], sha256=meta["sha256"],
                  vocab_size=meta["vocab_size"], source=meta["source"], n_files=meta["n_files"],
                  path=npy)


def train_batch(tokens: np.ndarray, batch: int, seq_len: int, seed: int, step: int):
    """Random windows of ``tokens``: (inputs, targets) int64 arrays of shape (batch, seq_len).

    A pure function of ``(seed, step)``."""
    if tokens.size <= seq_len + 1:
        raise ValueError(f"seq_len={seq_len} does not fit a token stream of {tokens.size}")
    rng = np.random.Generator(np.random.PCG64([seed, step]))
    starts = rng.integers(0, tokens.size - seq_len - 1, size=batch)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = np.asarray(tokens[idx], dtype=np.int64)
    return w[:, :-1], w[:, 1:]


def eval_batches(tokens: np.ndarray, n_tokens: int, batch: int, seq_len: int):
    """Consecutive non-overlapping windows covering the first ``n_tokens`` predicted tokens of
    ``tokens`` (the fixed held-out set); yields (inputs, targets) int64 arrays."""
    n_seq = max(n_tokens // seq_len, 1)
    if n_seq * seq_len + 1 > tokens.size:
        raise ValueError(f"eval_tokens={n_tokens} exceeds the held-out split "
                         f"({tokens.size} tokens)")
    for s in range(0, n_seq, batch):
        k = min(batch, n_seq - s)
        idx = (np.arange(s, s + k) * seq_len)[:, None] + np.arange(seq_len + 1)[None, :]
        w = np.asarray(tokens[idx], dtype=np.int64)
        yield w[:, :-1], w[:, 1:]
