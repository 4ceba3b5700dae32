"""Checkpoints never run code and a damaged one never blocks a run (issue 14, defect 1).

``last.pt`` (the resume point) and ``tokens_<n>.pt`` (the weights PTQ and ``--capture`` use) are
loaded with ``torch.load(weights_only=True)``.  A planted pickle that would create a marker file
when unpickled is refused unexecuted everywhere: on resume, in PTQ, in capture.  A resume point
that cannot be used (garbage, empty, truncated, not a dict, another run's, inconsistent with the
model) is reported on stderr by path and the run trains from scratch to exactly the result of an
undisturbed run; a damaged ``tokens_<n>.pt`` stops PTQ/capture with one line naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from explorer.cli import main
from explorer.train import store
from explorer.train.capture import capture_from_run
from explorer.train.data import load_corpus
from explorer.train.ptq import PTQSpec, ptq_run
from explorer.train.trainer import CheckpointError, TrainConfig, load_checkpoint, train

ARGS = ["train", "--layers", "1", "--d-model", "32", "--tokens", "4096", "--seq-len", "32",
        "--batch-size", "8", "--eval-tokens", "2048", "--max-bytes", "262144", "--threads", "1",
        "--device", "cpu", "--no-progress", "--json", "--format", "e4m3", "--block", "none"]


class _PlantedCode:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FPX_CACHE", str(tmp_path_factory.getbasetemp() / "fpxcache"))
        from explorer.train.trainer import set_threads
        set_threads(1)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished e4m3 run through the CLI: its folder, database row, config and a resume
    point saved 5 steps into the same run (the template the damaged resume points start from)."""
    base = tmp_path_factory.mktemp("trained")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*ARGS, "--db", str(base / "runs.db")]) == 0
    res = json.loads(out.getvalue().strip().splitlines()[-1])
    cfg = TrainConfig.from_dict(
        json.loads(store.get_run(base / "runs.db", res["key"])["config_json"])["train"])
    part = train(cfg, ckpt_dir=base / "part", device="cpu", progress=False, stop_after_steps=5)
    assert part.key == res["key"]
    return {"base": base, "res": res, "cfg": cfg, "key": res["key"],
            "last": base / "part" / res["key"] / "last.pt"}


def _copy_run(trained, dest: Path) -> tuple[Path, Path]:
    """A private copy of the trained run's database and checkpoint folder under ``dest``."""
    db = dest / "runs.db"
    shutil.copy(trained["base"] / "runs.db", db)
    shutil.copytree(trained["base"] / "runs.db.ckpt", dest / "runs.db.ckpt")
    return db, dest / "runs.db.ckpt" / trained["key"]


def _template(trained) -> dict:
    return torch.load(trained["last"], weights_only=True)


def _with(trained, **changes) -> dict:
    state = _template(trained)
    state.update(changes)
    return state


def _moment_shape(trained) -> dict:
    state = _template(trained)
    state["opt"]["state"][0]["exp_avg"] = torch.zeros(3)
    return state


# Each writes an unusable resume point to ``path``; ``marker`` must never appear.
DAMAGES = {
    "code at top level": lambda p, t, m: torch.save(_PlantedCode(m), p),
    "code inside a real resume point": lambda p, t, m: torch.save(
        _with(t, model={"tok.weight": _PlantedCode(m)}), p),
    "garbage": lambda p, t, m: p.write_bytes(b"\x80\x04not a checkpoint" * 50),
    "empty": lambda p, t, m: p.write_bytes(b""),
    "truncated": lambda p, t, m: p.write_bytes(t["last"].read_bytes()[:5000]),
    "a list": lambda p, t, m: torch.save([1, 2, 3], p),
    "another run's": lambda p, t, m: torch.save(_with(t, key="0" * 24), p),
    "no model weights": lambda p, t, m: torch.save(_with(t, model={}), p),
    "step beyond the run": lambda p, t, m: torch.save(_with(t, step=10**6), p),
    "curve of other steps": lambda p, t, m: torch.save(_with(t, curve=[[1, 2.0]] * 5), p),
    "optimizer moment of another shape": lambda p, t, m: torch.save(_moment_shape(t), p),
}


