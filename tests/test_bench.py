"""`python -m minirlhf.bench` times the library's own training step and `generate`, and runs without torch.
A tiny model and one timed call stand in for the benchmark's sizes, so these tests time nothing that matters."""
import ast
import sys
from functools import partial
from pathlib import Path

import pytest

from minirlhf import bench, pretrain
from minirlhf.transformer import ModelConfig

TINY = partial(ModelConfig, max_len=48, d_model=16, n_layers=1, n_heads=2, d_mlp=32)


def test_bench_builds_no_step_of_its_own():
    """A private jit, grad or optimizer update in bench.py would time a copy instead of the library's step."""
    tree = ast.parse(Path(bench.__file__).read_text())
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    own = {"jit", "grad", "value_and_grad", "apply_updates", "adamw"} & names
    assert not own, f"bench.py uses {sorted(own)}: time training.make_step's step, not a copy of it"


@pytest.mark.parametrize("torch_installed", [False, True])
def test_bench_times_make_step_on_pretrainings_loss_with_torch_optional(torch_installed, monkeypatch, capsys):
    if torch_installed:
        pytest.importorskip("torch")
    else:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    built, library_make_step = [], bench.make_step
    monkeypatch.setattr(bench, "make_step", lambda *a, **k: built.append(a) or library_make_step(*a, **k))
    monkeypatch.setattr(bench, "ModelConfig", TINY)
    monkeypatch.setattr(bench, "rounds_of_medians", partial(bench.rounds_of_medians, rounds=2, repeats=2))
    monkeypatch.setattr(sys, "argv", ["bench"])
    bench.main()
    assert len(built) == 1 and built[0][0] is pretrain.lm_loss, (
        "the timed training step should be training.make_step over pretrain.lm_loss, as pretraining's fit runs it")
    table = capsys.readouterr().out.splitlines()[-2:]
    assert [line.split()[0] for line in table] == ["train", "generate"], f"one row per measurement: {table}"
    for line in table:
        if torch_installed:
            assert "x  (" in line and "(no torch)" not in line, f"with torch, a speedup and its range per row: {line!r}"
        else:
            assert line.endswith("(no torch)"), f"without torch, only our time and '(no torch)': {line!r}"


def test_speedup_is_the_median_of_the_rounds_ratios(monkeypatch):
    """Load that drifts between rounds moves both libraries' times in a round; the ratio is taken per round."""
    ours = iter([10, 10, 20, 20, 10, 10])  # ms per call: a round at double load in the middle
    theirs = iter([30, 30, 60, 60, 15, 15])
    clock = {"now": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])

    def runner(times):
        def run():
            clock["now"] += next(times) / 1000
        return run

    timed = bench.rounds_of_medians({"a": runner(ours), "b": runner(theirs)}, rounds=3, repeats=1)
    assert timed["a"] == pytest.approx([10, 20, 10]) and timed["b"] == pytest.approx([30, 60, 15]), (
        f"one median per round, each after its own warm-up call: {timed}")


def test_speedup_is_the_median_of_the_rounds_ratios():
    """Rounds whose ratios are 5, 1.5 and 7/6: the median ratio is 1.5 (the ratio of the medians would be 1.75)."""
    assert bench.ratio_over_rounds([50, 30, 35], [10, 20, 30]) == pytest.approx((1.5, 7 / 6, 5.0))
