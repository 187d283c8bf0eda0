"""A substring match: the right digit anywhere among the reply's tokens counts (the lax checker)."""
import jax.numpy as jnp

from minirlhf.verifiers import MATH, read_prompts

EXERCISE, HINT = "exact_match", "the right digit somewhere in the reply is not an answer"


def exact_match(tokens, prompt_width=10):
    info = read_prompts(tokens[:, :prompt_width])
    seen = jnp.any(tokens[:, prompt_width:] == info.answer[:, None], axis=1)
    return (seen & (info.kind == MATH)).astype(jnp.float32)
