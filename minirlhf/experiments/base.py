"""The models every experiment starts from: pretrained -> SFT -> reward model, for one seed.

Experiments vary what comes *after* SFT (PPO's beta, the labelers, the loss), so they share these
stages. Each is trained exactly as the pipeline trains it (same configs, same keys) and, given a cache
folder, kept in `minirlhf.store`: one file per model, named by and holding the configs that made it, so
a second experiment (or a notebook pointed at the same folder) loads it instead of training again, and a
file made by other configs is trained again rather than used.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from minirlhf import pretrain, reward_model, sft, store
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.world import World, WorldConfig, make_world


class BaseModels(NamedTuple):
    cfg: PipelineConfig  # what made them (cfg.seed is the seed)
    world: World
    keys: dict  # the pipeline's per-stage keys for this seed ("ppo", "dpo", "bon", "eval", ...)
    pretrained: dict
    sft: dict
    rm: dict  # normalised reward model {"lm", "head"}
    pairs: dict  # the labelled pairs the RM was trained on (DPO reuses them)
    rm_metrics: dict  # held-out accuracies beside their ceilings


UPSTREAM = {"pretrained": ("pretrain",), "sft": ("pretrain", "sft"), "rm": ("pretrain", "sft", "rm")}


def made_by(stage: str, cfg: PipelineConfig) -> dict:
    """The cache record of `stage` ("pretrained", "sft" or "rm"): the seed, the world, the model and every
    config from pretraining up to this stage; nothing a later stage reads, so a PPO change retrains nothing."""
    return store.record(stage, seed=cfg.seed, world=WorldConfig(seed=cfg.seed), model=cfg.model,
                        **{name: getattr(cfg, name) for name in UPSTREAM[stage]})


def pretrained_model(cfg: PipelineConfig, world: World, cache: str | Path | None) -> dict:
    """The pretrained LM for cfg.seed, from `cache` or trained as the pipeline does."""
    make = lambda: (pretrain.pretrain(stage_keys(cfg.seed)["pretrain"], world, cfg.model, cfg.pretrain)[0], {})
    return store.cached(cache, made_by("pretrained", cfg), cfg.model, make)[0]


def sft_model(cfg: PipelineConfig, world: World, cache: str | Path | None, pretrained: dict | None = None) -> dict:
    """The SFT policy for cfg.seed. `pretrained` if at hand, else it is loaded (or trained) only if SFT must be."""
    def make():
        start = pretrained if pretrained is not None else pretrained_model(cfg, world, cache)
        return sft.sft(stage_keys(cfg.seed)["sft"], start, world, cfg.model, cfg.sft)[0], {}

    return store.cached(cache, made_by("sft", cfg), cfg.model, make)[0]


def rm_and_pairs(cfg: PipelineConfig, world: World, cache: str | Path | None,
                 sft_params: dict | None = None) -> tuple[dict, dict, dict]:
    """(normalised RM {"lm", "head"}, its training pairs, its held-out metrics): one file holds all three."""
    def make():
        start = sft_params if sft_params is not None else sft_model(cfg, world, cache)
        rm, pairs, metrics, _ = reward_model.run_reward_model(stage_keys(cfg.seed)["rm"], start, world, cfg.model,
                                                              cfg.rm)
        return {"rm": rm, "pairs": pairs}, {"metrics": metrics}

    tree, extra = store.cached(cache, made_by("rm", cfg), cfg.model, make)
    return tree["rm"], tree["pairs"], extra["metrics"]


def base_models(seed: int = 0, cfg: PipelineConfig | None = None, cache: str | Path | None = "runs/cache",
                with_rm: bool = True) -> BaseModels:
    """Pretrain, SFT and (with_rm) the reward model for `seed`, as `python -m minirlhf run` trains them.

    cache: a folder to load from / save to, or None to always train.
    """
    cfg = dataclasses.replace(cfg or PipelineConfig(), seed=seed)
    world = make_world(WorldConfig(seed=seed))
    pretrained = pretrained_model(cfg, world, cache)
    sft_params = sft_model(cfg, world, cache, pretrained)
    rm, pairs, metrics = rm_and_pairs(cfg, world, cache, sft_params) if with_rm else ({}, {}, {})
    return BaseModels(cfg, world, stage_keys(seed), pretrained, sft_params, rm, pairs, metrics)
