"""DPO without beta: -log sigmoid(h)."""
import jax

EXERCISE, HINT = "preference_loss", "forgot beta"


def preference_loss(h, beta, loss_type, label_smoothing=0.0):
    if loss_type == "dpo":
        return -jax.nn.log_sigmoid(h)
    if loss_type == "cdpo":
        return -(1 - label_smoothing) * jax.nn.log_sigmoid(h) - label_smoothing * jax.nn.log_sigmoid(-h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(loss_type)
