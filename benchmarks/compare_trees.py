"""Run one benchmark against two source trees, alternating, so that both see the same machine.

    git worktree add /tmp/base HEAD~1
    python benchmarks/compare_trees.py --base /tmp/base [--rounds 2] -- [benchmark options]

Each round runs ``--bench`` (default ``benchmarks/bench_fpformat.py``) once with the base tree's
packages and once with this tree's, in fresh processes, and prints both outputs one after the
other.  The benchmarks print ratios to ``np.copyto`` measured inside each run, so compare the
ratios of the same round: a noisy neighbour affects a round's two runs alike.  An editable
install would shadow the base tree's packages; each run imports them from its tree explicitly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# Drop the editable install's finder (it maps fpformat/explorer to one checkout), put the tree
# first on the path, then run the benchmark as a script.
_RUNNER = ("import runpy, sys; "
           "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
           "sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")


def run(tree: Path, bench: Path, args: list[str]) -> str:
    """The benchmark's output, run against the packages in ``tree``."""
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(tree), str(bench), *args],
                          capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{bench.name} failed against {tree}:\n{done.stderr}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the other source tree")
    ap.add_argument("--bench", type=Path, default=HERE / "benchmarks" / "bench_fpformat.py")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("args", nargs="*", help="options for the benchmark (after --)")
    a = ap.parse_args()
    if not (a.base / "fpformat").is_dir():
        ap.error(f"--base: {a.base} has no fpformat/ package")
    trees = {"base": a.base.resolve(), "this": HERE}
    for label, tree in trees.items():                      # compile and cache, untimed
        run(tree, a.bench, a.args + ["--repeat", "1"])
        print(f"warmed {label}: {tree}", flush=True)
    for r in range(1, a.rounds + 1):
        for label, tree in trees.items():
            print(f"\n=== round {r}, {label} ({tree})\n{run(tree, a.bench, a.args)}", flush=True)


if __name__ == "__main__":
    main()
