"""Grade the exercises: `python -m minirlhf.grade [--impl exercises|solutions|PATH] [--json FILE] [--junit FILE]`.

Every exercise is a library function a learner re-implements in `exercises/<stage>.py`. Its check
(`minirlhf/grade/checks/<stage>.py`) compares the learner's function with the library's on random and edge-case
inputs and, when they differ, names the likely mistake. Checks run in a separate worker process, one at a
time, each with a timeout: a learner's exception, NaN, wrong shape or dtype, sys.exit, endless loop, crash,
or megabytes of printing fails that exercise only, and grading goes on. The exit status is 0 whenever
grading ran, whatever the score (`--require-pass` makes it 1 unless every selected exercise passed).

In a notebook:
    from minirlhf.grade import check, use_learner_code
    check("gae")                          # runs gae's check on exercises/ppo.py, prints pass or a hint
    with use_learner_code("gae"):         # the library's stages now call YOUR gae
        policy, history = train_ppo(...)
"""
from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import importlib.util
import inspect
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterator

from minirlhf.grade.checks import BY_NAME, EXERCISES, MAX_SCORE, STAGES, Exercise, select

DEFAULT_TIMEOUT = 30.0  # seconds per check (and per import of a stage module)
START_TIMEOUT = 180.0  # seconds for a worker to import jax and the checks
# Faster XLA compiles for the many tiny kernels a check runs (about 2x less grading time; the numbers are
# the same). MINIRLHF_GRADE_XLA_FLAGS replaces them, e.g. with "" if a jaxlib does not know a flag.
FAST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
REPO_ROOT = Path(__file__).resolve().parents[2]
NAME_WIDTH = 2 + max(len(e.name) for e in EXERCISES)  # the exercise column of the tables, names never run on


def resolve_impl(impl: str | os.PathLike) -> Path:
    """A folder of stage modules: PATH as given, else found from here, from the folder above (a notebook in
    notebooks/ finds ../exercises) or in the course repository this package sits in. Outside a checkout (after
    `pip install .`), `solutions` and `exercises` are generated from the installed library, as the course
    repository's own are (make_exercises), into a fresh temporary folder."""
    path = Path(impl)
    places = list(dict.fromkeys([Path.cwd(), Path.cwd().parent, REPO_ROOT])) if not path.is_absolute() else [Path("/")]
    for place in places:
        if (place / path).is_dir():
            return (place / path).resolve()
    if str(impl) in ("solutions", "exercises"):
        return generated(str(impl))
    raise FileNotFoundError(f"no folder {str(impl)!r} (looked in {', '.join(map(str, places))}); pass a folder "
                            f"holding one module per stage ({', '.join(f'{s}.py' for s in STAGES)})")


def generated(kind: str) -> Path:
    """`solutions/` or `exercises/` written from the installed library into a temporary folder; its path."""
    from minirlhf.grade.make_exercises import render_all

    root = Path(tempfile.mkdtemp(prefix="minirlhf-course-"))
    for name, text in render_all().items():
        if name.startswith(f"{kind}/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    print(f"no {kind}/ folder here: grading the {kind} generated from the installed library, in {root / kind}")
    return root / kind


# ---------------------------------------------------------------- the worker process


class WorkerTimeout(Exception):
    pass


class WorkerDied(Exception):
    pass


class Worker:
    """A `python -m minirlhf.grade.checks.worker` child: send a command, wait for its one-line JSON reply."""

    def __init__(self, xla_flags: str | None = None):
        env = dict(os.environ)
        env.setdefault("JAX_PLATFORMS", "cpu")  # tiny arrays: a GPU would only add start-up time
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        flags = os.environ.get("MINIRLHF_GRADE_XLA_FLAGS", FAST_XLA_FLAGS) if xla_flags is None else xla_flags
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "minirlhf.grade.checks.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                                     errors="replace")  # a learner may write any bytes to the raw stderr
        self.replies: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=50)  # last lines, for crash reports
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.imported: dict[str, dict] = {}
        self._wait(START_TIMEOUT)

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put(None)  # EOF: the process is gone

    def _drain_stderr(self) -> None:
        while chunk := self.proc.stderr.read(8192):
            self.stderr_tail.extend(chunk[-4000:].splitlines()[-50:])

    def _wait(self, timeout: float) -> dict:
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise WorkerTimeout() from None
        if line is None:
            code = self.proc.wait()
            tail = "\n".join(list(self.stderr_tail)[-8:])
            raise WorkerDied(f"exit code {code}" + (f"; its last words:\n{tail}" if tail.strip() else ""))
        return json.loads(line)

    def request(self, cmd: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"exit code {self.proc.poll()}") from None
        return self._wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_worker() -> Worker:
    try:
        return Worker()
    except WorkerDied:
        if os.environ.get("MINIRLHF_GRADE_XLA_FLAGS") is not None:
            raise
        return Worker(xla_flags="")  # an XLA that rejects a flag dies at start: try once without


