"""Sampling responses from the policy: temperature, top-k, EOS handling, log-probs, all in one jitted call.

The prompt is read once (`prefill`), then a `lax.scan` emits one token per step, feeding it back
through `decode_step` so each step costs one position, not a whole forward pass.

Layout of the result, for prompts left-padded to width P and R = max_new_tokens:

    slot:    0 ... P-1 | P ... P+R-1
    tokens:  prompt    | response, then pad_id after EOS
    valid:   prompt's  | True up to and including EOS, False after
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf.data import RESPONSE_WIDTH, encode_prompts
from minirlhf.ops import NEG_INF
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.transformer import ModelConfig, check_params, check_tokens, decode_step, prefill
from minirlhf.world import Prompt


@dataclass(frozen=True)
class SampleConfig:
    max_new_tokens: int = 16
    """R: how many response tokens to generate per prompt (rows that hit EOS earlier are padded)."""
    temperature: float = 1.0
    """Logits are divided by this before sampling; < 1 sharpens the distribution, > 1 flattens it."""
    top_k: int | None = None
    """If set, sample only among the k most likely tokens. The log-probs we return ignore this."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be None or at least 1, got {self.top_k}")


class Generation(NamedTuple):
    tokens: Int[Array, "batch seq"]  # prompt then response, seq = P + R
    valid: Bool[Array, "batch seq"]  # False on prompt padding and after EOS
    logprobs: Float[Array, "batch seq"]  # log p(token | tokens before it); 0 on the prompt and padding


def sample_token(logits: Float[Array, "batch vocab"], gumbel: Float[Array, "batch vocab"], sample_cfg: SampleConfig):
    """Draw one token per row; return it with its log-prob under the temperature-scaled full distribution.

    Gumbel-max trick: argmax(logits + g), with g ~ Gumbel(0, 1) i.i.d., is a sample from
    softmax(logits). It is what `jax.random.categorical` does; taking the noise as an argument
    lets `generate` draw it for all steps in one call instead of one small call per step.
    """
    scaled = logits / sample_cfg.temperature  # [B, V]
    logprobs = jax.nn.log_softmax(scaled, axis=-1)  # [B, V]
    if sample_cfg.top_k is not None:
        kth_best = jax.lax.top_k(scaled, sample_cfg.top_k)[0][:, -1:]  # [B, 1]
        scaled = jnp.where(scaled >= kth_best, scaled, NEG_INF)
    token = jnp.argmax(scaled + gumbel, axis=-1)  # [B]
    return token, jnp.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]


def generate(
    params: dict,
    prompt_tokens: Int[Array, "batch prompt"],
    prompt_valid: Bool[Array, "batch prompt"],
    key,
    cfg: ModelConfig,
    sample_cfg: SampleConfig,
    eos_id: int,
    pad_id: int,
) -> Generation:
    """Sample max_new_tokens response tokens after each left-padded prompt (one compiled program).

    A row stops at its first `eos_id` (which stays valid); the slots after it hold `pad_id`, are
    invalid and have log-prob 0. `logprobs` come from the temperature-scaled distribution over the
    full vocabulary (top-k only limits which tokens can be drawn), so they equal
    `token_logprobs(logits, tokens, temperature)` of a `forward` pass over the result.
    Called outside jit, it first checks the params against cfg and the prompts' ids and padding.
    """
    if not isinstance(jax.tree_util.tree_leaves(params)[0], jax.core.Tracer):
        check_params(params, cfg, "generate's params")
    if not isinstance(prompt_valid, jax.core.Tracer):
        check_prompts(prompt_tokens, prompt_valid, cfg)
    return _generate(params, prompt_tokens, prompt_valid, key, cfg, sample_cfg, eos_id, pad_id)


