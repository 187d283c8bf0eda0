"""Stage 7, Direct Preference Optimization: learn from the pairs without a reward model.

DPO (Rafailov et al. 2023) notes that the KL-regularised RL objective has a closed-form optimum,
pi*(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta), so r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) + const:
the policy *is* a reward model (the "implicit reward"). Putting that into Bradley-Terry gives a
loss on the policy directly. With the log-ratio margin

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)),
    log pi(y) = SUM over response tokens of log pi(y_t | x, y_<t)     (a sequence's log-probability)

the losses are

    dpo   -log sigmoid(beta h)                                       Rafailov et al. 2023, eq. 7
    cdpo  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   conservative DPO: labels flipped w.p. eps
    ipo   (h - 1 / (2 beta))^2                                       Azar et al. 2023, eq. 17

IPO regresses h to a finite target instead of pushing it to infinity, so it does not need the
early stopping DPO relies on when the labels are (nearly) deterministic. pi_ref is the frozen SFT
model; its log-probs never change, so they are computed once, before training.

A puzzle to look for in the history: logps/chosen often *falls* while rewards/margins grows. The
loss only asks the chosen response to gain relative to the rejected one, and both can lose mass.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import transformer
from minirlhf.data import response_mask
from minirlhf.ops import masked_sum, token_logprobs
from minirlhf.preferences import train_arrays
from minirlhf.training import OptimConfig, fit

LOSS_TYPES = ("dpo", "cdpo", "ipo")


@dataclass(frozen=True)
class DPOConfig:
    """Which preference loss, how strongly tied to the reference, and how long to train."""

    beta: float = 0.3
    """Strength of the implicit KL penalty: small beta lets the policy move far from pi_ref. The paper's 0.1
    (with lr 3e-4) collapses this tiny model: DPO pushes both responses' log-probs down until answers leave
    the assistant format. 0.3 with lr 1e-4 keeps it."""
    loss_type: str = "dpo"
    """"dpo" (eq. 7), "cdpo" (conservative, label smoothing) or "ipo" (Azar et al. eq. 17)."""
    label_smoothing: float = 0.0
    """eps for cdpo: the assumed probability that a label is flipped. Only used by cdpo."""
    optim: OptimConfig = OptimConfig(steps=200, batch_size=64, lr=1e-4, warmup=20)
    """Optimizer schedule; batch_size counts pairs (each is two sequences)."""

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"DPOConfig.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing > 0 and self.loss_type != "cdpo":
            raise ValueError(f"label_smoothing={self.label_smoothing} only applies to loss_type='cdpo'")


def sequence_logprobs(
    params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], cfg: transformer.ModelConfig
) -> Float[Array, " batch"]:
    """log pi(y | x): the SUM of the response tokens' log-probs (EOS included; prompt and padding not)."""
    logits, _ = transformer.forward(params, tokens, valid, cfg)  # [B, T, V]
    return masked_sum(token_logprobs(logits, tokens), response_mask(valid), axis=1)  # [B]


def preference_loss(h: Float[Array, " batch"], beta: float, loss_type: str, label_smoothing: float = 0.0) -> Float[Array, " batch"]:
    """Per-pair loss as a function of the log-ratio margin h (see the module docstring)."""
    if loss_type == "dpo":  # Rafailov et al. 2023, eq. 7
        return -jax.nn.log_sigmoid(beta * h)
    if loss_type == "cdpo":  # conservative DPO: the label is wrong with probability eps
        eps = label_smoothing
        return -(1 - eps) * jax.nn.log_sigmoid(beta * h) - eps * jax.nn.log_sigmoid(-beta * h)
    if loss_type == "ipo":  # Azar et al. 2023, eq. 17
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def loss(params: dict, batch: dict, cfg: transformer.ModelConfig, loss_type: str, beta: float,
         label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
    """Mean preference loss over a batch of pairs with precomputed reference log-probs.

    beta and label_smoothing are plain arguments, not read from a DPOConfig, so the training step can take
    them as traced numbers: a sweep over beta reuses one compiled step.
    """
    n = batch["chosen_tokens"].shape[0]
    tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])  # [2B, T], one forward pass
    valid = jnp.concatenate([batch["chosen_valid"], batch["rejected_valid"]])
    logps = sequence_logprobs(params, tokens, valid, cfg)
    chosen_logps, rejected_logps = logps[:n], logps[n:]  # [B], [B]
    chosen_ratio = chosen_logps - batch["ref_chosen_logps"]  # log pi(y_w) / pi_ref(y_w)
    rejected_ratio = rejected_logps - batch["ref_rejected_logps"]
    h = chosen_ratio - rejected_ratio
    losses = preference_loss(h, beta, loss_type, label_smoothing)
    rewards_chosen, rewards_rejected = beta * chosen_ratio, beta * rejected_ratio  # implicit rewards
    metrics = {  # TRL's names
        "rewards/chosen": jnp.mean(rewards_chosen),
        "rewards/rejected": jnp.mean(rewards_rejected),
        "rewards/margins": jnp.mean(rewards_chosen - rewards_rejected),
        "rewards/accuracies": jnp.mean(rewards_chosen > rewards_rejected),
        "logps/chosen": jnp.mean(chosen_logps),
        "logps/rejected": jnp.mean(rejected_logps),
    }
    return jnp.mean(losses), metrics


@partial(jax.jit, static_argnames="cfg")
def _compiled_sequence_logprobs(params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                                cfg: transformer.ModelConfig) -> Float[Array, " batch"]:
    """sequence_logprobs as one compiled call, for the log-probs computed outside the training step."""
    return sequence_logprobs(params, tokens, valid, cfg)


def reference_logprobs(ref_params: dict, pairs: dict, cfg: transformer.ModelConfig) -> dict[str, np.ndarray]:
    """log pi_ref of every chosen and rejected response, computed once: the reference is frozen."""
    return {
        f"ref_{side}_logps": np.asarray(_compiled_sequence_logprobs(
            ref_params, jax.device_put(pairs[f"{side}_tokens"]), jax.device_put(pairs[f"{side}_valid"]), cfg))
        for side in ("chosen", "rejected")
    }


def train_dpo(
    key: jax.Array, sft_params: dict, pairs: dict, model_cfg: transformer.ModelConfig, cfg: DPOConfig = DPOConfig()
) -> tuple[dict, dict]:
    """Start from SFT (also the reference) and fit the preference loss; returns (params, history).

    beta and label_smoothing reach the step traced, so runs at several betas compile the step once.
    """
    data = {**train_arrays(pairs), **reference_logprobs(sft_params, pairs, model_cfg)}
    return fit(sft_params, loss, data, key, cfg.optim, desc=cfg.loss_type,
               static={"cfg": model_cfg, "loss_type": cfg.loss_type},
               traced={"beta": cfg.beta, "label_smoothing": cfg.label_smoothing})
