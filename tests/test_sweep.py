"""Sweeps: spec parsing, the grid, resuming after a kill with nothing lost or repeated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import alive, descendants, legacy_db

from explorer.train import store
from explorer.train.sweep import parse_spec, run_sweep

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
name = "test"
[grid]
model = [[1, 32]]
tokens = [8192, 12288, 16384]
format = ["none", "e4m3"]
block = ["none"]
targets = ["fwd_x"]
[train]
seq_len = 32
batch_size = 8
eval_tokens = 2048
eval_points = 2
ckpt_fracs = [0.5, 1.0]
[corpus]
max_bytes = 262144
[ptq]
formats = ["e2m1"]
blocks = ["none"]
[run]
threads = 1
"""


@pytest.fixture()
def env(tmp_path_factory, monkeypatch):
    cache = str(tmp_path_factory.getbasetemp() / "fpxcache")
    monkeypatch.setenv("FPX_CACHE", cache)
    e = dict(os.environ, FPX_CACHE=cache, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1",
             OMP_NUM_THREADS="1")
    return e


def test_spec_grid_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    s = parse_spec(p)
    assert len(s.runs) == 6                                   # 3 tokens x (none, e4m3)
    assert sum(not c.quant.active for c in s.runs) == 3
    assert [c.tokens for c in s.runs] == sorted(c.tokens for c in s.runs)
    assert s.wants_ptq(s.runs[0]) != s.wants_ptq(s.runs[1])   # PTQ of unquantized runs only
    p.write_text(SPEC.replace("tokens = ", "tokenz = "))
    with pytest.raises(ValueError, match="tokenz"):
        parse_spec(p)
    with pytest.raises(FileNotFoundError):
        parse_spec(tmp_path / "missing.toml")
    # [[grid]] tables: runs pooled, duplicates (the seed-0 baseline) removed
    p.write_text(SPEC.replace("[grid]", "[[grid]]") + """
[[grid]]
model = [[1, 32]]
tokens = [8192]
format = ["none"]
seed = [0, 1]
""")
    s2 = parse_spec(p)
    assert len(s2.runs) == 7 and sorted(c.seed for c in s2.runs) == [0] * 6 + [1]


RECIPE_SPEC = """
name = "recipes"
[grid]
model = [[1, 32]]
tokens = [8192]
recipe = ["te-nvfp4", "fp8-delayed", "none"]
block = [32, "channel"]          # collapse for recipe runs (and format "none")
targets = ["fwd_x", "all"]
rounding = ["rne", "sr"]
seed = [0, 1]
[train]
seq_len = 32
batch_size = 8
eval_tokens = 2048
eval_points = 2
ckpt_fracs = [1.0]
[corpus]
max_bytes = 262144
"""

MY_RECIPE = """
summary = "W in the forward GEMM as e2m1, per channel"
[fwd_w]
format = "e2m1"
block = "channel"
"""


def test_recipe_axis_expands_one_run_per_recipe_and_seed(tmp_path, env):
    from explorer.train.recipes import get_recipe
    from explorer.train.sweep import pending_runs
    p = tmp_path / "s.toml"
    p.write_text(RECIPE_SPEC)
    s = parse_spec(p)
    assert len(s.runs) == 3 * 2                              # block/targets/rounding collapse
    got = sorted((c.quant.recipe or "none", c.seed) for c in s.runs)
    assert got == sorted((r, seed) for r in ("te-nvfp4", "fp8-delayed", "none") for seed in (0, 1))
    for c in s.runs:
        if c.quant.recipe is None:
            assert not c.quant.active
        else:
            assert c.quant == get_recipe(c.quant.recipe).quant_config(c.seed)
            assert c.quant.recipe_hash == get_recipe(c.quant.recipe).content_hash
    todo, done = pending_runs(s, tmp_path / "none.db")
    assert done == 0 and len({key for _, key, _ in todo}) == 6   # every run its own key


