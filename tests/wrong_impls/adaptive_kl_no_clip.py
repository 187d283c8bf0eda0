"""The adaptive KL controller without clipping the proportional error."""
from minirlhf.ppo_losses import KLState

EXERCISE, HINT = "adaptive_kl_controller", "clip the proportional error"


def adaptive_kl_controller(state, kl, n_episodes, cfg):
    error = kl / cfg.target - 1.0
    return KLState(float(state.beta * (1.0 + error * n_episodes / cfg.horizon)))
