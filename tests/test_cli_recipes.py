"""`fpx recipes` and `fpx train --recipe` (issue 16): listing, printing, round trips through
the TOML, one-line errors, and tiny training runs from a preset and from a user's file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from procs import run_cli

from explorer.train.qlinear import TARGETS
from explorer.train.recipes import get_recipe, parse_recipe, preset_names

PRESETS = ("deepseek-v3", "fp8-delayed", "mxfp4-sr", "sun2025", "te-mxfp8", "te-nvfp4")

TINY = ["train", "--layers", "1", "--d-model", "32", "--tokens", "4096", "--seq-len", "32",
        "--batch-size", "8", "--eval-tokens", "2048", "--max-bytes", "262144", "--threads", "1",
        "--device", "cpu", "--no-progress"]


pytestmark = pytest.mark.usefixtures("train_env")


def _one_error(err: str, command: str) -> str:
    """The single stderr line of a user error (no traceback), without its prefix."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"fpx {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def test_list_names_every_preset_with_its_hash_and_summary(capsys):
    assert preset_names() == PRESETS
    rc, out, err = run_cli(capsys, "recipes")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(PRESETS)
    for line, name in zip(lines, PRESETS):
        r = get_recipe(name)
        got_name, got_hash, summary = line.split(None, 2)
        assert (got_name, got_hash, summary) == (name, r.content_hash, r.summary)
        assert len(got_hash) == 16 and int(got_hash, 16) >= 0


def test_list_json(capsys):
    rc, out, _ = run_cli(capsys, "recipes", "--json")
    assert rc == 0
    entries = json.loads(out)
    assert [e["name"] for e in entries] == list(PRESETS)
    for e in entries:
        r = get_recipe(e["name"])
        assert e == {"name": r.name, "hash": r.content_hash, "summary": r.summary,
                     "reference": r.reference, "quantized": list(r.quantized)}
        assert e["reference"] and set(e["quantized"]) <= set(TARGETS)
    by = {e["name"]: e for e in entries}
    assert by["sun2025"]["quantized"] == ["fwd_w", "dgrad_w", "wgrad_x"]
    assert by["te-nvfp4"]["quantized"] == list(TARGETS)
    assert by["mxfp4-sr"]["quantized"] == ["dgrad_dy", "dgrad_w", "wgrad_dy", "wgrad_x"]


@pytest.mark.parametrize("name", PRESETS)
def test_toml_round_trips_to_the_same_hash(capsys, name):
    rc, out, err = run_cli(capsys, "recipes", name, "--toml")
    assert rc == 0 and err == ""
    r = get_recipe(name)
    assert out == r.text
    again = parse_recipe(out, "stdout")
    assert again.name == name and again.content_hash == r.content_hash


def test_show_prints_describe_then_the_toml(capsys):
    rc, out, _ = run_cli(capsys, "recipes", "te-nvfp4")
    r = get_recipe("te-nvfp4")
    assert rc == 0 and out == r.describe() + "\n\n" + r.text
    assert "random Hadamard transform, 16 elements" in out
    rc, out, _ = run_cli(capsys, "recipes", "deepseek-v3", "--json")
    d = json.loads(out)
    assert rc == 0 and d["hash"] == get_recipe("deepseek-v3").content_hash
    assert parse_recipe(d["toml"]).content_hash == d["hash"]
    assert d["describe"].startswith("deepseek-v3  (hash ")


def test_bad_recipes_are_one_line_exit_2(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "recipes", "te-nvfp5")
    msg = _one_error(err, "recipes")
    assert rc == 2 and out == "" and "'te-nvfp5'" in msg and "te-nvfp4" in msg
    rc, _, err = run_cli(capsys, "recipes", str(tmp_path / "missing.toml"))
    assert rc == 2 and "missing.toml" in _one_error(err, "recipes")
    bad = tmp_path / "bad.toml"
    bad.write_text('[fwd_x]\nformat = "e4m3"\nblok = 32\n')
    rc, _, err = run_cli(capsys, "recipes", str(bad))
    msg = _one_error(err, "recipes")
    assert rc == 2 and "bad.toml" in msg and "blok" in msg
    bad.write_text('[fwd_x]\nformat = "e9q9"\n')
    rc, _, err = run_cli(capsys, "recipes", str(bad))
    assert rc == 2 and "e9q9" in _one_error(err, "recipes")
    rc, _, err = run_cli(capsys, "recipes", "--toml")
    assert rc == 2 and "give its name" in _one_error(err, "recipes")
    rc, _, err = run_cli(capsys, "recipes", "sun2025", "--toml", "--json")
    assert rc == 2 and "--toml and --json" in _one_error(err, "recipes")


@pytest.mark.parametrize("extra, flag", [
    (["--format", "e2m3"], "--format"),
    (["--block", "32"], "--block"),
    (["--targets", "all"], "--targets"),
    (["--rounding", "sr"], "--rounding"),
    (["--accumulator", "e8m13/rtz"], "--accumulator"),
    (["--matrix-unit", "h100"], "--matrix-unit"),
    (["--matrix-unit-format", "bfloat16"], "--matrix-unit-format"),
    (["--promotion", "128"], "--promotion"),
])
def test_train_recipe_refuses_options_it_sets(capsys, tmp_path, extra, flag):
    db = tmp_path / "runs.db"
    rc, out, err = run_cli(capsys, *TINY, "--recipe", "sun2025", *extra, "--db", str(db))
    msg = _one_error(err, "train")
    assert rc == 2 and out == "" and msg.startswith(f"{flag} cannot be given with --recipe")
    assert not db.exists()                          # refused before anything is written


def test_train_promotion_without_a_matrix_unit_exit_2(capsys, tmp_path):
    db = tmp_path / "runs.db"
    rc, out, err = run_cli(capsys, *TINY, "--format", "e4m3", "--promotion", "128",
                           "--db", str(db))
    assert rc == 2 and out == "" and "promotion (128) needs a matrix_unit" in _one_error(
        err, "train")
    assert not db.exists()


def test_train_unknown_recipe_exit_2(capsys):
    rc, _, err = run_cli(capsys, *TINY, "--recipe", "nope")
    assert rc == 2 and "unknown recipe 'nope'" in _one_error(err, "train")


def test_train_with_a_preset_recipe(capsys, tmp_path):
    db = tmp_path / "runs.db"
    # --format none is the default, so it is no conflict.
    rc, out, err = run_cli(capsys, *TINY, "--recipe", "te-nvfp4", "--format", "none",
                           "--db", str(db), "--json")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    nv = get_recipe("te-nvfp4")
    assert r["recipe"] == "te-nvfp4" and r["recipe_hash"] == nv.content_hash
    assert r["format"] == "recipe:te-nvfp4" and r["targets"] == list(TARGETS)
    assert r["block"] is None and not r["skipped"] and r["val_loss"] > 0
    from explorer.train.store import load_runs
    (row,) = load_runs(db)
    assert (row["fmt"], row["recipe"], row["recipe_hash"]) == ("recipe", "te-nvfp4",
                                                                nv.content_hash)
    assert row["targets"] == ",".join(TARGETS) and row["exp_bits"] is None
    # Text output: the recipe and its hash in the summary line.
    rc, out, _ = run_cli(capsys, *TINY, "--recipe", "te-nvfp4", "--db", str(db))
    assert rc == 0 and "already in the database" in out
    assert f"recipe te-nvfp4 (hash {nv.content_hash}; quantizes " in out


def test_train_with_a_user_toml_recipe(capsys, tmp_path):
    # A user's copy of sun2025 under another name: the same hash (what it does), its own name.
    rc, text, _ = run_cli(capsys, "recipes", "sun2025", "--toml")
    assert rc == 0
    mine = tmp_path / "my-recipe.toml"
    mine.write_text(text.replace('name = "sun2025"\n', "") + "\n[fwd_x]\nformat = \"e4m3\"\n"
                    "block = \"channel\"\n")
    rc, out, err = run_cli(capsys, *TINY, "--recipe", str(mine), "--json")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    user = get_recipe(mine)
    assert user.name == "my-recipe" and user.content_hash != get_recipe("sun2025").content_hash
    assert (r["recipe"], r["recipe_hash"]) == ("my-recipe", user.content_hash)
    assert r["format"] == "recipe:my-recipe"
    assert r["targets"] == ["fwd_x", "fwd_w", "dgrad_w", "wgrad_x"]
    same = tmp_path / "renamed.toml"
    same.write_text(text.replace('name = "sun2025"', 'name = "renamed"'))
    rc, out, _ = run_cli(capsys, "recipes", str(same), "--json")
    d = json.loads(out)
    assert rc == 0 and d["name"] == "renamed"
    assert d["hash"] == get_recipe("sun2025").content_hash     # the name is not in the hash


def test_the_docs_example_recipe_is_valid(capsys, tmp_path):
    doc = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    (text,) = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S) if 'name = "my-fp6"' in b]
    path = tmp_path / "my-fp6.toml"
    path.write_text(text)
    rc, out, err = run_cli(capsys, "recipes", str(path), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["name"] == "my-fp6" and d["quantized"] == list(TARGETS)
    assert "wgrad     random Hadamard transform, 32 elements, signs step" in d["describe"]