def test_dry_run_names_recipes_and_bad_recipes_are_one_line_errors(tmp_path, env, capsys):
    from explorer.cli import main
    p = tmp_path / "s.toml"
    p.write_text(RECIPE_SPEC)
    assert main(["sweep", str(p), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("recipe=te-nvfp4") == 2 and out.count("recipe=fp8-delayed") == 2
    assert out.count("none block=None") == 2 and not (tmp_path / "r.db").exists()
    p.write_text(RECIPE_SPEC.replace('"te-nvfp4"', '"te-nvfp5"'))
    assert main(["sweep", str(p), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "te-nvfp5" in err and "fp8-delayed" in err


def test_recipe_files_are_relative_to_the_spec_and_names_are_checked(tmp_path, monkeypatch):
    from explorer.train.recipes import preset_names
    (tmp_path / "specs" / "rec").mkdir(parents=True)
    (tmp_path / "specs" / "rec" / "mine.toml").write_text(MY_RECIPE)
    p = tmp_path / "specs" / "s.toml"
    p.write_text(RECIPE_SPEC.replace('"te-nvfp4", "fp8-delayed"', '"rec/mine.toml"'))
    monkeypatch.chdir(tmp_path)                              # not the spec's folder
    s = parse_spec(p)
    assert sorted(c.quant.recipe or "none" for c in s.runs) == ["mine"] * 2 + ["none"] * 2
    mine = next(c.quant for c in s.runs if c.quant.recipe == "mine")
    assert [t for t, _ in mine.overrides] == ["fwd_w"]
    p.write_text(RECIPE_SPEC.replace('"te-nvfp4"', '"te-nvfp5"'))
    with pytest.raises(ValueError, match=r"\[grid\]\.recipe.*te-nvfp5") as info:
        parse_spec(p)
    assert all(name in str(info.value) for name in preset_names())
    p.write_text(RECIPE_SPEC.replace('"te-nvfp4"', '"rec/missing.toml"'))
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        parse_spec(p)
    p.write_text(RECIPE_SPEC.replace('"te-nvfp4"', '3'))
    with pytest.raises(ValueError, match=r"\[grid\]\.recipe"):
        parse_spec(p)


def test_recipe_and_format_are_exclusive_in_one_grid(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(RECIPE_SPEC.replace("seed = [0, 1]", 'seed = [0]\nformat = ["none", "e4m3"]'))
    with pytest.raises(ValueError, match=r"recipe \['te-nvfp4', 'fp8-delayed'\] and format "
                                         r"\['e4m3'\]"):
        parse_spec(p)
    # format "none" beside recipes is fine; format runs go in their own [[grid]]
    p.write_text(RECIPE_SPEC.replace("seed = [0, 1]", 'seed = [0]\nformat = ["none"]'))
    assert len(parse_spec(p).runs) == 3
    p.write_text(RECIPE_SPEC.replace("[grid]", "[[grid]]").replace("seed = [0, 1]", "seed = [0]")
                 + '[[grid]]\nmodel = [[1, 32]]\ntokens = [8192]\nformat = ["e4m3", "none"]\n')
    s = parse_spec(p)
    assert len(s.runs) == 4 and sum(c.quant.fmt == "e4m3" for c in s.runs) == 1


def test_a_sweep_of_two_recipes_records_them(tmp_path, env):
    pytest.importorskip("torch")
    p = tmp_path / "s.toml"
    p.write_text(RECIPE_SPEC.replace(', "none"]', "]").replace("seed = [0, 1]", "seed = [0]"))
    db = tmp_path / "r.db"
    rep = run_sweep(p, db, workers=1, progress=False)
    assert rep.ran == 2 and not rep.failed, rep.failed
    from explorer.train.recipes import get_recipe
    rows = {r["recipe"]: r for r in store.load_runs(db)}
    assert set(rows) == {"te-nvfp4", "fp8-delayed"}
    for name, r in rows.items():
        assert r["recipe_hash"] == get_recipe(name).content_hash
        assert r["fmt"] == "recipe" and r["exp_bits"] is None and r["man_bits"] is None
        assert set(r["targets"].split(",")) == set(get_recipe(name).quantized)
        assert r["config"]["train"]["quant"]["recipe"] == name


def test_ray_backend_missing_is_a_clear_error(tmp_path, env):
    pytest.importorskip("torch")
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    with pytest.raises(ValueError, match="ray"):
        run_sweep(p, tmp_path / "r.db", backend="ray", progress=False)


def _finished(db: Path) -> dict[str, float]:
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(db, timeout=30)
        return dict(con.execute("SELECT key, finished FROM runs WHERE status='finished'"))
    except sqlite3.OperationalError:
        return {}


def _start_sweep(spec: Path, db: Path, env: dict, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "explorer.cli", "sweep", str(spec),
                             "--db", str(db), "--workers", str(workers), "--no-progress"],
                            cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_finished(proc: subprocess.Popen, db: Path, n: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and len(_finished(db)) < n and proc.poll() is None:
        time.sleep(0.2)


def test_stopped_and_killed_sweep_resumes_with_nothing_lost_or_repeated(tmp_path, env):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "runs.db"
    # 1. SIGTERM to the sweep process alone: workers save a resume point and exit, exit code 130.
    proc = _start_sweep(spec, db, env, workers=2)
    _wait_finished(proc, db, 1)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("sweep did not stop within 60 s of SIGTERM")
    err = proc.stderr.read().decode()
    assert rc == 130 and "resume" in err, err[-2000:]
    time.sleep(0.5)
    assert not alive(workers), "worker processes left running after SIGTERM"
    rows = store.load_runs(db, status=None)
    assert {r["status"] for r in rows} <= {"finished", "running"}     # nothing marked failed
    for r in rows:
        if r["status"] == "running":                                  # stopped mid-run
            assert (Path(str(db) + ".ckpt") / r["key"] / "last.pt").exists()
    stopped = _finished(db)
    # 2. SIGKILL (a crash; one in-process worker keeps the test short): nothing lost.
    proc = _start_sweep(spec, db, env, workers=1)
    _wait_finished(proc, db, len(stopped) + 1)
    os.killpg(proc.pid, signal.SIGKILL)                       # the sweep and its workers
    proc.wait()
    before = _finished(db)
    assert len(stopped) < len(before) < 6 and all(before[k] == t for k, t in stopped.items()), \
        proc.stderr.read().decode()[-2000:]
    # 3. Resume: the rest runs, finished runs are not redone.
    rep = run_sweep(spec, db, workers=1, progress=False)
    after = _finished(db)
    assert len(after) == 6 and rep.total == 6 and not rep.interrupted
    assert rep.already_done + rep.ran == 6 and rep.ran >= 6 - len(before)
    for k, t in before.items():                               # finished runs were not redone
        assert after[k] == t
    assert len(store.load_runs(db, status=None)) == 6
    ptq = store.load_ptq(db)
    unq = {r["key"] for r in store.load_runs(db) if r["fmt"] == "none"}
    assert {(r["run_key"]) for r in ptq} == unq and len(ptq) == 3 * 2   # 2 checkpoints each
    again = run_sweep(spec, db, workers=1, progress=False)    # a third call does nothing
    assert again.ran == 0 and again.already_done == 6 and _finished(db) == after
    # 4. Export: CSVs of finished runs and PTQ rows, and the paired summary.
    from explorer.train.export import analyse, export_csv, main
    rp, pp = export_csv(db, tmp_path / "out")
    runs_csv, ptq_csv = rp.read_text().splitlines(), pp.read_text().splitlines()
    assert len(runs_csv) == 1 + 6 and runs_csv[0].startswith("key,n_params,tokens,fmt")
    assert len(ptq_csv) == 1 + 6 and ptq_csv[0].endswith("val_loss_after,delta")
    a = analyse(db)
    assert a["by_format"]["e4m3@None"]["n"] == 3 and a["runs"] == 6 and a["runs_with_cpu"] == 6
    assert len(a["d_monotone"]) == 2 and a["ptq_by_bits"]["P=4 rtn"]["n"] == 6
    assert main([str(tmp_path / "nope.db"), str(tmp_path)]) == 2


def test_ray_backend_on_a_local_instance(tmp_path, env):
    """`--backend ray` against a local Ray instance (ray is an optional extra: skipped without;
    ~20 s idle, ~40 s on a busy 2-core machine): every run finishes, a rerun does nothing, and
    no Ray process outlives the sweep."""
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'fpx-explorer[ray]')")
    import tempfile
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    db = tmp_path / "ray.db"
    ray_tmp = tempfile.mkdtemp(prefix="fpxray", dir="/tmp")      # short: Ray's socket paths
    # The sweep starts (and must shut down) its own local instance: no ray.init() here.
    runtime_env = {"env_vars": {k: env[k] for k in ("FPX_CACHE", "PYTHONPATH", "NUMBA_NUM_THREADS",
                                                    "OMP_NUM_THREADS")}}
    real_init = ray.init

    def init(*a, **kw):                                       # a local, 2-CPU instance
        return real_init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                         _temp_dir=ray_tmp, runtime_env=runtime_env)
    try:
        ray.init = init
        rep = run_sweep(p, db, workers=2, backend="ray", progress=False)
        first = _finished(db)
        assert len(first) == 6 and rep.ran == 6 and not rep.failed
        assert not ray.is_initialized()                       # the sweep shut its instance down
        rep = run_sweep(p, db, workers=2, backend="ray", progress=False)      # nothing to do
        assert rep.ran == 0 and rep.already_done == 6 and _finished(db) == first
        assert len(store.load_ptq(db)) == 3 * 2
    finally:
        ray.init = real_init
        if ray.is_initialized():
            ray.shutdown()
    deadline = time.time() + 20
    while time.time() < deadline and _ray_processes(ray_tmp):
        time.sleep(0.5)
    assert not _ray_processes(ray_tmp), "Ray processes left running"


def _ray_processes(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (the Ray session folder)."""
    out = []
    for c in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in c.read_bytes() and alive({int(c.parent.name)}):
                out.append(int(c.parent.name))
        except OSError:
            continue
    return out


# --- spec validation ------------------------------------------------------------------------

@pytest.mark.parametrize("edit, match", [
    (("[ptq]\n", "[ptq]\nformat = ['e2m1']\n"),
     r"spec \[ptq\]: unknown key\(s\) \['format'\]; allowed: \['blocks', 'formats', 'methods', "
     r"'runs'\]"),
    (("[run]\n", "[run]\nthread = 2\n"), r"\[run\]: unknown key\(s\) \['thread'\]; allowed: "
                                         r"\['threads'\]"),
    (("[corpus]\n", "[corpus]\nmax_byte = 1\n"), r"\[corpus\]: unknown key\(s\) \['max_byte'\]; "
                                                 r"allowed: \['max_bytes', 'paths', "),
    (("[train]\n", "[train]\nlearning_rate = 1\n"), r"\[train\]: unknown key\(s\) "
                                                    r"\['learning_rate'\]; allowed: \[.*'lr'"),
    (("name = ", "nmae = 1\nname = "), r"spec top level: unknown key\(s\) \['nmae'\]; allowed"),
    (("tokens = [8192, ", 'tokens = ["８１９２", '),
     r"\[grid\]\.tokens: '８１９２' contains the non-ASCII digit '８' \(U\+FF18\)"),
    (("format = [\"none\", \"e4m3\"]", "format = [\"none\", \"e４m3\"]"), r"\[grid\].*'e４m3'"),
    (("threads = 1", 'threads = "２"'), r"\[run\].*non-ASCII digit '２'"),
    (("formats = [\"e2m1\"]", "formats = [\"e2m١\"]"), r"\[ptq\].*U\+0661"),
    (("tokens = [8192, ", "tokens = [8192.5, "), r"\[grid\]\.tokens: expected an integer >= 1"),
    (("threads = 1", "threads = 0"), r"\[run\]\.threads: expected an integer >= 1, got 0"),
    (("[ptq]\n", "[ptq]\nmethods = []\n"), r"\[ptq\]\.methods must be a non-empty list"),
])
def test_spec_keys_and_numbers_are_checked(tmp_path, edit, match):
    p = tmp_path / "s.toml"
    text = SPEC.replace(*edit, 1)
    assert text != SPEC
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        parse_spec(p)


def test_spec_accepts_ascii_numbers_in_any_toml_form(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SPEC.replace("tokens = [8192, 12288, 16384]", 'tokens = [8192, "12288", 16384.0]')
                 .replace('name = "test"', 'name = "Überlauf ２"'), encoding="utf-8")
    s = parse_spec(p)                  # the name is free text: any script
    assert sorted({c.tokens for c in s.runs}) == [8192, 12288, 16384] and s.name == "Überlauf ２"


@pytest.mark.parametrize("bad", [-1, 0, True, 1.0])
def test_max_runs_must_be_at_least_one(tmp_path, bad):
    from explorer.train.sweep import check_max_runs
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    with pytest.raises(ValueError, match=r"^--max-runs: must be an integer >= 1"):
        run_sweep(p, tmp_path / "r.db", max_runs=bad, progress=False)
    assert not (tmp_path / "r.db").exists()
    assert check_max_runs(None) is None and check_max_runs(2) == 2


# --- the --db file: dry runs only read it, bad files end in one line ------------------------

def _fpx(capsys, *argv) -> tuple[int, str, str]:
    from explorer.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_dry_run_changes_nothing(tmp_path, env, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    legacy = tmp_path / "legacy.db"
    legacy_db(legacy, "INSERT INTO runs (key, status, created) VALUES ('x', 'finished', 1);")
    wal = tmp_path / "wal" / "wal.db"
    store.mark_running(wal, "y", {}, n_params=1, tokens=1, exp_bits=None, man_bits=None,
                       block=None, fmt="none", targets="")
    store.mark_finished(wal, "y", val_loss=1.0, curve=[], tokens=1, wall_s=1.0, tokens_per_s=1.0,
                        env={})
    for db, mode in ((legacy, "delete"), (wal, "wal")):
        before = db.read_bytes()
        rc, out, err = _fpx(capsys, "sweep", spec, "--db", db, "--dry-run", "--json",
                            "--max-runs", 2)
        assert rc == 0, err
        assert '"already_done": 0' in out and out.count('"key"') == 2
        assert db.read_bytes() == before, f"--dry-run changed {db}"
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == mode
        cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        con.close()
        assert ("heartbeat" in cols) == (db == wal)          # no column added to the legacy one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.db", "s.toml", "wal"]
    missing = tmp_path / "new" / "runs.db"
    rc, out, err = _fpx(capsys, "sweep", spec, "--db", missing, "--dry-run")
    assert rc == 0 and "6 runs, 0 done, 6 to run" in out, err
    assert not missing.parent.exists()                       # neither the file nor its folder


@pytest.mark.parametrize("dry", [False, True])
def test_bad_db_files_end_in_one_line_and_stay_unchanged(tmp_path, env, capsys, dry):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00junk, not a database\n" * 64)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.commit()
    con.close()
    for db, why in ((garbage, "file is not a database"), (foreign, "no 'runs' table")):
        before = db.read_bytes()
        rc, out, err = _fpx(capsys, "sweep", spec, "--db", db, "--no-progress",
                            *(["--dry-run"] if dry else []))
        assert rc == 2 and out == "", err
        assert err.count("\n") == 1 and str(db) in err and why in err, err
        assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db", "garbage.db", "s.toml"]
    rc, _, err = _fpx(capsys, "sweep", spec, "--db", tmp_path / "r.db", "--max-runs", -1)
    assert rc == 2 and "--max-runs: must be an integer >= 1" in err and err.count("\n") == 1


def test_read_only_db_is_refused_before_any_run(tmp_path, env, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "ro.db"
    legacy_db(db, "INSERT INTO runs (key, status, created) VALUES ('x', 'finished', 1);")
    before = db.read_bytes()
    db.chmod(0o444)
    try:
        with pytest.raises(PermissionError, match=f"results database {db} is read-only") as info:
            run_sweep(spec, db, progress=False)
        assert info.value.args == (str(info.value),)         # one message, no errno
        rc, out, err = _fpx(capsys, "sweep", spec, "--db", db, "--no-progress")
        assert rc == 2 and err.count("\n") == 1 and f"{db} is read-only" in err, err
    finally:
        db.chmod(0o644)
    assert db.read_bytes() == before and not Path(f"{db}.ckpt").exists()
