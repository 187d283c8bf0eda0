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
    monkeypatch.setattr(bench, "median_times_ms", partial(bench.median_times_ms, repeats=2))  # 2: the state is kept
    monkeypatch.setattr(sys, "argv", ["bench"])
    bench.main()
    assert len(built) == 1 and built[0][0] is pretrain.lm_loss, (
        "the timed training step should be training.make_step over pretrain.lm_loss, as pretraining's fit runs it")
    table = capsys.readouterr().out.splitlines()[-2:]
    assert [line.split()[0] for line in table] == ["train", "generate"], f"one row per measurement: {table}"
    for line in table:
        if torch_installed:
            assert line.endswith("x") and "(no torch)" not in line, f"with torch, a speedup per row: {line!r}"
        else:
            assert line.endswith("(no torch)"), f"without torch, only our time and '(no torch)': {line!r}"