# ---------------------------------------------------------------- grading


def _result(ex: Exercise, passed: bool, reason: str, output: str = "", seconds: float = 0.0) -> dict:
    return {"name": ex.name, "module": ex.stage, "points": ex.points if passed else 0, "max_points": ex.points,
            "passed": passed, "reason": reason, "output": output, "seconds": round(seconds, 3),
            "library": f"{ex.library}.{ex.name}"}


def grade(impl: str | os.PathLike = "exercises", names: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
          on_result: Callable[[dict], None] | None = None) -> dict:
    """Run the checks of `names` (exercises or stages; None: all) against the folder `impl`; returns the report."""
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    impl_dir = resolve_impl(impl)
    results, worker = [], None
    broken: dict[str, str] = {}  # stage (or "*" for every stage) -> why none of its exercises can be checked
    started = time.perf_counter()
    try:
        for ex in select(names):
            path = impl_dir / f"{ex.stage}.py"
            t0 = time.perf_counter()
            phase = "start"
            try:
                if not path.is_file():
                    raise _Fail(f"no file {path}")
                if "*" in broken or ex.stage in broken:
                    raise _Fail(broken.get("*") or broken[ex.stage])
                worker = worker or start_worker()
                if ex.stage not in worker.imported:
                    phase = "import"
                    worker.imported[ex.stage] = worker.request({"op": "import", "impl": str(impl_dir),
                                                                "stage": ex.stage}, timeout)
                imported = worker.imported[ex.stage]
                if not imported["ok"]:
                    broken[ex.stage] = imported["reason"]
                    raise _Fail(imported["reason"], imported["output"])
                phase = "check"
                reply = worker.request({"op": "check", "impl": str(impl_dir), "stage": ex.stage, "name": ex.name},
                                       timeout)
                result = _result(ex, reply["passed"], reply["reason"], reply["output"], reply.get("seconds", 0.0))
            except _Fail as f:
                result = _result(ex, False, f.reason, f.output)
            except (WorkerTimeout, WorkerDied) as e:
                worker = None
                if isinstance(e, WorkerTimeout):
                    what = f"timed out after {timeout:g} s (an endless loop?) and was stopped"
                else:
                    what = (f"crashed the Python process running it ({e}); os._exit, a segfault or running out of "
                            f"memory can do that")
                reason = {"start": f"the grading worker could not start: it {what}",
                          "import": f"importing {path} {what}", "check": f"the check {what}"}[phase]
                if phase == "start":
                    broken["*"] = reason
                elif phase == "import":
                    broken[ex.stage] = reason
                result = _result(ex, False, reason, seconds=time.perf_counter() - t0)
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        if worker is not None:
            worker.close()
    return {"impl": str(impl_dir), "score": sum(r["points"] for r in results),
            "max_score": sum(r["max_points"] for r in results), "seconds": round(time.perf_counter() - started, 2),
            "exercises": results}


class _Fail(Exception):
    """An exercise that fails without running its check (no file, its module failed to import)."""

    def __init__(self, reason: str, output: str = ""):
        super().__init__(reason)
        self.reason, self.output = reason, output


# ---------------------------------------------------------------- reports


def format_row(r: dict, width: int = 100) -> str:
    status = "pass" if r["passed"] else "FAIL"
    row = f"  {r['name']:<{NAME_WIDTH}}{r['module']:<14}{r['points']:>3}/{r['max_points']:<3} {status}"
    if r["passed"]:
        return row
    lines = []
    for paragraph in r["reason"].splitlines():
        lines += textwrap.wrap(paragraph, width - 8, subsequent_indent="  ") or [""]
    return row + "".join(f"\n      {line}" for line in lines)


def header() -> str:
    return f"  {'exercise':<{NAME_WIDTH}}{'stage':<14}{'points':<8}result"


