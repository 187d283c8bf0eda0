"""The notebooks' shared setup: one world, notebook-sized configs, and models passed from notebook to notebook.

Each notebook trains its own stage and saves the result in notebooks/artifacts/ (a gitignored folder);
the next notebook loads it. A notebook run on its own, on a fresh clone, finds nothing there and trains
what it needs with the library, with the same configs and keys, so it gets the same kind of model.

Pretraining, SFT and the reward model use the pipeline's configs (`python -m minirlhf run`, minirlhf/pipeline.py).
PPO and DPO run SHORTER (fewer iterations and steps), so that each notebook runs in about two minutes on two
CPU cores; `describe` prints what differs from the pipeline. The stages still work at this size; the
pipeline's PPO and DPO numbers are a little better.
"""
from __future__ import annotations

import dataclasses
import hashlib
from functools import partial
from pathlib import Path

import jax
import numpy as np

from minirlhf import checkpoint, ppo, pretrain, reward_model, sft
from minirlhf.evaluation import gold_scores
from minirlhf.pipeline import PipelineConfig
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.transformer import ModelConfig
from minirlhf.world import WorldConfig, make_world, sample_prompts

SEED = 0
WORLD = make_world(WorldConfig(seed=SEED))
MODEL = ModelConfig(vocab_size=VOCAB_SIZE)  # the pipeline's model: 2 layers, d_model 64
PIPELINE = PipelineConfig()  # the course's main run, for comparison
PRETRAIN = PIPELINE.pretrain
SFT = PIPELINE.sft
RM = PIPELINE.rm
PPO = dataclasses.replace(PIPELINE.ppo, iterations=60)  # shorter: the gold reward still passes SFT's
DPO = dataclasses.replace(PIPELINE.dpo, optim=dataclasses.replace(PIPELINE.dpo.optim, steps=150))  # shorter
N_EVAL = 512  # held-out prompts every model is measured on (as in the pipeline)

KEYS = dict(zip(["pretrain", "sft", "rm", "ppo", "dpo", "bon", "bon_kl", "eval"],
                jax.random.split(jax.random.PRNGKey(SEED), 8)))  # one key per purpose, as in the pipeline
EVAL_PROMPTS = sample_prompts(WORLD, np.random.default_rng(SEED + 1), N_EVAL, split="heldout")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _path(name: str, *configs) -> Path:
    """artifacts/<name>-<hash of the configs that made it>.npz: a changed config never loads a stale model."""
    digest = hashlib.sha1(repr([SEED, MODEL, *configs]).encode()).hexdigest()[:8]
    return ARTIFACTS / f"{name}-{digest}.npz"


PATHS = {
    "pretrained": _path("pretrained", PRETRAIN),
    "sft": _path("sft", PRETRAIN, SFT),
    "reward_model": _path("reward_model", PRETRAIN, SFT, RM),
    "pairs": _path("pairs", PRETRAIN, SFT, RM),
    "ppo": _path("ppo", PRETRAIN, SFT, RM, PPO),
}


# ---------------------------------------------------------------- saving

def save_model(name: str, params: dict) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    checkpoint.save(str(PATHS[name]), params, MODEL, overwrite=True)
    return PATHS[name]


def save_reward_model(rm_params: dict, pairs: dict) -> Path:
    """The RM's transformer as a checkpoint, its scalar head and the training pairs beside it (plain arrays)."""
    path = save_model("reward_model", rm_params["lm"])
    np.savez(path.with_suffix(".head.npz"), **{k: np.asarray(v) for k, v in rm_params["head"].items()})
    np.savez(PATHS["pairs"], **pairs)
    return path


def _load(name: str) -> dict | None:
    if not PATHS[name].is_file():
        return None
    try:
        params, cfg = checkpoint.load(str(PATHS[name]))
    except ValueError as e:  # unreadable or from another version of the model: train a fresh one
        print(f"ignoring {PATHS[name].name}: {e}")
        return None
    return params if cfg == MODEL else None


# ---------------------------------------------------------------- load, or train with the library

def pretrained() -> dict:
    """notebooks/01's model; trained here (tqdm bar) when it is not saved."""
    params = _load("pretrained")
    if params is None:
        print("no saved pretrained model: pretraining one (as in notebook 01)")
        params, _ = pretrain.pretrain(KEYS["pretrain"], WORLD, MODEL, PRETRAIN)
        save_model("pretrained", params)
    return params


def sft_model() -> dict:
    """notebooks/02's model."""
    params = _load("sft")
    if params is None:
        base = pretrained()
        print("no saved SFT model: fine-tuning one (as in notebook 02)")
        params, _ = sft.sft(KEYS["sft"], base, WORLD, MODEL, SFT)
        save_model("sft", params)
    return params


def reward_model_and_pairs() -> tuple[dict, dict]:
    """notebooks/03's normalised reward model and the labelled pairs it was trained on."""
    lm = _load("reward_model")
    if lm is not None and PATHS["pairs"].is_file() and PATHS["reward_model"].with_suffix(".head.npz").is_file():
        with np.load(PATHS["reward_model"].with_suffix(".head.npz")) as f:
            head = {k: f[k] for k in f.files}
        with np.load(PATHS["pairs"]) as f:
            pairs = {k: f[k] for k in f.files}
        return {"lm": lm, "head": head}, pairs
    base = sft_model()
    print("no saved reward model: training one (as in notebook 03)")
    rm_params, pairs, _, _ = reward_model.run_reward_model(KEYS["rm"], base, WORLD, MODEL, RM)
    save_reward_model(rm_params, pairs)
    return rm_params, pairs


def ppo_policy() -> dict:
    """notebooks/04's PPO policy."""
    params = _load("ppo")
    if params is None:
        base = sft_model()
        rm_params, _ = reward_model_and_pairs()
        print("no saved PPO policy: training one (as in notebook 04)")
        params, _ = train_ppo(base, rm_params)
        save_model("ppo", params)
    return params


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
