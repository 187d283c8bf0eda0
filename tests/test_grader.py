"""The grader CLI: full marks for the solutions, zero for the untouched stubs, JSON and JUnit reports, and a
hostile implementation (raises, loops, prints megabytes, NaN, wrong dtype/shape, exits, crashes) survived."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from minirlhf.checks import EXERCISES, MAX_SCORE
from minirlhf.grade import REPO_ROOT, classroom_tests, classroom_workflow

HOSTILE = Path(__file__).parent / "hostile_impl"
FIELDS = {"name", "module", "points", "max_points", "passed", "reason"}


def grade_cli(tmp_path: Path, *args: str, returncode: int = 0) -> tuple[subprocess.CompletedProcess, dict, ET.Element]:
    """Run `python -m minirlhf.grade ARGS --json --junit`; returns the process, the JSON and the JUnit root."""
    report, junit = tmp_path / "report.json", tmp_path / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "minirlhf.grade", *args, "--json", str(report), "--junit", str(junit)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == returncode, f"exit status {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(report.read_text()), ET.parse(junit).getroot()


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return grade_cli(tmp_path_factory.mktemp("solutions"), "--impl", "solutions", "--require-pass")


def test_solutions_get_full_marks(solutions):
    proc, report, _ = solutions
    failed = {r["name"]: r["reason"] for r in report["exercises"] if not r["passed"]}
    assert not failed, f"the reference solutions must pass every check: {failed}"
    assert report["score"] == report["max_score"] == MAX_SCORE
    assert f"score: {MAX_SCORE} / {MAX_SCORE}" in proc.stdout


def test_json_report_has_one_entry_per_exercise_with_the_documented_fields(solutions):
    _, report, _ = solutions
    assert {"score", "max_score", "exercises"} <= set(report)
    assert [r["name"] for r in report["exercises"]] == [e.name for e in EXERCISES]
    for r, ex in zip(report["exercises"], EXERCISES):
        assert FIELDS <= set(r), f"{r['name']} lacks {FIELDS - set(r)}"
        assert (r["module"], r["max_points"], r["points"]) == (ex.stage, ex.points, ex.points)


def test_junit_report_lists_every_exercise(solutions):
    _, _, root = solutions
    suite = root.find("testsuite")
    assert suite.get("tests") == str(len(EXERCISES)) and suite.get("failures") == "0"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [e.name for e in EXERCISES]
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"score": str(MAX_SCORE), "max_score": str(MAX_SCORE)}


def test_untouched_exercises_score_zero_and_every_failure_is_not_implemented(tmp_path):
    # --require-pass: exit 1 unless everything passed (for CI steps that grade by exit status). Without it
    # the exit status is 0 whenever grading ran, as the hostile test below shows.
    proc, report, root = grade_cli(tmp_path, "--impl", "exercises", "--require-pass", returncode=1)
    assert report["score"] == 0 and report["max_score"] == MAX_SCORE
    for r in report["exercises"]:
        assert not r["passed"] and r["reason"].startswith("NotImplementedError"), f"{r['name']}: {r['reason']}"
    assert root.find("testsuite").get("failures") == str(len(EXERCISES))
    assert len(root.findall(".//failure")) == len(EXERCISES)


def test_hostile_implementation_fails_exercise_by_exercise_and_grading_goes_on(tmp_path):
    impl = tmp_path / "hostile"
    shutil.copytree(HOSTILE, impl)
    started = time.perf_counter()
    proc, report, root = grade_cli(tmp_path, "--impl", str(impl), "--timeout", "3")
    took = time.perf_counter() - started
    results = {r["name"]: r for r in report["exercises"]}
    assert len(results) == len(EXERCISES) and report["score"] == 0
    expected = {
        "layer_norm": "raised ValueError: boom (at",  # an exception, pointing at the learner's line
        "causal_valid": "has shape (3, 3), expected (2, 5, 5)",  # wrong shape (after 10 MB to the raw fd)
        "attention": "expected",  # wrong numbers, after printing ~6 MB
        "ffn": "is nan where",  # NaN
        "token_logprobs": "timed out after 3 s",  # an endless loop
        "masked_mean": "dtype int32, expected float32",  # wrong dtype
        "lm_loss": "called sys.exit(3)",
        "sample_token": "crashed the Python process",  # os._exit kills the worker
        "response_mask": "no file",  # sft.py missing
        "kl_bound": "should be a number",
        "finite_best_of_n_kl": "has no function finite_best_of_n_kl()",
    }
    for ex in EXERCISES:
        if ex.stage == "reward_model":
            expected[ex.name] = "reward_model.py timed out"  # loops forever at import: once, not per exercise
        elif ex.stage == "ppo":
            expected[ex.name] = "raised RuntimeError: bad import"
        elif ex.stage == "dpo":
            expected[ex.name] = "dpo.py called sys.exit(2)"
    for name, fragment in expected.items():
        assert fragment in results[name]["reason"], f"{name}: expected {fragment!r} in {results[name]['reason']!r}"
    printed = results["attention"]["output"]
    assert "debug line 0 " in printed and "debug line 99999 " in printed and "characters cut" in printed
    assert len(printed) < 10_000, "captured output must be truncated"
    assert len(proc.stdout) + len(proc.stderr) < 30_000, "the learner's megabytes must not reach the grader's output"
    assert took < 150, f"two 3 s timeouts and a few worker restarts should not take {took:.0f} s"
    assert len(root.find("testsuite").findall("testcase")) == len(EXERCISES)


def test_usage_errors_are_named():
    bad = subprocess.run([sys.executable, "-m", "minirlhf.grade", "--impl", "no/such/folder"], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "no folder" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "minirlhf.grade", "--only", "gea"], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    assert bad.returncode == 2 and "unknown exercise or stage ['gea']" in bad.stderr


def test_classroom_pytest_entry_point_has_one_test_per_point(tmp_path):
    """GitHub Classroom's pytest runner gives each test an equal share: one test per point keeps the weights."""
    impl = tmp_path / "mine"
    impl.mkdir()
    shutil.copy(REPO_ROOT / "solutions" / "best_of_n.py", impl)  # best-of-n done, SFT's file missing
    test_exercise = classroom_tests(str(impl), ["best_of_n", "sft"])
    cases = test_exercise.pytestmark[0].args[1]  # what pytest will collect
    assert [c.id for c in cases] == ["response_mask-1of1", "kl_bound-1of1", "finite_best_of_n_kl-1of3",
                                     "finite_best_of_n_kl-2of3", "finite_best_of_n_kl-3of3"]
    outcomes = []
    for case in cases:
        try:
            test_exercise(*case.values)
            outcomes.append("passed")
        except AssertionError as e:
            outcomes.append(str(e))
    assert outcomes[1:] == ["passed"] * 4
    assert "response_mask (sft.py): no file" in outcomes[0]


def test_classroom_workflow_has_a_step_per_exercise_worth_its_points():
    workflow = classroom_workflow()
    assert workflow.startswith("name: Autograding Tests") and "run-autograding-tests:" in workflow
    for ex in EXERCISES:
        assert f"--only {ex.name} --require-pass" in workflow
    assert sum(int(line.split(":")[1]) for line in workflow.splitlines() if "max-score:" in line) == MAX_SCORE