def write_json(report: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(s: str) -> str:
    return _XML_BAD.sub("?", s)


def write_junit(report: dict, path: str | os.PathLike) -> None:
    """JUnit XML: one testcase per exercise, a <failure> with the hint when it failed, points as properties."""
    results = report["exercises"]
    failures = sum(not r["passed"] for r in results)
    total_time = f"{sum(r['seconds'] for r in results):.3f}"
    suites = ET.Element("testsuites", name="minirlhf.grade", tests=str(len(results)), failures=str(failures),
                        time=total_time)
    suite = ET.SubElement(suites, "testsuite", name=f"minirlhf exercises ({report['impl']})", tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0", time=total_time)
    props = ET.SubElement(suite, "properties")
    for key in ("score", "max_score"):
        ET.SubElement(props, "property", name=key, value=str(report[key]))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"exercises.{r['module']}", name=r["name"],
                             time=f"{r['seconds']:.3f}")
        case_props = ET.SubElement(case, "properties")
        ET.SubElement(case_props, "property", name="points", value=str(r["points"]))
        ET.SubElement(case_props, "property", name="max_points", value=str(r["max_points"]))
        if not r["passed"]:
            failure = ET.SubElement(case, "failure", message=_xml_text(r["reason"].splitlines()[0][:500] if r["reason"]
                                                                       else "failed"))
            failure.text = _xml_text(r["reason"])
        if r["output"]:
            ET.SubElement(case, "system-out").text = _xml_text(r["output"])
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


# ---------------------------------------------------------------- command line


def positive_seconds(text: str) -> float:
    """argparse type of --timeout: a number of seconds > 0 (0 would fail every check as an endless loop)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}; the default is {DEFAULT_TIMEOUT:g}")
    return seconds


def check_writable(path: str) -> None:
    """A report file can be written there: its folder exists and the path is not a folder."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist; create it first")
    if Path(path).is_dir():
        raise FileNotFoundError(f"cannot write {path}: it is a folder; name a file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf.grade", description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="exercises",
                        help="folder of stage modules to grade: exercises (default), solutions, or a path")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="grade only these exercises or stages")
    parser.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                        help="seconds per check, > 0 (default %(default)s)")
    parser.add_argument("--require-pass", action="store_true",
                        help="exit 1 unless every selected exercise passed (for CI steps that grade by exit status)")
    parser.add_argument("--list", action="store_true", help="list the exercises and their points, grade nothing")
    parser.add_argument("--classroom-workflow", action="store_true",
                        help="print a GitHub Classroom workflow (one step per exercise, worth its points), grade nothing")
    args = parser.parse_args(argv)
    if args.classroom_workflow:
        print(classroom_workflow(args.impl), end="")
        return 0
    if args.list:
        print(f"  {'exercise':<{NAME_WIDTH}}{'stage':<14}{'points':<8}library function")
        for ex in EXERCISES:
            print(f"  {ex.name:<{NAME_WIDTH}}{ex.stage:<14}{ex.points:>3}    {ex.library}.{ex.name}")
        print(f"  {len(EXERCISES)} exercises, {MAX_SCORE} points")
        return 0
    try:
        impl = resolve_impl(args.impl)
        select(args.only)
        for report_file in filter(None, (args.json, args.junit)):  # before grading, so no report is lost
            check_writable(report_file)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"grading {impl}")
    print(header(), flush=True)
    report = grade(impl, args.only, args.timeout, on_result=lambda r: print(format_row(r), flush=True))
    print(f"score: {report['score']} / {report['max_score']}  "
          f"({sum(r['passed'] for r in report['exercises'])} of {len(report['exercises'])} exercises passed, "
          f"{report['seconds']:.1f} s)")
    if args.json:
        write_json(report, args.json)
    if args.junit:
        write_junit(report, args.junit)
    if args.require_pass and report["score"] < report["max_score"]:
        return 1
    return 0


# ---------------------------------------------------------------- GitHub Classroom


