"""The models every experiment starts from: pretrained -> SFT -> reward model, for one seed.

Experiments vary what comes *after* SFT (PPO's beta, the labelers, the loss), so they share these
stages. `base_models` trains them exactly as the pipeline does (same configs, same keys), and, given
a cache folder, saves them as plain .npz files named by a hash of everything that made them, so a
second experiment (or a second run of the same one) loads them instead of training again. A changed
config gives a new hash: a stale model is never loaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minirlhf import checkpoint, pretrain, reward_model, sft
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


def base_models(seed: int = 0, cfg: PipelineConfig | None = None, cache: str | Path | None = "runs/cache",
                with_rm: bool = True) -> BaseModels:
    """Pretrain, SFT and (with_rm) the reward model for `seed`, as `python -m minirlhf run` trains them.

    cache: a folder to load from / save to, or None to always train.
    """
    import dataclasses

    cfg = dataclasses.replace(cfg or PipelineConfig(), seed=seed)
    world = make_world(WorldConfig(seed=seed))
    keys = stage_keys(seed)
    tag = hashlib.sha1(repr([seed, cfg.model, cfg.pretrain, cfg.sft]).encode()).hexdigest()[:10]
    rm_tag = hashlib.sha1(repr([tag, cfg.rm]).encode()).hexdigest()[:10]
    folder = Path(cache) if cache is not None else None

    def cached(name: str, make):
        path = folder / f"{name}.npz" if folder is not None else None
        if path is not None and path.is_file():
            try:
                params, model_cfg = checkpoint.load(str(path))
                if model_cfg == cfg.model:
                    return params
            except ValueError as e:
                print(f"ignoring {path}: {e}")
        params = make()
        if path is not None:
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint.save(str(path), params, cfg.model, overwrite=True)
        return params

    pretrained = cached(f"pretrained-{tag}", lambda: pretrain.pretrain(keys["pretrain"], world, cfg.model, cfg.pretrain)[0])
    sft_params = cached(f"sft-{tag}", lambda: sft.sft(keys["sft"], pretrained, world, cfg.model, cfg.sft)[0])
    if not with_rm:
        return BaseModels(cfg, world, keys, pretrained, sft_params, {}, {}, {})
    rm, pairs, metrics = _reward_model(folder, f"rm-{rm_tag}", keys["rm"], sft_params, world, cfg)
    return BaseModels(cfg, world, keys, pretrained, sft_params, rm, pairs, metrics)


def _reward_model(folder: Path | None, name: str, key, sft_params, world, cfg: PipelineConfig):
    """The normalised RM, its pairs and metrics: loaded from folder/name.* when there, else trained and saved."""
    import json

    if folder is not None and all((folder / f"{name}.{s}").is_file() for s in ("npz", "head.npz", "pairs.npz", "json")):
        try:
            lm, model_cfg = checkpoint.load(str(folder / f"{name}.npz"))
            if model_cfg != cfg.model:
                raise ValueError(f"it holds a model of another config ({model_cfg}, not {cfg.model})")
            with np.load(folder / f"{name}.head.npz", allow_pickle=False) as f:
                head = {k: f[k] for k in f.files}
            with np.load(folder / f"{name}.pairs.npz", allow_pickle=False) as f:
                pairs = {k: f[k] for k in f.files}
            return {"lm": lm, "head": head}, pairs, json.loads((folder / f"{name}.json").read_text())
        except (ValueError, OSError) as e:
            print(f"ignoring cached reward model {name}: {e}")
    rm, pairs, metrics, _ = reward_model.run_reward_model(key, sft_params, world, cfg.model, cfg.rm)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save(str(folder / f"{name}.npz"), rm["lm"], cfg.model, overwrite=True)
        np.savez(folder / f"{name}.head.npz", **{k: np.asarray(v) for k, v in rm["head"].items()})
        np.savez(folder / f"{name}.pairs.npz", **pairs)
        (folder / f"{name}.json").write_text(json.dumps({k: float(v) for k, v in metrics.items()}))
    return rm, pairs, metrics
