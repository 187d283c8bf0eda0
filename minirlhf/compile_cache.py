"""A learner's second run skips XLA: jax's persistent compilation cache, and a clock for compile time.

Much of a short run is XLA compiling steps that an earlier process already compiled. jax can keep every compiled
executable on disk, keyed by the lowered program, the compile options, the XLA flags and the jax version, and read
it back instead of compiling again. An entry is the same executable a fresh compile would build, so a cache hit
changes no number: it only skips the wait.

One switch, the environment variable MINIRLHF_COMPILE_CACHE:
    unset     the cache lives in $XDG_CACHE_HOME/minirlhf/xla (~/.cache/minirlhf/xla), or where jax's own
              JAX_COMPILATION_CACHE_DIR already points
    off       no persistent cache: every process compiles everything again
    PATH      the cache lives in PATH
The entry points (`python -m minirlhf`, the bench, the grader, the notebooks' setup, the tests) call
`enable_compile_cache()` before they compile anything; importing minirlhf changes nothing. Deleting the folder is
always safe: the next run fills it again.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import NamedTuple

import jax

SWITCH = "MINIRLHF_COMPILE_CACHE"
OFF = "off"
# jax's own settings, as environment variables: the processes a run starts (the grader's workers, notebook
# kernels, the tests' subprocesses) read them when they import jax, so they share this process's cache.
ALWAYS_WRITE = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # jax's default 1 s would skip most of our steps
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
# What jax does before a jitted function first runs: trace it to a jaxpr, lower that to MLIR, compile (or read
# the compiled executable back from the persistent cache). Each is timed by jax's monitoring events.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
BACKEND_COMPILE, CACHE_HIT = COMPILE_EVENTS[2], "/jax/compilation_cache/cache_hits"


def default_folder(env: dict = os.environ) -> Path:
    """The per-user cache folder: under $XDG_CACHE_HOME when set (the XDG base-directory convention), else ~/.cache."""
    base = env.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minirlhf" / "xla"


def cache_folder(env: dict = os.environ) -> Path | None:
    """Where the cache lives for this environment (see the module docstring); None when it is off."""
    choice = env.get(SWITCH, "").strip()
    if choice.lower() == OFF:
        return None
    return Path(choice or env.get("JAX_COMPILATION_CACHE_DIR") or default_folder(env)).expanduser()


def enable_compile_cache() -> Path | None:
    """Turn jax's persistent compilation cache on (or off, as MINIRLHF_COMPILE_CACHE says) for this process and
    the processes it starts; returns the folder, or None when off.

    Call it before the first compile: jax decides once per process, at its first compile, whether to use a cache.
    """
    folder = cache_folder()
    if folder is None:  # off also overrides a JAX_COMPILATION_CACHE_DIR inherited from elsewhere
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    os.environ.update(JAX_COMPILATION_CACHE_DIR=str(folder), JAX_ENABLE_COMPILATION_CACHE="true", **ALWAYS_WRITE)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def describe(folder: Path | None) -> str:
    """One line for a run's output: where compiled steps are kept, and how to change it."""
    if folder is None:
        return f"compilation cache: off ({SWITCH}=off)"
    return f"compilation cache: {folder} ({SWITCH}=off turns it off, {SWITCH}=PATH moves it)"


class CompileTime(NamedTuple):
    seconds: float  # tracing, lowering and compiling (or reading the compiled executable from the cache)
    compiled: collections.Counter  # function name -> XLA compilations (or cache reads) of it
    cached: int  # of those, read from the persistent cache


class CompileClock:
    """Listens to jax's monitoring events: seconds spent compiling (tracing, lowering, XLA or a cache read) and
    the computations compiled, since the last `split()`.

        with CompileClock() as clock:
            ...                       # a stage
            spent = clock.split()     # a CompileTime
    """

    def __init__(self):
        self.spans, self.compiled, self.hits = [], collections.Counter(), 0

    def _on_span(self, event: str, start: float, end: float, fun_name: str = "?", **kwargs) -> None:
        if event in COMPILE_EVENTS:
            self.spans.append((start, end))
        if event == BACKEND_COMPILE:
            self.compiled[fun_name.removeprefix("jit(").removesuffix(")")] += 1

    def _on_event(self, event: str, **kwargs) -> None:
        self.hits += event == CACHE_HIT

    def __enter__(self) -> "CompileClock":
        jax.monitoring.register_event_time_span_listener(self._on_span)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_time_span_listener(self._on_span)
        jax.monitoring.unregister_event_listener(self._on_event)

    def split(self) -> CompileTime:
        """What was compiled since the last split (or since the clock started)."""
        spent = CompileTime(covered_seconds(self.spans), self.compiled, self.hits)
        self.spans, self.compiled, self.hits = [], collections.Counter(), 0
        return spent


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) spans: a compile that happens while tracing is counted once."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return total
