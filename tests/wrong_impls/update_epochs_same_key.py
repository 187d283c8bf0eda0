"""The update loop with one key for every epoch: each epoch repeats the first one's minibatch order."""
import numpy as np

from minirlhf.policy_gradient import minibatch_rows, update

EXERCISE, HINT = "update_epochs", "reuses the same key"


def update_epochs(state, batch, key, loss_fn, model_cfg, cfg):
    steps = []
    for _ in range(cfg.ppo_epochs):
        for rows in minibatch_rows(key, cfg):
            state, metrics = update(state, batch, rows, cfg, loss_fn, model_cfg)
            steps.append(metrics)
    return state, {k: float(np.mean([m[k] for m in steps])) for k in steps[0]}
