"""The learner reads a and b from the prompt but adds them whatever the operator says."""
import jax.numpy as jnp

from minirlhf.tokenizer import DIGITS, TOKEN_ID
from minirlhf.verifiers import MATH, NO_WORD, parse_tokens, read_prompts

EXERCISE, HINT = "exact_match", "read the operator"


def exact_match(tokens, prompt_width=10):
    prompt = tokens[:, :prompt_width]
    info = read_prompts(prompt)
    zero = TOKEN_ID[DIGITS[0]]
    total = (prompt[:, -5] - zero) + (prompt[:, -3] - zero)  # "what is a op b ? <bot>", op ignored
    answer = jnp.where(total <= 9, zero + total, NO_WORD)
    p = parse_tokens(tokens[:, prompt_width:], jnp.full(3, NO_WORD))
    return (p.formatted & (p.value == answer) & (answer != NO_WORD) & (info.kind == MATH)).astype(jnp.float32)
