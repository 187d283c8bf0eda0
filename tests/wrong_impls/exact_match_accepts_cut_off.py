"""The verifier reads the value but never asks whether the reply was finished (EOS, nothing special after it)."""
import jax.numpy as jnp

from minirlhf.verifiers import MATH, NO_WORD, parse_tokens, read_prompts

EXERCISE, HINT = "exact_match", "a reply cut off before EOS is not a finished answer"


def exact_match(tokens, prompt_width=10):
    info = read_prompts(tokens[:, :prompt_width])
    p = parse_tokens(tokens[:, prompt_width:], jnp.full(3, NO_WORD))
    return (p.has_answer & (p.value == info.answer) & (info.kind == MATH)).astype(jnp.float32)
