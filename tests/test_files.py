"""fpformat.files.atomic_write: the old file or the whole new one, never a truncated one."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from fpformat.files import atomic_write, check_output_path


def test_writes_text_and_bytes(tmp_path):
    with atomic_write(tmp_path / "a.txt") as fh:
        fh.write("héllo\n")
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\xff")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_an_error_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(KeyError):
        with atomic_write(target) as fh:
            fh.write("new, but")
            raise KeyError("the caller failed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_full_disk_names_the_output(tmp_path, monkeypatch):
    """ENOSPC from the final flush (no file name of its own) is reported on the output path."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as e:
        with atomic_write(target, "wb") as fh:
            fh.write(b"new" * 1000)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_keeps_the_replaced_files_permissions(tmp_path):
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    with atomic_write(target) as fh:
        fh.write("new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o751 and target.read_text() == "new"


def test_a_new_file_gets_the_umask_like_open(tmp_path):
    with atomic_write(tmp_path / "new") as fh:
        fh.write("x")
    (tmp_path / "ref").write_text("x")
    assert (tmp_path / "new").stat().st_mode == (tmp_path / "ref").stat().st_mode


def test_a_link_is_replaced_not_followed(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(precious)
    with atomic_write(link) as fh:
        fh.write("new")
    assert precious.read_text() == "keep"
    assert not link.is_symlink() and link.read_text() == "new"


@pytest.mark.parametrize("make, exc", [
    (lambda t: t / "dir", IsADirectoryError),
    (lambda t: t / "missing" / "f", FileNotFoundError),
    (lambda t: t / "file" / "f", NotADirectoryError),
])
def test_bad_output_paths_are_refused_before_anything_is_written(tmp_path, make, exc):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    path = make(tmp_path)
    for attempt in (lambda: check_output_path(path), lambda: atomic_write(path).__enter__()):
        with pytest.raises(exc) as e:
            attempt()
        assert e.value.filename == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_rejects_modes_it_cannot_make_atomic(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        atomic_write(tmp_path / "f", "a").__enter__()
