"""Hostile inputs to the commands `info`, `quantize`, `vectors`, `fit`, `recommend`, `report`.

Each case runs ``explorer.cli.main`` on a workspace of good and bad files and asserts the one CLI
error path (issue 14): exit code 2, ONE line on stderr naming the file or option (and a limit
where one applies), and a workspace byte-for-byte as it was — nothing written, nothing changed,
no temporary file left behind.  Failing disks (full, read-only) are simulated by monkeypatching
the writer, so no root tricks are needed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fpformat.files
from explorer.cli import EXIT_BROKEN_PIPE, main
from explorer.fit import MAX_BOOTSTRAP
from explorer.metrics import ERROR_CHUNK, MAX_SAMPLES, quantization_error
from fpformat.vectors import MAX_VECTOR_INPUTS

CSV = "N,D,E,M,B,loss\n" + "".join(
    f"{n},{d},{e},{m},32,{3 + 1e8 / n ** 0.3 / 50 + 1e4 / d ** 0.5 + 0.01 * (6 - e - m) ** 2}\n"
    for n in (1e6, 4e6, 1.6e7) for d in (1e8, 4e8) for e, m in ((2, 1), (3, 2), (4, 3)))


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace of good and bad inputs; the tests run inside it (relative paths)."""
    monkeypatch.chdir(tmp_path)
    x = (np.arange(64, dtype=np.float32) - 30) * 0.37
    np.save("ok.npy", x)
    np.save("empty.npy", np.zeros((0, 4), np.float32))
    Path("zero.npy").write_bytes(b"")
    Path("trunc.npy").write_bytes(Path("ok.npy").read_bytes()[:100])
    np.savez("arr.npz", a=x, b=x)
    Path("adir").mkdir()
    Path("afile").write_text("a file, not a directory\n")
    Path("bin.csv").write_bytes(bytes(range(256)) * 4)
    Path("nul.csv").write_bytes(b"N,D,E,M,B,loss\n1,2\x00,3\n")
    Path("runs.csv").write_text(CSV)
    Path("garbage.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    con = sqlite3.connect("other.db")
    con.execute("CREATE TABLE foo (x)")
    con.commit()
    con.close()
    Path("bad.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    Path("out.npy").write_bytes(b"the previous output\n")
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, link targets, directories."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = (f"link->{os.readlink(p)}" if p.is_symlink() else
                    "dir" if p.is_dir() else p.read_bytes())
    return out


def run_bad(argv, capsys) -> str:
    """Run ``fpx argv``; assert exit 2 and one line on stderr; return that line."""
    rc = main(argv)
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert rc == 2, (argv, rc, cap.err)
    assert len(lines) == 1 and lines[0].startswith(f"fpx {argv[0]}: error: "), (argv, cap.err)
    return lines[0]


BIG = str(10 ** 11)
Q = ["quantize"]
# (id, argv, what the message must name)
CASES = [
    ("quantize-empty-npy", Q + ["empty.npy", "o.npy", "-f", "e4m3"], ["empty.npy", "empty"]),
    ("quantize-zero-byte-file", Q + ["zero.npy", "o.npy", "-f", "e4m3"], ["zero.npy"]),
    ("quantize-truncated-npy", Q + ["trunc.npy", "o.npy", "-f", "e4m3"], ["trunc.npy"]),
    ("quantize-npz-for-npy", Q + ["arr.npz", "o.npy", "-f", "e4m3"], ["arr.npz", ".npz"]),
    ("quantize-csv-for-npy", Q + ["bin.csv", "o.npy", "-f", "e4m3"], ["bin.csv"]),
    ("quantize-input-missing", Q + ["nope.npy", "o.npy", "-f", "e4m3"], ["nope.npy"]),
    ("quantize-input-is-dir", Q + ["adir", "o.npy", "-f", "e4m3"], ["adir", "directory"]),
    ("quantize-output-is-dir", Q + ["ok.npy", "adir", "-f", "e4m3"], ["adir", "directory"]),
    ("quantize-output-dir-missing", Q + ["ok.npy", "nodir/o.npy", "-f", "e4m3"], ["nodir"]),
    ("quantize-output-under-file", Q + ["ok.npy", "afile/o.npy", "-f", "e4m3"], ["afile"]),
    ("quantize-scales-dir-missing", Q + ["ok.npy", "nodir/o.npy", "-f", "mxfp4", "--codes"],
     ["nodir"]),
    ("quantize-block-beyond-int64", Q + ["ok.npy", "o.npy", "-f", "e4m3/99999999999999999999"],
     ["99999999999999999999"]),
    ("quantize-block-beyond-int32", Q + ["ok.npy", "o.npy", "-f", "e4m3/9223372036854775807"],
     ["block_size", "9223372036854775807"]),
    ("vectors-chunk-beyond-int64", ["vectors", "--op", "dot", "-f", "e4m3", "--acc-format",
                                    "e8m13", "--chunk", "99999999999999999999", "--out", "v.csv"],
     ["chunk"]),
    ("vectors-out-is-dir", ["vectors", "-f", "e4m3", "--out", "adir"], ["adir"]),
    ("vectors-out-dir-missing", ["vectors", "-f", "e4m3", "--out", "nodir/v.csv"], ["nodir"]),
    ("vectors-huge-count", ["vectors", "-f", "e4m3", "--count", BIG, "--out", "v.csv"],
     ["count", str(MAX_VECTOR_INPUTS)]),
    ("vectors-huge-block-count", ["vectors", "-f", "mxfp4", "--count", BIG, "--out", "v.csv"],
     ["count", str(MAX_VECTOR_INPUTS)]),
    ("vectors-block-beyond-int64", ["vectors", "-f", "e4m3/99999999999999999999", "--count", "2",
                                    "--out", "v.csv"], ["block_size", "99999999999999999999"]),
    ("vectors-dot-huge-k", ["vectors", "--op", "dot", "-f", "e4m3", "--acc-format", "e8m13",
                            "--k", "100000000", "--out", "v.csv"], ["k", str(MAX_VECTOR_INPUTS)]),
    ("vectors-negative-seed", ["vectors", "-f", "e4m3", "--seed", "-5", "--out", "v.csv"],
     ["seed", "-5"]),
    ("fit-binary-csv", ["fit", "bin.csv"], ["bin.csv", "UTF-8"]),
    ("fit-nul-csv", ["fit", "nul.csv"], ["nul.csv", "line 2"]),
    ("fit-dir", ["fit", "adir"], ["adir", "directory"]),
    ("fit-missing", ["fit", "nope.db"], ["nope.db"]),
    ("fit-garbage-db", ["fit", "garbage.db"], ["garbage.db"]),
    ("fit-other-schema-db", ["fit", "other.db"], ["other.db"]),
    ("fit-huge-bootstrap", ["fit", "runs.csv", "--bootstrap", "100000000"],
     ["--bootstrap", str(MAX_BOOTSTRAP)]),
    ("fit-out-dir-missing", ["fit", "runs.csv", "--bootstrap", "0", "-o", "nodir/f.json"],
     ["nodir"]),
    ("fit-out-is-dir", ["fit", "runs.csv", "--bootstrap", "0", "-o", "adir"], ["adir"]),
    ("recommend-huge-samples", ["recommend", "--bits", "8", "--measure", "--samples", BIG],
     ["samples", str(MAX_SAMPLES)]),
    ("recommend-infinite-k", ["recommend", "--budget", "1e20", "--k", "inf"], ["k: ", "inf"]),
    ("recommend-npy-for-npz", ["recommend", "--measure", "--tensors", "ok.npy"],
     ["--tensors", "ok.npy"]),
    ("recommend-bad-zip", ["recommend", "--measure", "--tensors", "bad.npz"],
     ["--tensors", "bad.npz"]),
    ("recommend-tensors-dir", ["recommend", "--measure", "--tensors", "adir"], ["adir"]),
    ("recommend-binary-law", ["recommend", "--law", "bin.csv"], ["--law", "bin.csv"]),
    ("report-out-is-file", ["report", "--out", "afile"], ["afile", "not a directory"]),
    ("report-out-under-file", ["report", "--out", "afile/r"], ["afile"]),
    ("report-binary-law", ["report", "--out", "r", "--law", "bin.csv"], ["--law", "bin.csv"]),
    ("report-huge-samples", ["report", "--out", "r", "--sqnr-samples", BIG],
     ["sqnr_samples", str(MAX_SAMPLES)]),
    ("info-block-value-table", ["info", "mxfp4", "--values"], ["--values"]),
]


@pytest.mark.parametrize("case_id, argv, needles",
                         [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(ws, capsys, case_id, argv, needles):
    before = snapshot(ws)
    line = run_bad(argv, capsys)
    for needle in needles:
        assert needle in line, (case_id, line)
    assert "Traceback" not in line and "Errno" not in line
    assert snapshot(ws) == before, case_id


# --------------------------------------------------------------------------- failing disks
class _FillingFile:
    """A file that takes ``room`` more bytes (or characters) and then fails like a full disk."""

    def __init__(self, fh, room: int):
        self._fh, self._room = fh, room

    def write(self, data):
        if len(data) > self._room:
            self._fh.write(data[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails with ENOSPC after 100 bytes."""
    real = os.fdopen

    def fdopen(fd, *a, **kw):
        return _FillingFile(real(fd, *a, **kw), 100)

    monkeypatch.setattr(fpformat.files.os, "fdopen", fdopen)


DISK_CASES = [
    ("quantize", ["quantize", "ok.npy", "out.npy", "-f", "e4m3"], "out.npy"),
    ("quantize-codes", ["quantize", "ok.npy", "out.npy", "-f", "e4m3", "--codes"], "out.npy"),
    ("vectors", ["vectors", "-f", "e2m1", "--count", "10", "--out", "out.npy"], "out.npy"),
    ("vectors-hex", ["vectors", "-f", "e2m1", "--style", "hex", "--out", "out.npy"], "out.npy"),
    ("vectors-block", ["vectors", "-f", "mxfp4", "--count", "2", "--out", "out.npy"], "out.npy"),
    ("vectors-dot", ["vectors", "--op", "dot", "-f", "e2m1", "--acc-format", "e5m6", "--count",
                     "4", "--out", "out.npy"], "out.npy"),
    ("fit", ["fit", "runs.csv", "--bootstrap", "0", "--free", "n,d,eps,gamma", "-o", "out.npy"],
     "out.npy"),
]


@pytest.mark.parametrize("case_id, argv, target", DISK_CASES, ids=[c[0] for c in DISK_CASES])
def test_full_disk_keeps_the_old_output(ws, capsys, full_disk, case_id, argv, target):
    """ENOSPC midway: one line naming the output, the previous file intact, no temp file."""
    before = snapshot(ws)
    line = run_bad(argv, capsys)
    assert target in line and os.strerror(errno.ENOSPC) in line, line
    assert snapshot(ws) == before


def test_read_only_output_names_the_file(ws, capsys, monkeypatch):
    """A read-only file system (simulated: os.open refuses) is reported on the output's name,
    not on the temporary file's."""
    def refuse(path, *a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(fpformat.files.os, "open", refuse)
    before = snapshot(ws)
    line = run_bad(["quantize", "ok.npy", "out.npy", "-f", "e4m3"], capsys)
    assert line.endswith(f"out.npy: {os.strerror(errno.EROFS)} (the file system is read-only; "
                         f"write elsewhere)"), line
    assert snapshot(ws) == before


# ------------------------------------------------------------------------------------ reports
def test_report_refuses_a_figures_link_out_of_its_directory(ws, capsys, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep.png").write_bytes(b"not yours")
    Path("rep").mkdir()
    Path("rep/figures").symlink_to(outside, target_is_directory=True)
    before = snapshot(ws), snapshot(outside)
    line = run_bad(["report", "--out", "rep"], capsys)
    assert "rep/figures" in line and "symbolic link" in line, line
    assert (snapshot(ws), snapshot(outside)) == before


def test_report_replaces_a_link_at_its_own_file_name_never_its_target(ws, capsys, monkeypatch):
    """A link at ``index.html`` is replaced by the report's own file; its target is untouched.
    Then a full disk while the report is rewritten leaves that report as it was."""
    target = ws / "precious.html"
    target.write_text("do not overwrite\n")
    Path("rep").mkdir()
    Path("rep/index.html").symlink_to(target)
    argv = ["report", "--out", "rep", "--bits", "8", "--sqnr-samples", "256"]
    assert main(argv) == 0
    capsys.readouterr()
    assert target.read_text() == "do not overwrite\n"
    page = Path("rep/index.html")
    assert not page.is_symlink() and page.read_text().startswith("<!DOCTYPE html>")

    real = os.fdopen
    monkeypatch.setattr(fpformat.files.os, "fdopen",
                        lambda fd, *a, **kw: _FillingFile(real(fd, *a, **kw), 100))
    before = snapshot(ws)
    line = run_bad(argv, capsys)
    assert "rep/figures/" in line and os.strerror(errno.ENOSPC) in line, line
    assert snapshot(ws) == before


# ---------------------------------------------------------------------- the error path itself
@pytest.mark.parametrize("exc, needle", [
    (MemoryError(), "out of memory"),
    (FloatingPointError("overflow encountered in multiply"), "diverged: overflow"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "ok.npy: database error"),
    (UnicodeDecodeError("utf-8", b"\x80", 0, 1, "invalid start byte"), "not utf-8"),
    (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "gone/x"), "gone/x: No such"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "locked.npy"), "locked.npy"),
])
def test_user_errors_are_one_line(ws, capsys, monkeypatch, exc, needle):
    """Errors raised anywhere below a command (memory, diverging arithmetic, databases, binary
    text files, the OS) become one line; the errno never stands alone as the message."""
    def boom(path, name="input"):
        raise exc

    monkeypatch.setattr("explorer.commands.quantize.load_array", boom)
    line = run_bad(["quantize", "ok.npy", "o.npy", "-f", "e4m3"], capsys)
    assert needle in line, line
    assert not line.endswith(("error: 2", "error: utf-8", "error: "))


def test_internal_bugs_keep_their_traceback(ws, monkeypatch):
    def bug(path, name="input"):
        raise RuntimeError("a bug in fpx")

    monkeypatch.setattr("explorer.commands.quantize.load_array", bug)
    with pytest.raises(RuntimeError, match="a bug in fpx"):
        main(["quantize", "ok.npy", "o.npy", "-f", "e4m3"])


def test_closed_stdout_ends_quietly():
    """``fpx info e6m5 --values | head -0``: the reader is gone before the first write (250 kB,
    more than a pipe holds); no traceback, no "Exception ignored", exit 0 or 141."""
    code = "import sys; from explorer.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "info", "e6m5", "--values"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert err == "" and proc.returncode in (0, EXIT_BROKEN_PIPE), (proc.returncode, err)


# -------------------------------------------------------------------------------- bounded memory
def test_quantize_summary_memory_is_bounded():
    """The MSE/SQNR summary walks the arrays in chunks: its peak is a few chunk buffers, not the
    six full-size float64 temporaries it used to take (1.8 GB for a 200 MB array)."""
    x = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)     # 16 MiB
    y = x.astype(np.float16).astype(np.float32)
    x[::1000] = np.inf
    tracemalloc.start()
    try:
        mse, sqnr = quantization_error(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * ERROR_CHUNK, peak      # ~6 float64 chunk buffers, whatever x's size
    fin = np.isfinite(x)
    ref = np.mean((y[fin].astype(np.float64) - x[fin]) ** 2)
    assert mse == pytest.approx(ref, rel=1e-9)
    assert sqnr == pytest.approx(10 * np.log10(np.mean(x[fin].astype(np.float64) ** 2) / ref))


def test_quantize_command_peak_is_a_small_multiple_of_the_input(ws, capsys):
    x = np.random.default_rng(1).standard_normal(1 << 21).astype(np.float32)     # 8 MiB
    np.save("big.npy", x)
    main(["quantize", "big.npy", "q.npy", "-f", "e4m3"])           # compile outside the trace
    capsys.readouterr()
    tracemalloc.start()
    try:
        assert main(["quantize", "big.npy", "q.npy", "-f", "e4m3", "--json"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    summary = json.loads(capsys.readouterr().out)
    assert summary["sqnr_db"] > 20
    assert peak < 2.5 * x.nbytes, peak / x.nbytes          # input + output + small buffers


def test_size_limits_refuse_before_allocating():
    """The limits are checked before any allocation: refusing 10**11 inputs takes no memory."""
    from fpformat.vectors import dot_vectors, element_inputs
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=str(MAX_VECTOR_INPUTS)):
            dot_vectors("e4m3", "e4m3", "e8m13", k=10 ** 8)
        with pytest.raises(ValueError, match=str(MAX_VECTOR_INPUTS)):
            element_inputs(fpformat.get_format("e4m3"), 10 ** 11, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 22


def test_stdout_json_is_not_affected_by_the_error_path(ws, capsys):
    """A good command still prints exactly its output (the flush inside the error path)."""
    assert main(["info", "e2m1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "e2m1"


def test_filling_file_helper_really_fails():
    """The simulated full disk used above fails after its room, having written that much."""
    buf = io.BytesIO()
    f = _FillingFile(buf, 5)
    f.write(b"abc")
    with pytest.raises(OSError) as e:
        f.write(b"defgh")
    assert e.value.errno == errno.ENOSPC and buf.getvalue() == b"abcde"