def classroom_tests(impl: str | os.PathLike = "exercises", names: list[str] | None = None,
                    timeout: float = DEFAULT_TIMEOUT):
    """A pytest test function with one case per exercise POINT, for GitHub Classroom's pytest runner.

    That runner (classroom-resources/autograding-python-grader) gives every test the same share of the
    step's max-score, so one test per point, with max-score = the total points, reproduces the grader's
    score exactly. All exercises are graded once, on the first test; each test then reads its result.
    `names` limits it to some exercises or stages (an assignment that covers part of the course).
    Use it in a file whose name ends in `_test.py` (the runner collects only those):

        from minirlhf.grade import classroom_tests
        test_exercise = classroom_tests("exercises")
    """
    import pytest

    report: dict = {}
    cases = [pytest.param(ex.name, id=f"{ex.name}-{i + 1}of{ex.points}") for ex in select(names)
             for i in range(ex.points)]

    @pytest.mark.parametrize("name", cases)
    def test_exercise(name: str) -> None:
        if not report:
            report.update(grade(impl, names, timeout=timeout))
        result = next(r for r in report["exercises"] if r["name"] == name)
        assert result["passed"], f"{name} ({result['module']}.py): {result['reason']}"

    return test_exercise


def classroom_workflow(impl: str = "exercises", timeout_minutes: int = 5) -> str:
    """A GitHub Classroom workflow with one command-grader step per exercise, worth its points."""
    steps = []
    for ex in EXERCISES:
        steps.append(f"""    - name: {ex.name}
      id: {ex.name.replace('_', '-')}
      uses: classroom-resources/autograding-command-grader@v1
      with:
        test-name: {ex.name} ({ex.stage})
        setup-command: pip install -e .
        command: python -m minirlhf.grade --impl {impl} --only {ex.name} --require-pass
        timeout: {timeout_minutes}
        max-score: {ex.points}""")
    runners = ",".join(f"{e.name.replace('_', '-')}" for e in EXERCISES)
    env = "\n".join(f"        {e.name.replace('_', '-').upper()}_RESULTS: "
                     f"\"${{{{steps.{e.name.replace('_', '-')}.outputs.result}}}}\"" for e in EXERCISES)
    return f"""name: Autograding Tests
'on': [push, repository_dispatch]
permissions:
  checks: write
  actions: read
  contents: read
jobs:
  run-autograding-tests:
    runs-on: ubuntu-latest
    if: github.actor != 'github-classroom[bot]'
    steps:
    - name: Checkout code
      uses: actions/checkout@v4
    - uses: actions/setup-python@v5
      with:
        python-version: '3.11'
{chr(10).join(steps)}
    - name: Autograding Reporter
      uses: classroom-resources/autograding-grading-reporter@v1
      env:
{env}
      with:
        runners: {runners}
"""


# ---------------------------------------------------------------- in a notebook


def check(name: str | None = None, impl: str | os.PathLike | Callable = "exercises",
          timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Run one exercise's check (or a stage's, or all with name=None) and print pass or a hint.

    impl: the folder of your stage modules (default exercises/), or a function you defined in the notebook
    (then the check runs in this process, without a timeout). Returns whether everything checked passed.
    """
    if callable(impl):
        if name not in BY_NAME:
            raise KeyError(f"check({name!r}, fn) needs an exercise name; exercises: {', '.join(BY_NAME)}")
        from minirlhf.grade.checks import common
        importlib.import_module(f"minirlhf.grade.checks.{BY_NAME[name].stage}")
        passed, reason = common.run_check(name, impl)
        ex = BY_NAME[name]
        print(format_row(_result(ex, passed, reason)))
        return passed
    report = grade(impl, None if name is None else [name], timeout, on_result=_print_with_output)
    if len(report["exercises"]) == 1 and report["exercises"][0]["reason"].startswith("NotImplementedError"):
        print(stub_text(report["exercises"][0]["name"], impl))
    if len(report["exercises"]) > 1:
        print(f"score: {report['score']} / {report['max_score']}")
    return all(r["passed"] for r in report["exercises"])


def stub_text(name: str, impl: str | os.PathLike = "exercises") -> str:
    """The exercise's function as it stands in <impl>/<stage>.py (for a stub: its signature and specification),
    indented under a line that says where to write it."""
    path = resolve_impl(impl) / f"{BY_NAME[name].stage}.py"
    source = path.read_text()
    node = next((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:  # the learner renamed or deleted it: say so rather than fail inside check()
        return textwrap.indent(f"{path.parent.name}/{path.name} has no function {name}: write it there", "      ")
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    code = "\n".join(source.splitlines()[first - 1:node.end_lineno])
    return textwrap.indent(f"write it in {path.parent.name}/{path.name}:\n\n{code}", "      ")


def _print_with_output(r: dict) -> None:
    print(format_row(r))
    if r["output"].strip():
        shown = r["output"] if len(r["output"]) <= 1500 else r["output"][:700] + "\n[...]\n" + r["output"][-700:]
        print(textwrap.indent(f"your code printed:\n{shown.rstrip()}", "      "))


_load_counter = itertools.count()


def load_learner_module(impl: str | os.PathLike, stage: str):
    """Import <impl>/<stage>.py afresh (a new module object each call, so edits to the file are seen)."""
    path = resolve_impl(impl) / f"{stage}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    spec = importlib.util.spec_from_file_location(f"_minirlhf_learner_{stage}_{next(_load_counter)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _which_is_which(swapped: dict[str, Callable], kept: list[str], impl) -> str:
    """One line for each side of use_learner_code's split: the learner's functions, and the library's stand-ins."""
    stubs = [name for name, fn in swapped.items() if is_stub(fn)]
    yours = ", ".join(f"{n} (a stub: it raises NotImplementedError)" if n in stubs else n for n in swapped)
    lines = [f"using your code from {impl}/: {yours or 'none'}"]
    if kept:
        lines.append(f"using the library's (yours still raise NotImplementedError): {', '.join(kept)}")
    return "\n".join(lines)


