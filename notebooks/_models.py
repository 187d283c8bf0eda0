"""The notebooks' shared setup: one world, notebook-sized configs, and models passed from notebook to notebook.

Each notebook trains its own stage and saves the result in notebooks/artifacts/ (a gitignored folder);
the next notebook loads it. A notebook run on its own, on a fresh clone, finds nothing there and trains
what it needs with the library, with the same configs and keys, so it gets the same model.

Everything follows from one seed, `SEED` (0, or MINIRLHF_SEED from the environment: see _setup.py): the world,
the evaluation prompts and every stage's key. A saved model's file name records its seed and configs, so the
notebooks run on seed 1 train and keep their own models beside seed 0's.

Pretraining, SFT and the reward model use the pipeline's configs (`python -m minirlhf run`, minirlhf/pipeline.py).
PPO and DPO run SHORTER (fewer iterations and steps), so that each notebook runs in about two minutes on two
CPU cores; `describe` prints what differs from the pipeline. The stages still work at this size; the
pipeline's PPO and DPO numbers are a little better.
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import jax
import numpy as np

from minirlhf import ppo, reward_model, store
from minirlhf.evaluation import evaluate, gold_scores
from minirlhf.experiments import base as shared  # the models a seed starts from, and their cache
from minirlhf.experiments.base import BaseModels
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.transformer import ModelConfig
from minirlhf.world import WorldConfig, make_world, sample_prompts

from _setup import SEED  # MINIRLHF_SEED, default 0

WORLD = make_world(WorldConfig(seed=SEED))
MODEL = ModelConfig(vocab_size=VOCAB_SIZE)  # the pipeline's model: 2 layers, d_model 64
PIPELINE = PipelineConfig()  # the course's main run, for comparison
PRETRAIN = PIPELINE.pretrain
SFT = PIPELINE.sft
RM = PIPELINE.rm
PPO = dataclasses.replace(PIPELINE.ppo, iterations=60)  # shorter: the gold reward still passes SFT's
DPO = dataclasses.replace(PIPELINE.dpo, optim=dataclasses.replace(PIPELINE.dpo.optim, steps=150))  # shorter
N_EVAL = 512  # held-out prompts every model is measured on (as in the pipeline)

KEYS = stage_keys(SEED)  # one key per purpose, the pipeline's ("pretrain", "sft", "rm", "ppo", "dpo", ...)
EVAL_PROMPTS = sample_prompts(WORLD, np.random.default_rng(SEED + 1), N_EVAL, split="heldout")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCOREBOARD = ARTIFACTS / f"scoreboard-seed{SEED}.json"  # the course's running scoreboard (`scoreboard`)
_PIPELINE = dataclasses.replace(PIPELINE, seed=SEED)

# What made each saved model (minirlhf.store): pretrained, SFT and "rm" are the pipeline's own records, so
# `base_models(SEED, cache="notebooks/artifacts")` and these functions read and write the same files. Notebook 03
# runs the library's RM stage (`run_reward_model`) with the pipeline's key, so its RM is the pipeline's: one RM.
# "ppo" is notebook 04's shorter run.
MADE_BY = {
    "pretrained": shared.made_by("pretrained", _PIPELINE),
    "sft": shared.made_by("sft", _PIPELINE),
    "rm": shared.made_by("rm", _PIPELINE),
    "ppo": {**shared.made_by("rm", _PIPELINE), **store.record("ppo", ppo=PPO)},
}


# ---------------------------------------------------------------- saving

def save_model(name: str, params: dict) -> Path:
    """Save a notebook's "pretrained", "sft" or "ppo" model where the functions below (and base_models) look."""
    return store.save(ARTIFACTS, MADE_BY[name], params, MODEL)


def save_reward_model(rm_params: dict, pairs: dict, metrics: dict) -> Path:
    """Notebook 03's `run_reward_model` results (normalised RM, training pairs, metrics), in the file that
    `base_models` writes for this seed, in its layout: the experiments' cache and the notebooks hold one RM."""
    return store.save(ARTIFACTS, MADE_BY["rm"], {"rm": rm_params, "pairs": pairs}, MODEL, {"metrics": metrics})


def _announce(name: str, text: str) -> None:
    """Say that a model is about to be trained here, before the library trains it."""
    if not store.path(ARTIFACTS, MADE_BY[name]).is_file():
        print(text)


# ---------------------------------------------------------------- load, or train with the library

def pretrained() -> dict:
    """notebooks/01's model; trained here (tqdm bar) when it is not saved."""
    _announce("pretrained", "no saved pretrained model: pretraining one (as in notebook 01)")
    return shared.pretrained_model(_PIPELINE, WORLD, ARTIFACTS)


