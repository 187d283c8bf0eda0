"""The persistent compilation cache: where its one switch puts it, that every entry point turns it on before the
first compile, that the clock hears compiles, and that a warm cache changes no number of a run."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from minirlhf.__main__ import main
from minirlhf.compile_cache import CompileClock, cache_folder, covered_seconds

REPO = Path(__file__).resolve().parents[1]
TIMING = re.compile(r"\((\d+) computations: (\d+) compiled, (\d+) read from the compilation cache\)")


def test_the_switch_and_its_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder({}) == tmp_path / "home" / ".cache" / "minirlhf" / "xla", "default: ~/.cache/minirlhf/xla"
    assert cache_folder({"XDG_CACHE_HOME": "/x"}) == Path("/x/minirlhf/xla"), "XDG_CACHE_HOME replaces ~/.cache"
    assert cache_folder({"MINIRLHF_COMPILE_CACHE": "/p", "XDG_CACHE_HOME": "/x"}) == Path("/p"), "PATH moves it"
    assert cache_folder({"MINIRLHF_COMPILE_CACHE": " OFF ", "JAX_COMPILATION_CACHE_DIR": "/j"}) is None, (
        "MINIRLHF_COMPILE_CACHE=off turns it off, even where jax's own variable names a folder")
    assert cache_folder({"JAX_COMPILATION_CACHE_DIR": "/j", "XDG_CACHE_HOME": "/x"}) == Path("/j"), (
        "a folder jax's own JAX_COMPILATION_CACHE_DIR names is kept")


def test_help_names_the_switch(capsys):
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "MINIRLHF_COMPILE_CACHE=off" in capsys.readouterr().out, f"`{' '.join(argv)}` should name the switch"


def test_covered_seconds_counts_an_overlap_once():
    assert covered_seconds([]) == 0
    assert covered_seconds([(0, 2), (5, 6)]) == 3
    assert covered_seconds([(0, 4), (1, 2), (3, 5)]) == 5, "a compile inside a trace is the same second, not two"


def test_the_clock_hears_a_compile_and_splits():
    def tripled(x):
        return 3 * x + 1

    with CompileClock() as clock:
        jax.jit(tripled)(jnp.ones(3)).block_until_ready()
        first = clock.split()
        jax.jit(tripled)(jnp.ones(3)).block_until_ready()  # jax's in-memory cache: nothing compiled
        second = clock.split()
    assert first.compiled["tripled"] == 1 and first.seconds > 0, f"the clock heard {first}"
    assert second.seconds == 0 and not second.compiled, f"after a split, only new compiles count: {second}"


def start_quick(out: Path, **env) -> subprocess.Popen:
    """`python -m minirlhf run --quick` in a fresh process with `env` over this one's (None: unset)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    for name in [k for k, v in env.items() if v is None]:
        del env[name]
    log = open(out.with_suffix(".log"), "w+")  # a file, not a pipe: two runs side by side never wait on a reader
    return subprocess.Popen([sys.executable, "-m", "minirlhf", "run", "--quick", "--out", str(out)], cwd=out.parent,
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish_quick(run: subprocess.Popen, out: Path) -> tuple[dict, tuple[int, int, int]]:
    """The run's metrics without the times, and (computations, compiled, read from the cache) from its last line."""
    run.wait(timeout=600)
    stdout = out.with_suffix(".log").read_text()
    assert run.returncode == 0, stdout[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("seconds")
    (counts,) = TIMING.findall(stdout)
    return metrics, tuple(map(int, counts))


def test_a_warm_cache_changes_no_number(tmp_path):
    """The quick pipeline three times: cache off and the default folder empty (side by side: XLA compiles on one
    core, so the two together take little longer than one), then the same folder warm.

    A hit must be the executable a fresh compile builds: any difference in any number is a bug in how the
    cache is keyed or read, not noise."""
    default = {"MINIRLHF_COMPILE_CACHE": None, "JAX_COMPILATION_CACHE_DIR": None, "XDG_CACHE_HOME": str(tmp_path)}
    runs = {"off": start_quick(tmp_path / "off", MINIRLHF_COMPILE_CACHE="off", XDG_CACHE_HOME=str(tmp_path / "x")),
            "cold": start_quick(tmp_path / "cold", **default)}
    (off, (_, _, off_hits)), (cold, (n_cold, _, cold_hits)) = (finish_quick(runs[n], tmp_path / n) for n in runs)
    assert not (tmp_path / "x" / "minirlhf").exists() and off_hits == 0, "with the cache off nothing is written or read"
    assert cold_hits == 0 and any((tmp_path / "minirlhf" / "xla").iterdir()), (
        "the first run with the default folder should start empty and fill $XDG_CACHE_HOME/minirlhf/xla")
    warm, (n_warm, _, warm_hits) = finish_quick(start_quick(tmp_path / "warm", **default), tmp_path / "warm")
    assert n_warm == n_cold and warm_hits > 0.9 * n_warm, (
        f"the second run read {warm_hits} of {n_warm} computations from the cache: is it turned on too late?")
    for name, metrics in (("cold", cold), ("warm", warm)):
        differ = sorted(k for k in off.keys() | metrics.keys() if off.get(k) != metrics.get(k))
        assert not differ, f"the run with the cache {name} gave other numbers than without it, in {differ}"


def test_the_notebooks_setup_turns_the_cache_on_before_compiling(tmp_path):
    code = ("import sys; sys.path.insert(0, 'notebooks'); import _setup; _setup.setup(); "
            "import jax, jax.numpy as jnp; jax.jit(lambda x: x * 2)(jnp.ones(3)).block_until_ready()")
    env = {**os.environ, "MINIRLHF_COMPILE_CACHE": str(tmp_path / "xla"), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"compilation cache: {tmp_path / 'xla'}" in done.stdout, "setup() should say where the cache is"
    assert any((tmp_path / "xla").iterdir()), "a notebook's compile should land in the cache setup() turned on"

