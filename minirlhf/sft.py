"""Stage 2, supervised fine-tuning: imitate demonstrations, scoring only the response.

    L(theta) = - mean over response tokens t of log p_theta(y_t | x, y_<t)

Same loss as pretraining with a different mask: the prompt is context, not something to learn to
write. A few hundred demonstrations, seen for dozens of epochs, also wash out what pretraining taught
(the sums it knew), so each SFT batch also replays pretraining documents, with their ordinary
next-token loss: the "pretraining mix" InstructGPT adds to its PPO objective (Ouyang et al. 2022, eq. 2),
used here one stage earlier. The demonstrators are imperfect (wrong values, random confidence words, rambling, leaks), so
a model that imitates them well inherits their mistakes; that ceiling is what RLHF later passes.
"""
from __future__ import annotations

from dataclasses import dataclass
import jax
import numpy as np

from minirlhf import transformer
from minirlhf.ops import numpy_rng
from minirlhf.pretrain import PretrainConfig, corpus_batch, lm_loss
from minirlhf.data import encode_pairs
from minirlhf.training import OptimConfig, fit
from minirlhf.world import World, demonstrate, sample_prompts

@dataclass(frozen=True)
class SFTConfig:
    """How many demonstrations and how long to fine-tune."""

    n_demos: int = 400  # demonstrations (a few hundred, as in the course)
    n_replay: int = 400  # pretraining documents mixed in (a fresh draw of the corpus); 0 turns replay off
    optim: OptimConfig = OptimConfig(steps=300, batch_size=64, lr=3e-4, warmup=20)


def demo_data(world: World, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    prompts = sample_prompts(world, rng, n)
    responses = [demonstrate(world, rng, p)[0] for p in prompts]
    return encode_pairs(prompts, responses)


def with_replay(demos: dict[str, np.ndarray], corpus: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stack demonstrations and pretraining documents into one dataset, right-padding the narrower to one width.

    Each row keeps its own loss mask (response tokens for a demonstration, every token after <bos>
    for a document), and a minibatch draws rows uniformly, so the replayed share is n_replay / total.
    """
    width = max(demos["tokens"].shape[1], corpus["tokens"].shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))  # zeros: PAD_ID tokens, False masks
    return {k: np.concatenate([pad(demos[k]), pad(corpus[k])]) for k in ("tokens", "valid", "loss_mask")}


def sft(
    key: jax.Array, params: dict, world: World, model_cfg: transformer.ModelConfig, cfg: SFTConfig = SFTConfig()
) -> tuple[dict, dict]:
    """Fine-tune pretrained params on demonstrations; returns (params, loss history)."""
    key_data, key_train = jax.random.split(key)
    rng = numpy_rng(key_data)
    data = demo_data(world, rng, cfg.n_demos)
    if cfg.n_replay > 0:
        data = with_replay(data, corpus_batch(world, rng, PretrainConfig(n_docs=cfg.n_replay)))
    return fit(params, lm_loss, data, key_train, cfg.optim, desc="sft", static={"cfg": model_cfg})
