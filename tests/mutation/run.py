"""Mutation testing of the core numeric modules with cosmic-ray: do the tests fail when the code is wrong?

    pip install cosmic-ray
    python tests/mutation/run.py --out /tmp/mutation [--modules ops dpo] [--sample 30] [--workers 2]
    python tests/mutation/run.py --out /tmp/mutation-after --survivors-of /tmp/mutation

cosmic-ray writes one mutant at a time into a copy of the repository (one copy per worker, so the checkout is
never touched) and runs that module's tests (MODULE_TESTS) against it: a failing run kills the mutant. Two kinds
of mutant are left out before anything runs, and counted:
  - mutants inside type annotations: with `from __future__ import annotations` they are never evaluated, so
    they are equivalent by construction;
  - with --sample K, all but K mutants per module drawn at random (seeded): a full run is ~3,800 mutants, hours
    on two cores.
--survivors-of DIR reruns only the mutants that survived an earlier run (same code, more tests: a killed mutant
stays killed while no test is removed). The report is DIR/report.md; DIR/<module>.sqlite is cosmic-ray's session.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each module's own tests: the unit tests that exercise it (files that do not exist yet are skipped).
MODULE_TESTS = {
    "ops": ["test_ops", "test_ppo", "test_dpo", "test_sampling", "test_references_model", "test_references_losses",
            "test_properties"],
    "ppo_losses": ["test_ppo", "test_grpo_rloo", "test_references_losses", "test_properties",
                   "test_training_options"],
    "dpo": ["test_dpo", "test_references_losses", "test_properties", "test_training_options"],
    "reward_model": ["test_reward_model", "test_best_of_n", "test_references_losses", "test_properties"],
    "transformer": ["test_transformer", "test_sampling", "test_references_model"],
    "sampling": ["test_sampling", "test_best_of_n", "test_references_model"],
    "best_of_n": ["test_best_of_n", "test_references_model"],
    "grpo_rloo": ["test_grpo_rloo", "test_references_losses", "test_properties"],
    "gold": ["test_world", "test_reward_model", "test_references_losses"],
    "preferences": ["test_reward_model", "test_world", "test_references_losses"],
    "checkpoint": ["test_pipeline", "test_references_model", "test_cli"],
}
# The independent checks of the grader's references judge library code too (tests/test_checks_independent.py).
CHECKS_TEST = "test_checks_independent"
# Only tests of the module's behaviour: the quick-pipeline fixture is 30 s of unrelated training.
KEYWORDS = {"checkpoint": "checkpoint"}


def test_command(module: str) -> str:
    files = [f"tests/{name}.py" for name in MODULE_TESTS[module] + [CHECKS_TEST] if (REPO / "tests" / f"{name}.py").exists()]
    keyword = f" -k {KEYWORDS[module]}" if module in KEYWORDS else ""
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts='' {' '.join(files)}{keyword}"


def annotation_rows(path: Path) -> set[int]:
    """Line numbers covered only by annotations (argument and return annotations, annotated names)."""
    rows = set()
    for node in ast.walk(ast.parse(path.read_text())):
        spans = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            spans.append(node.returns)
        if isinstance(node, ast.arg) and node.annotation is not None:
            spans.append(node.annotation)
        if isinstance(node, ast.AnnAssign):
            spans.append(node.annotation)
        for a in spans:
            rows.add((a.lineno, a.col_offset, a.end_lineno, a.end_col_offset))
    return rows


def inside(spec: tuple[int, int, int, int], spans: set) -> bool:
    r0, c0, r1, c1 = spec
    return any((r0, c0) >= (a0, b0) and (r1, c1) <= (a1, b1) for a0, b0, a1, b1 in spans)


def skip(db: sqlite3.Connection, job_ids: list[str], why: str) -> None:
    db.executemany("INSERT OR REPLACE INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
                   "VALUES ('SKIPPED', ?, NULL, '', ?)", [(why, j) for j in job_ids])
    db.commit()


def init_session(module: str, out: Path, sample: int | None, seed: int, keep: set[str] | None) -> dict:
    config, session = out / f"{module}.toml", out / f"{module}.sqlite"
    config.write_text(
        f'[cosmic-ray]\nmodule-path = "minirlhf/{module}.py"\ntimeout = 600.0\nexcluded-modules = []\n'
        f'test-command = "{test_command(module)}"\n\n[cosmic-ray.distributor]\nname = "local"\n'
    )
    session.unlink(missing_ok=True)
    shutil.copy(REPO / "minirlhf" / f"{module}.py", out / f"{module}.py.orig")  # the source the mutants come from
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=REPO, check=True, capture_output=True)
    db = sqlite3.connect(session)
    specs = db.execute("SELECT job_id, start_pos_row, start_pos_col, end_pos_row, end_pos_col, operator_name, "
                       "occurrence FROM mutation_specs ORDER BY job_id").fetchall()
    spans = annotation_rows(REPO / "minirlhf" / f"{module}.py")
    in_annotation = [s[0] for s in specs if inside(s[1:5], spans)]
    skip(db, in_annotation, "equivalent: inside a type annotation (never evaluated)")
    rest = [s for s in specs if s[0] not in set(in_annotation)]
    if keep is not None:  # rerun the same mutants as before, found by what they change, not by line number
        lines = (REPO / "minirlhf" / f"{module}.py").read_text().splitlines()
        chosen = [s for s in rest if (s[5], lines[s[1] - 1].strip(), s[2]) in keep]
    elif sample is not None and sample < len(rest):
        chosen = random.Random(f"{seed}-{module}").sample(rest, sample)
    else:
        chosen = rest
    chosen_ids = {s[0] for s in chosen}
    skip(db, [s[0] for s in rest if s[0] not in chosen_ids], "not in this run's sample")
    return {"generated": len(specs), "annotation": len(in_annotation), "run": len(chosen)}


def run_worker(modules: list[str], out: Path, index: int) -> None:
    copy = out / f"worker{index}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "runs", "artifacts", "__pycache__", "mutants"))
    env = dict(os.environ, PYTHONPATH=str(copy), JAX_COMPILATION_CACHE_DIR=str(out / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    for module in modules:
        subprocess.run(["cosmic-ray", "exec", str(out / f"{module}.toml"), str(out / f"{module}.sqlite")],
                       cwd=copy, env=env, check=True, capture_output=True)


def survivor_keys(out: Path, module: str) -> set[tuple]:
    """(operator, the mutated line's text, column) of each survivor: the same mutant after lines moved."""
    lines = (out / f"{module}.py.orig").read_text().splitlines()
    return {(op, lines[row - 1].strip(), col) for op, _, row, col, _, _ in survivors(out, module)}


def survivors(out: Path, module: str) -> list[tuple]:
    db = sqlite3.connect(out / f"{module}.sqlite")
    return db.execute(
        "SELECT s.operator_name, s.occurrence, s.start_pos_row, s.start_pos_col, s.definition_name, r.diff "
        "FROM mutation_specs s JOIN work_results r ON s.job_id = r.job_id WHERE r.test_outcome = 'SURVIVED' "
        "ORDER BY s.start_pos_row, s.operator_name").fetchall()


def counts(out: Path, module: str) -> dict:
    db = sqlite3.connect(out / f"{module}.sqlite")
    rows = db.execute("SELECT worker_outcome, test_outcome, COUNT(*) FROM work_results "
                      "WHERE worker_outcome != 'SKIPPED' GROUP BY worker_outcome, test_outcome").fetchall()
    c = {"killed": 0, "survived": 0, "incompetent": 0, "other": 0}
    for worker, test, n in rows:
        test = (test or "").lower()
        c[test if test in c else "other"] += n
    return c


def write_report(out: Path, modules: list[str], sizes: dict, seconds: float) -> None:
    lines = [f"# Mutation run ({seconds:.0f} s)", "", "| module | generated | in annotations | run | killed | "
             "survived | incompetent | other |", "|---|---|---|---|---|---|---|---|"]
    total = {}
    for m in modules:
        row = {**sizes[m], **counts(out, m)}
        total = {k: total.get(k, 0) + v for k, v in row.items()}
        lines.append(f"| {m} | " + " | ".join(str(row[k]) for k in
                     ("generated", "annotation", "run", "killed", "survived", "incompetent", "other")) + " |")
    lines.append("| all | " + " | ".join(str(total[k]) for k in
                 ("generated", "annotation", "run", "killed", "survived", "incompetent", "other")) + " |")
    lines += ["", "## Survivors", ""]
    for m in modules:
        for op, occ, row, col, fn, diff in survivors(out, m):
            lines += [f"### {m}.py:{row} in `{fn}` ({op} #{occ})", "```diff", diff.strip(), "```", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for sessions and the report (created)")
    ap.add_argument("--modules", nargs="+", default=list(MODULE_TESTS), choices=list(MODULE_TESTS))
    ap.add_argument("--sample", type=int, default=None, help="mutants per module, drawn at random (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample")
    ap.add_argument("--workers", type=int, default=2, help="repository copies run side by side")
    ap.add_argument("--survivors-of", type=Path, default=None, help="rerun only the survivors of this earlier run")
    args = ap.parse_args(argv)
    if shutil.which("cosmic-ray") is None:
        ap.error("cosmic-ray is not installed: pip install cosmic-ray")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sizes = {}
    for m in args.modules:
        keep = None
        if args.survivors_of is not None:
            keep = survivor_keys(args.survivors_of, m)
        sizes[m] = init_session(m, args.out, args.sample, args.seed, keep)
        print(f"{m}: {sizes[m]}", flush=True)
    # Spread modules over workers by how many mutants each runs, largest first.
    loads = [[] for _ in range(args.workers)]
    for m in sorted(args.modules, key=lambda m: -sizes[m]["run"]):
        min(loads, key=lambda w: sum(sizes[x]["run"] for x in w)).append(m)
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda iw: run_worker(iw[1], args.out, iw[0]), enumerate(loads)))
    write_report(args.out, args.modules, sizes, time.perf_counter() - start)
    print((args.out / "report.md").read_text().split("## Survivors")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
