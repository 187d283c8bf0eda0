"""The grader CLI: full marks for the solutions, zero for the untouched stubs, JSON and JUnit reports whose scores
are the passed exercises' points, one wrong function that does not fail its siblings, `--list`, and a hostile
implementation (raises, loops, prints megabytes, NaN, wrong dtype/shape, exits, crashes) survived."""
from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from minirlhf.grade.checks import EXERCISES, MAX_SCORE, stage_exercises
from minirlhf.grade import REPO_ROOT, classroom_tests, classroom_workflow, main

HOSTILE = Path(__file__).parent / "hostile_impl"
WRONG = Path(__file__).parent / "wrong_impls"
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


# A learner half-way through pretraining: the solutions, then a wrong masked_mean and a wrong token_logprobs
# defined after them (so they replace them). lm_loss calls both; graded alone, it must still pass.
BROKEN = {"masked_mean": "masked_mean_total_count.py", "token_logprobs": "token_logprobs_no_shift.py"}


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("half_done")
    impl = tmp / "mine"
    impl.mkdir()
    text = (REPO_ROOT / "solutions" / "pretraining.py").read_text()
    text += "".join(f"\n\n# ---- a wrong {name}\n" + (WRONG / path).read_text() for name, path in BROKEN.items())
    (impl / "pretraining.py").write_text(text)
    return grade_cli(tmp, "--impl", str(impl), "--only", "pretraining")


def test_a_wrong_function_fails_alone_and_the_sibling_that_calls_it_still_passes(half_done):
    _, report, _ = half_done
    results = {r["name"]: r for r in report["exercises"]}
    assert list(results) == [e.name for e in stage_exercises("pretraining")], "--only pretraining grades that stage"
    for name, path in BROKEN.items():
        hint = runpy.run_path(str(WRONG / path))["HINT"]
        assert not results[name]["passed"] and hint in results[name]["reason"], (
            f"the wrong {name} must fail with its hint {hint!r}, got: {results[name]['reason']}")
    for name in ("lm_loss", "sample_token"):
        assert results[name]["passed"], (
            f"{name} is the library's code and must pass even though the file's masked_mean and token_logprobs "
            f"are wrong (each check grades one function, its siblings are the library's): {results[name]['reason']}")


def test_json_and_junit_scores_are_the_points_of_the_passed_exercises(half_done):
    proc, report, root = half_done
    points = {e.name: e.points for e in stage_exercises("pretraining")}
    passed = {n: p for n, p in points.items() if n not in BROKEN}
    want_score, want_max = sum(passed.values()), sum(points.values())
    assert 0 < want_score < want_max, "the half-done file should score some points, not all"
    assert (report["score"], report["max_score"]) == (want_score, want_max), (
        f"JSON score {report['score']} / {report['max_score']}; the passed exercises {sorted(passed)} are worth "
        f"{want_score} of {want_max}")
    for r in report["exercises"]:
        assert r["points"] == (points[r["name"]] if r["passed"] else 0) and r["max_points"] == points[r["name"]], (
            f"{r['name']}: {r['points']} / {r['max_points']} points, passed={r['passed']}")
    assert f"score: {want_score} / {want_max}" in proc.stdout
    suite = root.find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"score": str(want_score), "max_score": str(want_max)}, f"JUnit suite properties {props}"
    assert (suite.get("tests"), suite.get("failures")) == (str(len(points)), str(len(BROKEN)))
    reasons = {r["name"]: r["reason"] for r in report["exercises"]}
    for case in suite.findall("testcase"):
        name = case.get("name")
        case_props = {p.get("name"): p.get("value") for p in case.find("properties")}
        want_points = "0" if name in BROKEN else str(points[name])
        assert case_props == {"points": want_points, "max_points": str(points[name])}, f"{name}: {case_props}"
        failure = case.find("failure")
        assert (failure is not None) == (name in BROKEN), f"{name}: a <failure> exactly when it failed"
        if failure is not None:
            assert failure.text == reasons[name], f"{name}: the <failure> must carry the hint"


def test_list_prints_every_exercise_with_its_points_and_library_function(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["exercise", "stage", "points", "library", "function"], f"header: {lines[0]!r}"
    rows = [line.split() for line in lines[1:-1]]
    assert rows == [[e.name, e.stage, str(e.points), f"{e.library}.{e.name}"] for e in EXERCISES], (
        "--list must print one row per exercise: name, stage, points, library function")
    total = sum(e.points for e in EXERCISES)
    assert lines[-1].strip() == f"{len(EXERCISES)} exercises, {total} points", f"last line: {lines[-1]!r}"


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


def test_outside_a_checkout_solutions_and_exercises_are_generated_from_the_library(tmp_path, monkeypatch):
    """After `pip install .` there is no solutions/ folder beside the package: the grader writes the same files the
    course repository's generator writes, from the installed library, and grades those."""
    import minirlhf.grade as grade
    from minirlhf.grade.make_exercises import render_all

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(grade, "REPO_ROOT", tmp_path / "no-checkout")
    for kind in ("solutions", "exercises"):
        folder = grade.resolve_impl(kind)
        assert folder.name == kind and folder.parent != tmp_path, f"{kind} should be generated in a fresh folder"
        written = {f"{kind}/{p.name}": p.read_text() for p in folder.glob("*.py")}
        assert written == {k: v for k, v in render_all().items() if k.startswith(f"{kind}/")}, (
            f"the generated {kind}/ should be exactly what make_exercises writes")
    with pytest.raises(FileNotFoundError, match="no folder 'mine'"):
        grade.resolve_impl("mine")
