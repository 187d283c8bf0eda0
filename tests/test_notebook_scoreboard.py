"""The notebooks' running scoreboard (notebooks/_models.scoreboard): rows kept across notebooks, in course order."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_rows_join_the_earlier_notebooks_rows_in_course_order_and_a_rerun_replaces_its_own(monkeypatch, tmp_path,
                                                                                          capsys):
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    models = importlib.import_module("_models")
    monkeypatch.setattr(models, "SCOREBOARD", tmp_path / "board.json")
    monkeypatch.setattr(models, "ARTIFACTS", tmp_path)
    monkeypatch.setattr(models, "sft_model", lambda: "sft")
    measured = []

    def fake_evaluate(params, cfg, world, prompts, key, ref_params=None):
        assert prompts is models.EVAL_PROMPTS, "every row: the eval prompts"
        measured.append(params)
        gold = np.full(len(prompts), {"a": 0.5, "b": -0.25, "c": 0.75, "d": 0.0}[params])
        kl = {} if ref_params is None else {"kl_to_sft": 1.0 if ref_params == "sft" else float("nan")}
        return {"gold_reward": float(gold.mean()), "gold": gold, "answer_rate": 0.5} | kl

    monkeypatch.setattr(models, "evaluate", fake_evaluate)
    models.scoreboard("04", {"PPO": "a"})
    models.scoreboard("02", {"SFT": "b"})
    board = models.scoreboard("04", {"PPO": "c"})  # notebook 04 again: its row is replaced, not added
    assert measured == ["a", "b", "c"]
    assert json.loads((tmp_path / "board.json").read_text()) == board
    assert board["PPO"]["gold"] == 0.75 and board["PPO"]["gold_se"] == 0.0 and set(board) == {"PPO", "SFT"}
    last_table = capsys.readouterr().out.split("scoreboard, seed")[-1]
    assert last_table.index("SFT") < last_table.index("PPO"), "course order: notebook 02's row before 04's"
    assert board["PPO"]["kl"] == 1.0, "KL to notebook 02's SFT model"
    monkeypatch.setattr(models, "sft_model", lambda: pytest.fail("kl_to_sft=False must not load (or train) SFT"))
    board = models.scoreboard("01", {"pretrained": "d"}, kl_to_sft=False)
    assert board["pretrained"]["kl"] is None and "—" in capsys.readouterr().out.split("pretrained")[-1]