def sft_model() -> dict:
    """notebooks/02's model."""
    _announce("sft", "no saved SFT model: fine-tuning one (as in notebook 02)")
    return shared.sft_model(_PIPELINE, WORLD, ARTIFACTS)


def _reward_model() -> tuple[dict, dict, dict]:
    """(RM, pairs, metrics): notebook 03's, which is the library's stage; trained here when it is not saved."""
    _announce("rm", "no saved reward model: training one (as in notebook 03)")
    return shared.rm_and_pairs(_PIPELINE, WORLD, ARTIFACTS)


def reward_model_and_pairs() -> tuple[dict, dict]:
    """notebooks/03's normalised reward model and the labelled pairs it was trained on."""
    rm_params, pairs, _ = _reward_model()
    return rm_params, pairs


def ppo_policy() -> dict:
    """notebooks/04's PPO policy."""
    def make():
        sft_params, (rm_params, _) = sft_model(), reward_model_and_pairs()
        print("no saved PPO policy: training one (as in notebook 04)")
        return train_ppo(sft_params, rm_params)[0], {}

    return store.cached(ARTIFACTS, MADE_BY["ppo"], MODEL, make)[0]


def base() -> BaseModels:
    """This seed's models as the experiments take them (notebooks 05-08): the ones saved by notebooks 01-03."""
    pretrained_params, sft_params = pretrained(), sft_model()
    rm_params, pairs, metrics = _reward_model()
    return BaseModels(_PIPELINE, WORLD, KEYS, pretrained_params, sft_params, rm_params, pairs, metrics)


def train_ppo(sft_params: dict, rm_params: dict, cfg: ppo.PPOConfig = PPO):
    """PPO exactly as notebook 04 runs it: SFT as start and reference, value model initialised from the RM."""
    return ppo.train_ppo(KEYS["ppo"], sft_params, sft_params, reward_model.reward_fn(MODEL), rm_params,
                         partial(sample_prompts, WORLD), MODEL, cfg, gold_fn=partial(gold_scores, WORLD),
                         value_params=rm_params)


def describe(cfg, pipeline=None) -> str:
    """A config on one line, for printing in a notebook, and what differs from the pipeline's `pipeline`."""
    text = f"{type(cfg).__name__}({', '.join(f'{k}={v}' for k, v in dataclasses.asdict(cfg).items())})"
    if pipeline is not None:
        ours, theirs = _flat(dataclasses.asdict(cfg)), _flat(dataclasses.asdict(pipeline))
        diff = [f"{k} = {v} (pipeline: {theirs[k]})" for k, v in ours.items() if theirs.get(k) != v]
        text += "\n  differs from the pipeline's: " + ("; ".join(diff) if diff else "nothing")
    return text


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def scoreboard(notebook: str, models: dict[str, dict], kl_to_sft: bool = True) -> dict:
    """The course's running scoreboard: measure each of `models` (name -> params of MODEL's shape) on EVAL_PROMPTS,
    with the eval key, as every notebook measures a model: gold ± standard error, exact KL to SFT, answer rate.

    The rows are kept in SCOREBOARD with the notebook that made them, so each notebook's row joins the earlier
    notebooks' (those run before, on this seed) and the table is printed in course order. A model measured again
    (a notebook run again) replaces its row. kl_to_sft=False leaves the KL out (notebook 01: SFT does not exist
    yet, and measuring against it would train it there). Returns the whole board, name -> row.
    """
    board = json.loads(SCOREBOARD.read_text()) if SCOREBOARD.exists() else {}
    sft_params = sft_model() if kl_to_sft else None
    for name, params in models.items():
        ev = evaluate(params, MODEL, WORLD, EVAL_PROMPTS, KEYS["eval"], ref_params=sft_params)
        board[name] = {"notebook": notebook, "gold": ev["gold_reward"],
                       "gold_se": float(np.std(ev["gold"]) / np.sqrt(len(EVAL_PROMPTS))), "kl": ev.get("kl_to_sft"),
                       "answer_rate": ev["answer_rate"]}
    ARTIFACTS.mkdir(exist_ok=True)
    SCOREBOARD.write_text(json.dumps(board, indent=1))
    print(f"scoreboard, seed {SEED}: every model so far on the same {len(EVAL_PROMPTS)} held-out prompts "
          "(notebooks not yet run on this seed have no row)")
    print(f"{'model':<34}{'notebook':<10}{'gold ± se':>16}{'KL to SFT':>11}{'answers':>9}")
    for name, row in sorted(board.items(), key=lambda item: item[1]["notebook"]):  # stable: within a notebook, as added
        kl = "—" if row["kl"] is None else f"{row['kl']:.3f}"
        print(f"{name:<34}{row['notebook']:<10}{row['gold']:>+9.3f} ± {row['gold_se']:.3f}{kl:>11}"
              f"{row['answer_rate']:>9.1%}")
    return board
