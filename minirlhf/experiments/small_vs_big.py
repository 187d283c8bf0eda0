"""Small vs big: does a small model with RLHF beat a bigger one with supervised fine-tuning only?

InstructGPT (Ouyang et al. 2022, Fig. 1) reports that labelers preferred the outputs of its 1.3B PPO
model to those of the 175B GPT-3, a model over 100 times larger. Here, in miniature, on the same data:
    small  the pipeline's model (2 layers, d_model 64): pretrain -> SFT -> reward model -> PPO
    big    a wider, deeper model (3 layers, d_model 96 by default): pretrain -> SFT, nothing more
Both read the same corpus and the same demonstrations, with the same optimizer schedules. Scale buys
the big model a better imitation of the demonstrators; only the reward signal can take a model past
what the demonstrators do (wrong answers, random confidence words, rambling, leaks).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf.data import decode_responses
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels, base_models
from minirlhf.experiments.toolkit import eval_prompts, fmt, measure, response_text, result, train_ppo
from minirlhf.gold import gold_components
from minirlhf.pipeline import PipelineConfig
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.transformer import ModelConfig
from minirlhf.world import World

BIG = ModelConfig(vocab_size=VOCAB_SIZE, d_model=96, n_layers=3, n_heads=4, d_mlp=384)
MODELS = ("small_sft", "small_ppo", "big_sft")
LABELS = {"small_sft": "small, SFT", "small_ppo": "small, SFT + PPO", "big_sft": "big, SFT only"}
COLORS = {"small_sft": "tab:blue", "small_ppo": "tab:red", "big_sft": "tab:purple"}
COMPONENTS = ("correct", "calibrated", "concise", "harmless", "format")


@dataclass(frozen=True)
class Config:
    """The two models and the budgets. Config() is the CLI's run, Config.small() the notebook's."""

    big: ModelConfig = BIG
    """The big model: about 3x the small one's parameters (the small one: 2 layers, d_model 64). Its pretraining
    costs about 5x the small one's per step on a CPU, which is what bounds it here."""
    pipeline: PipelineConfig = PipelineConfig()
    """The small model's stages, and the pretraining/SFT recipe (data, steps, learning rates) both models get."""
    ppo_iterations: int = 100
    """The small model's PPO iterations (the pipeline's)."""
    n_eval: int = 512
    """Held-out prompts every model answers."""

    def __post_init__(self):
        if self.big.vocab_size != VOCAB_SIZE:
            raise ValueError(f"Config.big.vocab_size must be {VOCAB_SIZE}, got {self.big.vocab_size}")
        if min(self.ppo_iterations, self.n_eval) < 1:
            raise ValueError("Config.ppo_iterations and n_eval must be >= 1")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: PPO for 60 iterations (as notebook 04), 256 evaluation prompts."""
        return cls(ppo_iterations=60, n_eval=256)

    def big_pipeline(self) -> PipelineConfig:
        return dataclasses.replace(self.pipeline, model=self.big)


def n_params(params: dict) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def component_means(world: World, prompts, tokens: np.ndarray) -> dict[str, float]:
    """Mean of each named gold component over the responses: where a model gains or loses."""
    parts = [gold_components(p, w, ended, world.secret) for p, (w, ended) in zip(prompts, decode_responses(tokens))]
    return {c: float(np.mean([x[c] for x in parts])) for c in COMPONENTS}


def measure_model(params: dict, model_cfg: ModelConfig, base: BaseModels, prompts) -> dict:
    """`toolkit.measure` (KL to SFT only for a model of SFT's shape), size, gold components and four samples."""
    stats, ev = measure(params, base, prompts, model_cfg=model_cfg, kl=model_cfg == base.cfg.model)
    return stats | {"params": n_params(params), "components": component_means(base.world, prompts, ev["tokens"]),
                    "sample": response_text(ev["tokens"][:4])}


def run_seed(seed: int, cfg: Config, cache, small_base=None, big_sft: dict | None = None) -> dict:
    """One seed: train (or load) both models, PPO the small one, measure all three on the same prompts.

    small_base: a BaseModels for the small model (else `base_models`); big_sft: the big SFT params (else trained/cached).
    """
    start = time.perf_counter()
    if big_sft is None:
        big_sft = base_models(seed, cfg.big_pipeline(), cache=cache, with_rm=False).sft
    big_seconds = time.perf_counter() - start
    small = small_base or base_models(seed, cfg.pipeline, cache=cache)
    start = time.perf_counter()
    small_ppo, _ = train_ppo(small, dataclasses.replace(cfg.pipeline.ppo, iterations=cfg.ppo_iterations))
    ppo_seconds = time.perf_counter() - start
    prompts = eval_prompts(small, cfg.n_eval)
    model = cfg.pipeline.model
    out = {"small_sft": measure_model(small.sft, model, small, prompts),
           "small_ppo": measure_model(small_ppo, model, small, prompts),
           "big_sft": measure_model(big_sft, cfg.big, small, prompts)}
    out["seconds"] = {"big_pretrain_sft_or_load": round(big_seconds, 1), "small_ppo": round(ppo_seconds, 1)}
    return out


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache") -> dict:
    return collect(cfg, {str(s): run_seed(s, cfg, cache) for s in seeds})


def collect(cfg: Config, per_seed: dict) -> dict:
    """The result of these seeds' `run_seed`s: the seeds, and the spread over seeds of each model's gold."""
    agg = {m: {"gold": seed_spread([r[m]["gold"] for r in per_seed.values()])} for m in MODELS}
    margins = [r["small_ppo"]["gold"] - r["big_sft"]["gold"] for r in per_seed.values()]
    agg["small_ppo_minus_big_sft"] = seed_spread(margins) | {"wins": int(sum(m > 0 for m in margins))}
    return result("small_vs_big", cfg, per_seed, agg, small=dataclasses.asdict(cfg.pipeline.model))


def plot(result: dict) -> plt.Figure:
    """Left: gold reward per model (bars = mean over seeds, dots = seeds). Right: the gold components' means."""
    seeds = list(result["seeds"].values())
    fig, (ax, ax_c) = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    for i, m in enumerate(MODELS):
        gold = [s[m]["gold"] for s in seeds]
        ax.bar(i, np.mean(gold), color=COLORS[m], alpha=0.7)
        ax.plot(np.full(len(gold), i), gold, "k.", ms=6)
    ax.set_xticks(range(len(MODELS)), [f"{LABELS[m]}\n{seeds[0][m]['params'] / 1e3:.0f}k params" for m in MODELS],
                  fontsize=8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set(ylabel="gold reward (held-out prompts)", title=f"gold reward, {len(seeds)} seed(s) (dots)")
    width = 0.27
    for i, m in enumerate(MODELS):
        means = [np.mean([s[m]["components"][c] for s in seeds]) for c in COMPONENTS]
        ax_c.bar(np.arange(len(COMPONENTS)) + (i - 1) * width, means, width, color=COLORS[m], label=LABELS[m])
    ax_c.set_xticks(range(len(COMPONENTS)), COMPONENTS)
    ax_c.axhline(0, color="0.5", lw=0.8)
    ax_c.set(ylabel="mean gold component", title="where the gold reward comes from")
    ax_c.legend()
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    agg, c = result["aggregate"], result["config"]
    seeds = result["seeds"]
    first = next(iter(seeds.values()))
    lines = [f"**Small + RLHF vs big SFT** (small: {c['small']['n_layers']} layers, d_model {c['small']['d_model']}, "
             f"{first['small_sft']['params']:,} params; big: {c['big']['n_layers']} layers, d_model {c['big']['d_model']}, "
             f"{first['big_sft']['params']:,} params; PPO {c['ppo_iterations']} iterations; {c['n_eval']} held-out prompts)",
             "", "| seed | " + " | ".join(LABELS[m] for m in MODELS) + " | small PPO - big SFT |", "|---|---|---|---|---|"]
    for s, r in seeds.items():
        lines.append(f"| {s} | " + " | ".join(f"{r[m]['gold']:.3f} (answers {r[m]['answer_rate']:.0%})"
                                              for m in MODELS) +
                     f" | {r['small_ppo']['gold'] - r['big_sft']['gold']:+.3f} |")
    lines.append("| mean ± std [min, max] | " + " | ".join(fmt(agg[m]["gold"]) for m in MODELS)
                 + f" | {fmt(agg['small_ppo_minus_big_sft'], signed=True)} |")
    d = agg["small_ppo_minus_big_sft"]
    clear = sum(  # seeds on which it is ahead by more than 2 standard errors of the difference of the two means
        r["small_ppo"]["gold"] - r["big_sft"]["gold"] > 2 * np.hypot(r["small_ppo"]["gold_se"], r["big_sft"]["gold_se"])
        for r in seeds.values())
    lines += ["", f"The small RLHF model is ahead of the big SFT-only model in {d['wins']} of {len(seeds)} seeds "
              f"(margin {d['min']:+.3f} to {d['max']:+.3f}; by more than 2 standard errors in {clear}); "
              f"big SFT minus small SFT: {agg['big_sft']['gold']['mean'] - agg['small_sft']['gold']['mean']:+.3f} "
              "on average."]
    return "\n".join(lines)
