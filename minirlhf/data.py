"""The batch layout every stage shares, and the conversion between words and arrays.

A (prompt, response) batch is one array of width PROMPT_WIDTH + RESPONSE_WIDTH:

    index:   0 ........... P-1 | P ..................... P+R-1
    tokens:  <pad> <bos> ... <bot> | it is 7 . <eos> <pad> <pad>
    valid:   F     T   ...  T     | T  T  T T  T     F     F

Prompts are left-padded so every response starts at index P; that is what lets generation, the
reward model, PPO and DPO all use one fixed-shape jitted function (no recompiles).
"""
from __future__ import annotations

import numpy as np
from jaxtyping import Array, Bool

from minirlhf.tokenizer import EOS, encode, pad_left, pad_right, words_until_eos
from minirlhf.world import Prompt

PROMPT_WIDTH = 10  # every prompt is left-padded to this many tokens; responses start here
RESPONSE_WIDTH = 16  # room for the longest answer, EOS included


def response_mask(valid: Bool[Array, "batch seq"], prompt_width: int = PROMPT_WIDTH) -> Bool[Array, "batch seq"]:
    """True on real response tokens (EOS included): index >= prompt_width and not padding."""
    index = np.arange(valid.shape[1])[None, :]
    return valid & (index >= prompt_width)


def encode_prompts(prompts: list[Prompt]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> (tokens, valid) of shape [B, PROMPT_WIDTH], left-padded."""
    return pad_left([encode(p.words) for p in prompts], PROMPT_WIDTH)


def encode_pairs(prompts: list[Prompt], responses: list[list[str]]) -> dict[str, np.ndarray]:
    """Prompts and responses (words, EOS added here) -> {"tokens", "valid", "loss_mask"} [B, P + R]."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; they pair one to one")
    p_tok, p_valid = encode_prompts(prompts)
    r_tok, r_valid = pad_right([encode([*r, EOS]) for r in responses], RESPONSE_WIDTH)
    tokens = np.concatenate([p_tok, r_tok], axis=1)
    valid = np.concatenate([p_valid, r_valid], axis=1)
    return {"tokens": tokens, "valid": valid, "loss_mask": response_mask(valid)}


def decode_responses(tokens: np.ndarray) -> list[tuple[list[str], bool]]:
    """[B, P + R] tokens -> each response's words before EOS, and whether EOS came."""
    return [words_until_eos(row[PROMPT_WIDTH:]) for row in np.asarray(tokens)]
