"""Stage 1, pretraining: next-token prediction on the toy corpus.

    L(theta) = - mean over real tokens t >= 1 of log p_theta(x_t | x_<t)

The corpus has facts, unanswered question lists, chatter, secret-leaking documents and rule
judgements, so the model learns the language and what is true in it, but never sees an assistant
answering. Asked a question, it will continue the text.
"""
from __future__ import annotations

from dataclasses import dataclass
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from minirlhf import transformer
from minirlhf.ops import masked_mean, numpy_rng, token_logprobs
from minirlhf.tokenizer import encode, pad_right
from minirlhf.training import OptimConfig, fit
from minirlhf.world import World, pretraining_corpus


@dataclass(frozen=True)
class PretrainConfig:
    """How much text and how long to train on it."""

    n_docs: int = 4000  # documents in the corpus (each 10-40 words)
    seq_len: int = 40  # documents are right-padded to this width
    # 1000 steps, not 500: at 500 the model has not yet learned every sum, and SFT cannot draw out what
    # pretraining did not teach.
    optim: OptimConfig = OptimConfig(steps=1000, batch_size=64, lr=3e-3, warmup=30)


def lm_loss(
    params: dict, batch: dict, cfg: transformer.ModelConfig
) -> tuple[jax.Array, dict]:
    """Mean next-token negative log-likelihood over batch["loss_mask"] (aligned with the predicted token)."""
    tokens: Int[Array, "batch seq"] = batch["tokens"]
    logits, _ = transformer.forward(params, tokens, batch["valid"], cfg)
    logp = token_logprobs(logits, tokens)  # [B, T]; position 0 is never predicted
    mask: Bool[Array, "batch seq"] = batch["loss_mask"]
    nll = -masked_mean(logp, mask)
    return nll, {"perplexity": jnp.exp(nll)}


def corpus_batch(world: World, rng: np.random.Generator, cfg: PretrainConfig) -> dict[str, np.ndarray]:
    docs = [encode(d) for d in pretraining_corpus(world, rng, cfg.n_docs)]
    tokens, valid = pad_right(docs, cfg.seq_len)
    loss_mask = valid.copy()
    loss_mask[:, 0] = False  # nothing predicts the first token (<bos>)
    return {"tokens": tokens, "valid": valid, "loss_mask": loss_mask}


def pretrain(
    key: jax.Array, world: World, model_cfg: transformer.ModelConfig, cfg: PretrainConfig = PretrainConfig()
) -> tuple[dict, dict]:
    """Initialise a model and pretrain it; returns (params, loss history)."""
    key_init, key_data, key_train = jax.random.split(key, 3)
    data = corpus_batch(world, numpy_rng(key_data), cfg)
    params = transformer.init_params(key_init, model_cfg)
    return fit(params, lm_loss, data, key_train, cfg.optim, desc="pretrain", static={"cfg": model_cfg})
