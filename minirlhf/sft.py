"""Stage 2, supervised fine-tuning: imitate demonstrations, scoring only the response.

    L(theta) = - mean over response tokens t of log p_theta(y_t | x, y_<t)

Same loss as pretraining with a different mask: the prompt is context, not something to learn to
write. The demonstrators are imperfect (wrong values, random confidence words, rambling, leaks), so
a model that imitates them well inherits their mistakes; that ceiling is what RLHF later passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import numpy as np

from minirlhf import transformer
from minirlhf.pretrain import lm_loss
from minirlhf.data import encode_pairs
from minirlhf.training import OptimConfig, fit
from minirlhf.world import World, demonstrate, sample_prompts

@dataclass(frozen=True)
class SFTConfig:
    """How many demonstrations and how long to fine-tune."""

    n_demos: int = 400  # demonstrations (a few hundred, as in the course)
    optim: OptimConfig = OptimConfig(steps=300, batch_size=64, lr=3e-4, warmup=20)


def demo_data(world: World, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    prompts = sample_prompts(world, rng, n)
    responses = [demonstrate(world, rng, p)[0] for p in prompts]
    return encode_pairs(prompts, responses)


def sft(
    key: jax.Array, params: dict, world: World, model_cfg: transformer.ModelConfig, cfg: SFTConfig = SFTConfig()
) -> tuple[dict, dict]:
    """Fine-tune pretrained params on demonstrations; returns (params, loss history)."""
    key_data, key_train = jax.random.split(key)
    data = demo_data(world, np.random.default_rng(int(jax.random.randint(key_data, (), 0, 2**31 - 1))), cfg.n_demos)
    return fit(params, partial(lm_loss, cfg=model_cfg), data, key_train, cfg.optim, desc="sft")