def test_the_template_resume_point_is_sound(trained, tmp_path, capsys):
    """Control for the cases below: the undamaged resume point resumes silently to the same
    result (so a warning below comes from the damage, not from resuming as such)."""
    run_dir = tmp_path / trained["key"]
    run_dir.mkdir()
    shutil.copy(trained["last"], run_dir / "last.pt")
    r = train(trained["cfg"], ckpt_dir=tmp_path, device="cpu", progress=False)
    assert "warning" not in capsys.readouterr().err
    assert r.val_loss == trained["res"]["val_loss"] and r.curve == trained["res"]["curve"]


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_unusable_resume_point_warns_by_path_and_retrains_from_scratch(trained, tmp_path, capsys,
                                                                       damage):
    marker = tmp_path / "code-ran"
    last = tmp_path / trained["key"] / "last.pt"
    last.parent.mkdir()
    DAMAGES[damage](last, trained, marker)
    r = train(trained["cfg"], ckpt_dir=tmp_path, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert not marker.exists()
    warning = [line for line in err.splitlines() if str(last) in line]
    assert len(warning) == 1 and "from scratch" in warning[0]
    # from scratch, not from the damaged state: bit-identical to the undisturbed run
    assert r.val_loss == trained["res"]["val_loss"] and r.curve == trained["res"]["curve"]
    assert not last.exists()                      # a finished run leaves no resume point


def test_planted_resume_point_through_the_cli_runs_nothing_and_the_run_finishes(trained,
                                                                                 tmp_path, capsys):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "ckpt"
    (ckpt / trained["key"]).mkdir(parents=True)
    torch.save(_PlantedCode(marker), ckpt / trained["key"] / "last.pt")
    db = tmp_path / "runs.db"
    rc = main([*ARGS, "--db", str(db), "--ckpt-dir", str(ckpt)])
    out, err = capsys.readouterr()
    assert rc == 0 and not marker.exists()
    assert str(ckpt / trained["key"] / "last.pt") in err
    assert json.loads(out.strip().splitlines()[-1])["val_loss"] == trained["res"]["val_loss"]
    assert store.get_run(db, trained["key"])["status"] == "finished"


def _plant_last_checkpoint(run_dir: Path, marker: Path) -> Path:
    last = max(run_dir.glob("tokens_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    torch.save(_PlantedCode(marker), last)
    return last


def test_planted_weights_are_not_run_by_ptq_or_capture(trained, tmp_path, capsys):
    db, run_dir = _copy_run(trained, tmp_path)
    marker = tmp_path / "code-ran"
    planted = _plant_last_checkpoint(run_dir, marker)
    rc = main([*ARGS, "--db", str(db), "--ptq", "e2m1", "--ptq-block", "none"])
    _, err = capsys.readouterr()
    assert rc == 2 and not marker.exists()
    assert len(err.strip().splitlines()) == 1 and str(planted) in err and "code" in err
    npz = tmp_path / "ops.npz"
    rc = main([*ARGS, "--db", str(db), "--capture", str(npz)])
    _, err = capsys.readouterr()
    assert rc == 2 and not marker.exists() and not npz.exists()
    assert len(err.strip().splitlines()) == 1 and str(planted) in err
    # the library calls the CLI goes through, directly
    with pytest.raises(CheckpointError, match="never run"):
        ptq_run(db, trained["key"], [PTQSpec("e2m1", None)])
    corpus = load_corpus(trained["cfg"].corpus)
    with pytest.raises(CheckpointError, match=str(planted.name)):
        capture_from_run(run_dir, corpus.val, 2, 32)
    with pytest.raises(CheckpointError):
        load_checkpoint(planted)
    assert not marker.exists()


WEIGHT_DAMAGES = {
    "garbage": lambda p: p.write_bytes(b"garbage" * 100),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a list": lambda p: torch.save([1, 2], p),
    "no model config": lambda p: torch.save({"model": {}, "quant": {}}, p),
    "a bad model config": lambda p: torch.save({"model": {}, "quant": {},
                                                "model_config": {"layers": "x"}}, p),
    "weights of another model": lambda p: torch.save(
        {**torch.load(p, weights_only=True), "model": {"w": torch.zeros(2)}}, p),
}


@pytest.mark.parametrize("damage", list(WEIGHT_DAMAGES), ids=list(WEIGHT_DAMAGES))
def test_damaged_weights_stop_ptq_and_capture_with_one_line_naming_the_file(trained, tmp_path,
                                                                             capsys, damage):
    db, run_dir = _copy_run(trained, tmp_path)
    last = max(run_dir.glob("tokens_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    WEIGHT_DAMAGES[damage](last)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(last)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and str(last) in msg and "\n" not in msg
    for extra in (["--ptq", "e2m1", "--ptq-block", "none"],
                  ["--capture", str(tmp_path / "ops.npz")]):
        rc = main([*ARGS, "--db", str(db), *extra])
        _, err = capsys.readouterr()
        assert rc == 2 and len(err.strip().splitlines()) == 1 and str(last) in err, extra
        assert "Traceback" not in err


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "tokens_1.pt")


def test_saved_checkpoints_hold_only_weights_only_types(trained):
    """What train() saves loads under weights_only=True: resume point and PTQ weights."""
    state = torch.load(trained["last"], weights_only=True)
    assert state["key"] == trained["key"] and state["step"] == 5
    run_dir = trained["base"] / "runs.db.ckpt" / trained["key"]
    for path in run_dir.glob("tokens_*.pt"):
        model, st = load_checkpoint(path)
        assert st["tokens"] == int(path.stem.split("_")[1])
        assert sum(p.numel() for p in model.parameters()) > 0