def check_prompts(prompt_tokens, prompt_valid, cfg: ModelConfig) -> None:
    """Raise unless every prompt row is left-padded and holds at least one token. Needs values: outside jit.

    The first response token is sampled from the logits at the last prompt slot. A right-padded row
    would sample it after a padding slot, and an all-padding row from no prompt at all.
    """
    check_tokens(prompt_tokens, cfg)
    valid = np.asarray(prompt_valid)
    if valid.ndim != 2 or valid.shape[1] == 0:
        raise ValueError(f"prompt_valid must be [batch, prompt] with prompt >= 1, got shape {valid.shape}")
    empty = np.flatnonzero(~valid.any(axis=1))
    if empty.size:
        raise ValueError(f"prompt row {empty[0]} is all padding: every prompt needs at least one real token")
    gaps = np.flatnonzero((valid[:, :-1] & ~valid[:, 1:]).any(axis=1))  # a valid slot followed by padding
    if gaps.size:
        raise ValueError(f"prompt row {gaps[0]} has padding after its tokens: prompts must be LEFT-padded "
                         f"(padding first, as data.encode_prompts makes them)")


@partial(jax.jit, static_argnames=("cfg", "sample_cfg", "eos_id", "pad_id"))
def _generate(params: dict, prompt_tokens, prompt_valid, key, cfg: ModelConfig, sample_cfg: SampleConfig,
              eos_id: int, pad_id: int) -> Generation:
    """generate's compiled body (generate checks the inputs first)."""
    B, P = prompt_tokens.shape
    R = sample_cfg.max_new_tokens
    if P + R > cfg.max_len:
        raise ValueError(f"prompt width {P} + max_new_tokens {R} exceeds ModelConfig.max_len={cfg.max_len}")
    if sample_cfg.top_k is not None and sample_cfg.top_k > cfg.vocab_size:
        raise ValueError(f"top_k={sample_cfg.top_k} exceeds vocab_size={cfg.vocab_size}")

    logits, _, cache = prefill(params, prompt_tokens, prompt_valid, cfg, cache_len=P + R)
    valid = jnp.pad(prompt_valid, ((0, 0), (0, R)))  # [B, P+R]: response slots become valid as they are filled

    def step(carry, inputs):
        logits, cache, valid, done = carry  # logits [B, V] predict the token for slot t
        gumbel, t = inputs
        token, logprob = sample_token(logits, gumbel, sample_cfg)  # [B], [B]
        alive = ~done  # rows that have not emitted EOS yet
        token = jnp.where(alive, token, pad_id)
        valid = valid.at[:, t].set(alive)
        done = done | (token == eos_id)  # EOS itself stays valid; everything after it is padding
        # The last step's decode is wasted work; skipping it would need a copy of this body outside the scan.
        logits, _, cache = decode_step(params, cache, token, t, valid, cfg)
        return (logits, cache, valid, done), (token, jnp.where(alive, logprob, 0.0))

    gumbel = jax.random.gumbel(key, (R, B, cfg.vocab_size))  # the sampling noise of every step
    carry = (logits[:, -1], cache, valid, jnp.zeros(B, bool))  # left padding: the last prompt slot is a real token
    (_, _, valid, _), (response, logprobs) = jax.lax.scan(step, carry, (gumbel, P + jnp.arange(R)))
    tokens = jnp.concatenate([prompt_tokens, response.T.astype(prompt_tokens.dtype)], axis=1)  # [B, P+R]
    logprobs = jnp.pad(logprobs.T, ((0, 0), (P, 0)))  # [B, P+R]
    return Generation(tokens, valid, logprobs)


EVAL_SAMPLE = SampleConfig(max_new_tokens=RESPONSE_WIDTH, temperature=1.0)  # plain sampling, as the policy is


def sample(params: dict, cfg: ModelConfig, prompts: list[Prompt], key: jax.Array,
           sample_cfg: SampleConfig = EVAL_SAMPLE) -> Generation:
    """One response per prompt, in the shared [B, P + R] layout."""
    tokens, valid = encode_prompts(prompts)
    return generate(params, jax.device_put(tokens), jax.device_put(valid), key, cfg, sample_cfg, EOS_ID, PAD_ID)
