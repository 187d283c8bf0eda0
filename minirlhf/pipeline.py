"""The whole course in one run: pretrain -> SFT -> reward model -> PPO -> DPO -> best-of-n -> evaluation.

`python -m minirlhf run` calls `run_pipeline`, which writes to the output folder:
  metrics.json  one entry per model (gold_reward with its standard error over the prompts gold_se,
                answer_rate, kl_to_sft, proxy_reward, and per_kind: what it does on each kind of prompt), the
                reward model's held-out accuracies beside their ceilings (overall and by pair type), and
                seconds per stage
  report.md     the table and what its terms mean, samples for the same prompts from every model (with their
                gold scores), the plots, and how many of each stage's seconds went to compiling (also printed
                at the end)
  *.png         training curves, gold vs proxy reward, reward vs KL
  models/       the SFT, PPO and DPO policies and the reward model (checkpoint.save), which `python -m minirlhf
                ask` loads
The folder is checked before anything trains (run_folder.check_out): a folder holding a run is refused unless
force=True, which replaces only the run's own files.
Every number comes from this run; the same seed on the same machine with the same package versions gives the
same file. On another CPU, float rounding differs in the last bits and training amplifies it, so the numbers
move (PPO's most): compare runs across machines over several seeds, never one.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from functools import partial

import jax
import numpy as np
from tqdm.auto import tqdm

from minirlhf import best_of_n as bon
from minirlhf import checkpoint, dpo, ppo, pretrain, reward_model, sft
from minirlhf.compile_cache import CompileClock
from minirlhf.evaluation import evaluate, gold_scores, per_kind
from minirlhf.report import ending, write_report
from minirlhf.run_folder import MODELS as SAVED, check_out, model_path
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.transformer import ModelConfig
from minirlhf.world import World, WorldConfig, make_world, sample_prompts


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's config; the defaults are the course's main run (about two minutes on 2 cores)."""

    seed: int = 0  # one seed for the world, the data and every model
    model: ModelConfig = ModelConfig(vocab_size=VOCAB_SIZE)
    pretrain: pretrain.PretrainConfig = pretrain.PretrainConfig()
    sft: sft.SFTConfig = sft.SFTConfig()
    rm: reward_model.RMConfig = reward_model.RMConfig()
    ppo: ppo.PPOConfig = ppo.PPOConfig()
    dpo: dpo.DPOConfig = dpo.DPOConfig()
    best_of_n: int = 16  # n for best-of-n sampling against the reward model
    bon_kl_prompts: int = 12  # distinct prompts on which best-of-n's KL to SFT is measured
    bon_kl_draws: int = 256  # SFT samples per prompt for that measurement
    n_eval: int = 512  # held-out prompts every model answers
    n_samples_shown: int = 6  # prompts whose responses the report prints
    smoke_test: bool = False  # set by PipelineConfig.quick(): the report's title then says so

    def __post_init__(self):
        if self.model.vocab_size != VOCAB_SIZE:
            raise ValueError(f"model.vocab_size={self.model.vocab_size} but the toy language has {VOCAB_SIZE} words")
        if self.best_of_n < 1 or self.n_eval < 1:
            raise ValueError("best_of_n and n_eval must be >= 1")

    @classmethod
    def quick(cls, seed: int = 0) -> "PipelineConfig":
        """A smoke test: every stage runs, briefly. Its numbers are not the course's figures."""
        short = lambda steps, **kw: OptimConfig(steps=steps, warmup=min(10, steps), **kw)
        return cls(
            seed=seed,
            pretrain=pretrain.PretrainConfig(n_docs=500, optim=short(60)),
            sft=sft.SFTConfig(n_demos=100, optim=short(30, lr=3e-4)),
            rm=reward_model.RMConfig(n_pairs=128, n_heldout=128, n_normalize=64, optim=short(20)),
            ppo=ppo.PPOConfig(iterations=4, batch_size=32),
            dpo=dpo.DPOConfig(optim=short(20)),
            best_of_n=4, bon_kl_prompts=2, bon_kl_draws=32, n_eval=64, smoke_test=True,
        )


STAGES = ("pretrain", "sft", "rm", "ppo", "dpo", "bon", "bon_kl", "eval")


def stage_keys(seed: int) -> dict[str, jax.Array]:
    """One key per stage, all from `seed`: changing one stage's randomness never moves another's."""
    return dict(zip(STAGES, jax.random.split(jax.random.PRNGKey(seed), len(STAGES))))


