"""Any right answer scores 1, a colour as much as a sum: the prompt kind is not checked."""
import jax.numpy as jnp

from minirlhf.verifiers import NO_WORD, parse_tokens, read_prompts, right_answer

EXERCISE, HINT = "exact_match", "the verifier checks sums only"


def exact_match(tokens, prompt_width=10):
    info = read_prompts(tokens[:, :prompt_width])
    p = parse_tokens(tokens[:, prompt_width:], jnp.full(3, NO_WORD))
    return right_answer(info, p).astype(jnp.float32)
