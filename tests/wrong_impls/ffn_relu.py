"""The MLP with ReLU between its two linear layers: GPT-2 uses GELU."""
import jax

from minirlhf.transformer import linear

EXERCISE, HINT = "ffn", "uses GELU (jax.nn.gelu), not ReLU"


def ffn(x, c_fc, c_proj):
    return linear(jax.nn.relu(linear(x, **c_fc)), **c_proj)