def run_pipeline(cfg: PipelineConfig = PipelineConfig(), out: str | None = "runs/default", force: bool = False,
                 overrides: tuple[str, ...] = ()) -> dict:
    """Train every stage, evaluate every model on the same held-out prompts; returns metrics.

    `out` is checked first (see run_folder.check_out); `overrides` (the CLI's --set lines) go into config.json.
    """
    if out is not None:
        check_out(out, force)
    world = make_world(WorldConfig(seed=cfg.seed))
    keys = stage_keys(cfg.seed)
    seconds, compiling, histories, models = {}, {}, {}, {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], compiling[stage] = round(now - clock, 2), compile_clock.split()
        clock = now

    with CompileClock() as compile_clock:
        models["pretrained"], histories["pretrain"] = pretrain.pretrain(
            keys["pretrain"], world, cfg.model, cfg.pretrain)
        lap("pretrain")
        models["sft"], histories["sft"] = sft.sft(keys["sft"], models["pretrained"], world, cfg.model, cfg.sft)
        lap("sft")
        rm_params, pairs, rm_metrics, histories["reward model"] = reward_model.run_reward_model(
            keys["rm"], models["sft"], world, cfg.model, cfg.rm)
        lap("reward_model")
        reward_fn = reward_model.reward_fn(cfg.model)
        models["ppo"], histories["ppo"] = ppo.train_ppo(
            keys["ppo"], models["sft"], models["sft"], reward_fn, rm_params, partial(sample_prompts, world),
            cfg.model, cfg.ppo, gold_fn=partial(gold_scores, world), value_params=rm_params)
        lap("ppo")
        models["dpo"], histories["dpo"] = dpo.train_dpo(keys["dpo"], models["sft"], pairs, cfg.model, cfg.dpo)
        lap("dpo")

        eval_prompts = sample_prompts(world, np.random.default_rng(cfg.seed + 1), cfg.n_eval, split="heldout")
        metrics = {name: _evaluate(params, rm_params, cfg, world, eval_prompts, keys["eval"], models["sft"])
                   for name, params in tqdm(models.items(), desc="evaluation", leave=False)}
        lap("evaluation")
        metrics["best_of_n"] = _evaluate_best_of_n(cfg, world, eval_prompts, keys, models["sft"], rm_params)
        lap("best_of_n")
    models["reward_model"] = rm_params
    metrics["reward_model"] = rm_metrics
    metrics["seconds"] = seconds
    metrics["seed"] = cfg.seed
    samples = {name: m.pop("tokens") for name, m in metrics.items() if isinstance(m, dict) and "tokens" in m}
    golds = {name: metrics[name].pop("gold") for name in samples}  # each sample's gold score, for the report
    for name, tokens in samples.items():  # what each model does, kind by kind
        metrics[name]["per_kind"] = per_kind(world, eval_prompts, tokens)
        metrics[name].pop("valid", None)
    metrics = _plain(metrics)
    if out is not None:
        save_models(out, models, cfg, overwrite=force)
        config = {**dataclasses.asdict(cfg), "overrides": list(overrides)}
        write_report(out, metrics, histories, samples, eval_prompts, cfg.n_samples_shown, config, compiling, golds)
    print(ending(metrics, compiling, out))
    return metrics


def save_models(out: str, models: dict, cfg: PipelineConfig, overwrite: bool = False) -> None:
    """The policies and the (normalized) reward model, one checkpoint each, with the run's seed in their meta."""
    os.makedirs(os.path.dirname(model_path(out, "sft")), exist_ok=True)
    for name in SAVED:
        checkpoint.save(model_path(out, name), models[name], cfg.model, meta={"seed": cfg.seed, "model": name},
                        overwrite=overwrite)


def _evaluate(params, rm_params, cfg: PipelineConfig, world: World, prompts, key, sft_params) -> dict:
    result = evaluate(params, cfg.model, world, prompts, key, ref_params=sft_params)
    result["proxy_reward"] = _proxy(rm_params, result["tokens"], result["valid"], cfg.model)
    return result


def _evaluate_best_of_n(cfg: PipelineConfig, world: World, prompts, keys, sft_params, rm_params) -> dict:
    picked = bon.best_of_n(keys["bon"], sft_params, rm_params, prompts, cfg.model, cfg.best_of_n)
    tokens = np.asarray(picked.tokens)
    result = evaluate(sft_params, cfg.model, world, prompts, keys["bon"], tokens=tokens)
    result["proxy_reward"] = float(np.mean(picked.scores))
    distinct = list({p.words: p for p in prompts}.values())[: cfg.bon_kl_prompts]
    kl = bon.best_of_n_kl(keys["bon_kl"], sft_params, rm_params, distinct, cfg.model, cfg.best_of_n, cfg.bon_kl_draws)
    result.update(kl_to_sft=kl["kl"], kl_bound=kl["bound"], kl_coverage=kl["coverage"], n=cfg.best_of_n)
    return result


def _proxy(rm_params, tokens: np.ndarray, valid: np.ndarray, model_cfg: ModelConfig) -> float:
    return float(np.mean(reward_model.score(rm_params, jax.device_put(tokens), jax.device_put(valid), model_cfg)))


def _plain(x):
    """numpy scalars -> Python numbers, so json.dump writes them."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
