"""The grading worker: a child process that imports a learner's modules and runs checks, one command at a time.

The grader (`minirlhf.grade`) talks to it over its stdin/stdout, one JSON object per line. Everything the
learner's code prints is captured per command (bounded: the first and last few thousand characters) and
sent back with the result, and whatever reaches the raw file descriptors goes to stderr, which the
grader drains. So a check that prints megabytes, raises, or calls sys.exit only fails that check; one that
loops forever or kills the process is stopped by the grader's timeout, which then starts a fresh worker.

    {"op": "import", "impl": DIR, "stage": "ppo"}               -> {"ok": bool, "reason": str, "output": str}
    {"op": "check", "impl": DIR, "stage": "ppo", "name": "gae"} -> {"passed": bool, "reason": str, "output": str}
"""
from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
import types
from pathlib import Path

HEAD = TAIL = 2000  # characters of captured output kept from the start and from the end
PACKAGE = "_minirlhf_learner"  # the name a learner's folder is imported under


class BoundedText(io.TextIOBase):
    """A text stream that keeps the first HEAD and the last TAIL characters and counts the rest."""

    def __init__(self):
        self.head, self.tail, self.total = "", "", 0

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        n = len(s)
        self.total += n
        if len(self.head) < HEAD:
            room = HEAD - len(self.head)
            self.head, s = self.head + s[:room], s[room:]
        if s:
            self.tail = (self.tail + s[-TAIL:])[-TAIL:]
        return n

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        return self.head + (f"\n[... {cut:,} characters cut ...]\n" if cut > 0 else "") + self.tail


class Capture:
    """Send sys.stdout/sys.stderr (and sys.stdin reads) away from the protocol for the duration of a command."""

    def __enter__(self) -> BoundedText:
        self.saved = sys.stdout, sys.stderr, sys.stdin
        self.buffer = BoundedText()
        sys.stdout = sys.stderr = self.buffer
        sys.stdin = io.StringIO("")
        return self.buffer

    def __exit__(self, *exc):
        sys.stdout, sys.stderr, sys.stdin = self.saved
        return False


def load_stage(impl: str, stage: str) -> types.ModuleType:
    """Import <impl>/<stage>.py as a submodule of a synthetic package rooted at impl (relative imports work)."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [impl]  # the folder's own __init__.py is not run: one broken stage cannot break all
        sys.modules[PACKAGE] = package
        parent = str(Path(impl).resolve().parent)
        if parent not in sys.path:
            sys.path.append(parent)  # so `from exercises.pretraining import ...` works too
    return importlib.import_module(f"{PACKAGE}.{stage}")


def handle(cmd: dict, modules: dict) -> dict:
    from minirlhf.grade.checks import stage_exercises
    from minirlhf.grade.checks.common import REFERENCES, describe_exception, run_check

    stage = cmd["stage"]
    path = Path(cmd["impl"]) / f"{stage}.py"
    if cmd["op"] == "import":
        with Capture() as out:
            try:
                modules[stage] = load_stage(cmd["impl"], stage)
                ok, reason = True, ""
            except KeyboardInterrupt:
                raise
            except SystemExit as e:
                ok, reason = False, f"importing {path} called sys.exit({e.code!r})"
            except BaseException as e:
                ok, reason = False, f"importing {path} failed: {describe_exception(e)}"
        return {"ok": ok, "reason": reason, "output": out.text()}

    module, name = modules[stage], cmd["name"]
    fn = getattr(module, name, None)
    if not callable(fn):
        return {"passed": False, "reason": f"{path} has no function {name}() (was it renamed or deleted?)",
                "output": ""}
    # Each check grades one function: the file's other exercises are the reference while it runs, so a
    # learner's lm_loss is not failed for a bug in their masked_mean.
    siblings = {e.name: getattr(module, e.name) for e in stage_exercises(stage)
                if e.name != name and hasattr(module, e.name)}
    for sibling in siblings:
        setattr(module, sibling, REFERENCES[sibling])
    start = time.perf_counter()
    try:
        with Capture() as out:
            passed, reason = run_check(name, fn)
    finally:
        for sibling, own in siblings.items():
            setattr(module, sibling, own)
    return {"passed": passed, "reason": reason, "output": out.text(), "seconds": time.perf_counter() - start}


def main() -> None:
    # The protocol gets private copies of stdin/stdout; fd 1 then points at stderr, and fd 0 at /dev/null,
    # so nothing the learner's code does with print, os.write or input() can corrupt or read it.
    commands = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    import minirlhf.grade.checks.common  # noqa: F401  (jax and the references, before any learner code runs)
    from minirlhf.grade.checks import STAGES
    for stage in STAGES:
        importlib.import_module(f"minirlhf.grade.checks.{stage}")
    reply({"ready": True})
    modules: dict[str, types.ModuleType] = {}
    for line in commands:
        if line.strip():
            reply(handle(json.loads(line), modules))


if __name__ == "__main__":
    main()
