"""The reward read at the last column, which is padding in rows whose response ended early."""
from minirlhf import transformer

EXERCISE, HINT = "reward", "read at the last column"


def reward(rm_params, tokens, valid, cfg):
    _, hidden = transformer.forward(rm_params["lm"], tokens, valid, cfg)
    return transformer.scalar_head(rm_params["head"], hidden)[:, -1]