def _library_modules() -> list:
    """minirlhf's own modules, where a stage looks its functions up (the checks and the grader excluded)."""
    return [m for n, m in list(sys.modules.items()) if m is not None and (n == "minirlhf" or n.startswith("minirlhf."))
            and not n.startswith("minirlhf.grade")]


def is_stub(fn: Callable) -> bool:
    """Is `fn` still the generated stub: a docstring, then only `raise NotImplementedError(...)`?"""
    try:
        node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return False  # no source to read (defined in a notebook cell, say): treat it as written
    body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    raised = body[0].exc if len(body) == 1 and isinstance(body[0], ast.Raise) else None
    called = raised.func if isinstance(raised, ast.Call) else raised
    return isinstance(called, ast.Name) and called.id == "NotImplementedError"


@contextlib.contextmanager
def use_learner_code(*names: str, impl: str | os.PathLike = "exercises", quiet: bool = False) -> Iterator[dict]:
    """Inside the `with`, the library calls the learner's versions of these exercises (or stages).

    A stage name takes each of its exercises the learner has written and leaves the library's for those
    still a stub (raising NotImplementedError), so a stage runs before all of it is done; an exercise named
    explicitly is used even as a stub (it then raises from inside the stage). It prints which is which.
    Every minirlhf module that holds the library function (e.g. both `ppo_losses.gae` and the `gae` that
    `ppo` imported) gets the learner's instead, and JAX's compilation caches are cleared on the way in and out,
    so jitted steps (which call exercises by name, never jit one at import) retrace with the swapped code and
    nothing compiled from it outlives the block. Yields {exercise name: the learner's function}.
    """
    import jax

    from minirlhf.grade.checks import common  # captures the library's functions before anything is swapped
    if not names:
        raise ValueError("name at least one exercise or stage, e.g. use_learner_code('gae')")
    exercises = select(list(names))
    modules = {stage: load_learner_module(impl, stage) for stage in {e.stage for e in exercises}}
    swapped, kept = {}, []
    for ex in exercises:
        fn = getattr(modules[ex.stage], ex.name, None)
        if not callable(fn):
            raise AttributeError(f"{resolve_impl(impl) / (ex.stage + '.py')} has no function {ex.name}()")
        if ex.name not in names and is_stub(fn):
            kept.append(ex.name)
        else:
            swapped[ex.name] = fn
    if not quiet:
        print(_which_is_which(swapped, kept, impl))
    exercises = [ex for ex in exercises if ex.name in swapped]
    patches = []  # (module, attribute, original value)
    for module in _library_modules():
        for attr, value in list(vars(module).items()):
            for ex in exercises:
                original = common.REFERENCES[ex.name]
                if value is original:
                    patches.append((module, attr, value))
                    setattr(module, attr, swapped[ex.name])
    jax.clear_caches()
    try:
        yield swapped
    finally:
        for module, attr, value in reversed(patches):
            setattr(module, attr, value)
        learner = {id(fn): common.REFERENCES[n] for n, fn in swapped.items()}
        for module in _library_modules():  # modules imported inside the block may have copied a swapped name
            for attr, value in list(vars(module).items()):
                if id(value) in learner:
                    setattr(module, attr, learner[id(value)])
        jax.clear_caches()

