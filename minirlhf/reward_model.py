"""Stage 3, the reward model: a transformer that scores (prompt, response) with one number.

Architecture (InstructGPT §3.5): the SFT model with its unembedding replaced by a scalar head,
read at the LAST real token of the sequence (the EOS when the response ended). Causal attention
means that position has seen the whole prompt and response, and nothing after it (padding).

Loss: Bradley-Terry on labelled pairs (chosen y_w, rejected y_l), as in InstructGPT eq. 1:

    L = - log sigmoid(r(x, y_w) - r(x, y_l))  [ + c * (r(x, y_w) + r(x, y_l))^2 ]

Bradley-Terry only sees differences, so r + const fits equally well; the optional centering term
(Eisenstein et al. 2023, c ~ 0.01) pins the rewards near zero. Before RL, `normalize` shifts and
scales the head so SFT samples score mean 0, std 1 (lm-human-preferences, normalize_after), so that
a KL coefficient beta means the same thing whatever reward model it is paired with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import transformer
from minirlhf.sampling import sample
from minirlhf.ops import numpy_rng
from minirlhf.preferences import Labeler, label_noise_ceiling, make_pairs, pair_types, subset, train_arrays, type_order
from minirlhf.training import OptimConfig, fit
from minirlhf.world import World, sample_prompts

NORM_EPS = 1e-6  # keeps normalize from dividing by zero when every sample scores the same


@dataclass(frozen=True)
class RMConfig:
    """How much preference data, how long to train, and with which regulariser."""

    n_pairs: int = 2000
    """Labelled pairs to train on (two SFT samples per train prompt)."""
    n_heldout: int = 1000
    """Fresh pairs (new samples, new labels, never trained on) for measuring accuracy; as many again on held-out questions."""
    n_normalize: int = 512
    """SFT samples (on train prompts) that `normalize` fits the mean and std on."""
    optim: OptimConfig = OptimConfig(steps=300, batch_size=64, lr=3e-3, warmup=20)
    """Optimizer schedule; batch_size counts pairs (each is two sequences)."""
    centering: float = 0.0
    """c in c * mean((r_w + r_l)^2), Eisenstein et al. 2023; 0 turns it off."""
    labeler: Labeler = field(default_factory=Labeler)
    """The simulated rater who labels the pairs."""

    def __post_init__(self):
        if min(self.n_pairs, self.n_heldout, self.n_normalize) < 1:
            raise ValueError(f"RMConfig needs n_pairs, n_heldout and n_normalize >= 1, got "
                             f"{self.n_pairs}, {self.n_heldout}, {self.n_normalize}")
        if self.centering < 0:
            raise ValueError(f"RMConfig.centering must be >= 0, got {self.centering}")


def init_reward_model(key: jax.Array, sft_params: dict, cfg: transformer.ModelConfig) -> dict:
    """{"lm": a copy of the SFT transformer, "head": a fresh scalar head}."""
    return {"lm": jax.device_put(sft_params, may_alias=False), "head": transformer.init_scalar_head(key, cfg)}


def last_index(valid: Bool[Array, "batch seq"]) -> Int[Array, " batch"]:
    """Index of each row's last True (the EOS, or the last response token when none came)."""
    seq = valid.shape[1]
    return seq - 1 - jnp.argmax(valid[:, ::-1], axis=1)  # argmax finds the first True of the reversed row


def reward(
    rm_params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], cfg: transformer.ModelConfig
) -> Float[Array, " batch"]:
    """r(x, y): the scalar head read at the last real token of each row."""
    _, hidden = transformer.forward(rm_params["lm"], tokens, valid, cfg)  # [B, T, D]
    scores = transformer.scalar_head(rm_params["head"], hidden)  # [B, T]: a score at every position
    return jnp.take_along_axis(scores, last_index(valid)[:, None], axis=1)[:, 0]  # [B]


def bradley_terry(r_chosen: Float[Array, " batch"], r_rejected: Float[Array, " batch"], centering: float = 0.0) -> jax.Array:
    """mean(-log sigmoid(r_w - r_l)) + c * mean((r_w + r_l)^2); d/d(r_w - r_l) of one term = -sigmoid(-(r_w - r_l))."""
    bt = -jnp.mean(jax.nn.log_sigmoid(r_chosen - r_rejected))  # log_sigmoid: no overflow for large margins
    return bt + centering * jnp.mean((r_chosen + r_rejected) ** 2)


def loss(params: dict, batch: dict, cfg: transformer.ModelConfig, centering: float = 0.0) -> tuple[jax.Array, dict]:
    """Bradley-Terry loss (InstructGPT eq. 1) plus the optional centering term (Eisenstein et al. 2023)."""
    n = batch["chosen_tokens"].shape[0]
    # One forward pass over chosen and rejected together: [2B, T].
    tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])
    valid = jnp.concatenate([batch["chosen_valid"], batch["rejected_valid"]])
    r = reward(params, tokens, valid, cfg)
    r_chosen, r_rejected = r[:n], r[n:]  # [B], [B]
    metrics = {
        "accuracy": jnp.mean(r_chosen > r_rejected),
        "margin": jnp.mean(r_chosen - r_rejected),
        "reward_mean": jnp.mean(r),
    }
    return bradley_terry(r_chosen, r_rejected, centering), metrics


@dataclass(frozen=True)
class RewardFn:
    """r(rm_params, tokens, valid) -> [B] for one model config: what PPO's rollout calls to score samples.

    The rollout is jitted with this as a static argument. A frozen dataclass compares (and hashes) by its
    config, so two runs of a sweep pass equal RewardFns and share one compiled rollout; a fresh
    functools.partial per run would be a new static argument each time, compiled again.
    """

    cfg: transformer.ModelConfig

    def __call__(self, rm_params: dict, tokens: Int[Array, "batch seq"],
                 valid: Bool[Array, "batch seq"]) -> Float[Array, " batch"]:
        return reward(rm_params, tokens, valid, self.cfg)


def reward_fn(cfg: transformer.ModelConfig) -> RewardFn:
    """The reward model's scoring function for PPO, for models of this config."""
    return RewardFn(cfg)


@partial(jax.jit, static_argnames="cfg")
def score(rm_params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
          cfg: transformer.ModelConfig) -> Float[Array, " batch"]:
    """`reward` as one compiled call, for scoring outside a training step (held-out pairs, normalisation)."""
    return reward(rm_params, tokens, valid, cfg)


def score_pairs(rm_params: dict, pairs: dict, cfg: transformer.ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of every pair's chosen and rejected response, [N] each."""
    r_chosen = score(rm_params, jax.device_put(pairs["chosen_tokens"]), jax.device_put(pairs["chosen_valid"]), cfg)
    r_rejected = score(rm_params, jax.device_put(pairs["rejected_tokens"]), jax.device_put(pairs["rejected_valid"]), cfg)
    return np.asarray(r_chosen), np.asarray(r_rejected)


def accuracy(rm_params: dict, pairs: dict, cfg: transformer.ModelConfig) -> dict[str, float]:
    """Share of pairs the RM orders like the labels, and like the gold scores (gold ties excluded).

    An exact RM tie (identical responses score identically) counts as half right against the labels,
    like a coin flip, which is also how the Bayes ceiling counts a pair the labeler is 50/50 on.
    """
    r_chosen, r_rejected = score_pairs(rm_params, pairs, cfg)
    rm_diff = r_chosen - r_rejected
    return {
        "accuracy_labels": float(np.mean(np.where(rm_diff == 0, 0.5, rm_diff > 0))),
        "accuracy_gold": gold_order_accuracy(rm_diff, pairs),
        "corr_gold": correlation(np.concatenate([r_chosen, r_rejected]),
                                 np.concatenate([pairs["gold_chosen"], pairs["gold_rejected"]])),
    }


def correlation(x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"]) -> float:
    """Pearson's r, or nan when either side is constant (a correlation with a constant is undefined)."""
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def gold_order_accuracy(rm_diff: Float[np.ndarray, " n"], pairs: dict) -> float:
    """Share of the pairs with distinct gold scores that rm_diff = r(chosen) - r(rejected) orders like gold.

    An RM tie counts as wrong here: it does not order the pair at all.
    """
    gold_diff = np.asarray(pairs["gold_chosen"]) - np.asarray(pairs["gold_rejected"])
    distinct = gold_diff != 0
    if not distinct.any():
        return float("nan")  # no pair that gold orders: nothing to be right about
    return float(np.mean(np.sign(rm_diff[distinct]) == np.sign(gold_diff[distinct])))


def accuracy_by_type(rm_diff: Float[np.ndarray, " n"], pairs: dict, types: list[str]) -> dict[str, dict]:
    """Per pair type (`preferences.pair_types`): {type: {n, rm, labelers}}, over pairs whose gold scores differ.

    rm: `gold_order_accuracy` of rm_diff within the type; labelers: their own agreement with gold there
    (`label_noise_ceiling`'s gold_agreement), the most an RM trained on their labels can be expected to reach.
    """
    gold_diff = np.asarray(pairs["gold_chosen"]) - np.asarray(pairs["gold_rejected"])
    types = np.asarray(types)
    out = {}
    for t in type_order(types[gold_diff != 0]):
        mask = (types == t) & (gold_diff != 0)
        out[t] = {"n": int(mask.sum()), "rm": gold_order_accuracy(np.asarray(rm_diff)[mask], subset(pairs, mask)),
                  "labelers": label_noise_ceiling(subset(pairs, mask))["gold_agreement"]}
    return out


def accuracy_by_pair_type(rm_params: dict, pairs: dict, world: World, cfg: transformer.ModelConfig) -> dict[str, dict]:
    """`accuracy_by_type` of this RM on these pairs, their types read from the tokens."""
    r_chosen, r_rejected = score_pairs(rm_params, pairs, cfg)
    return accuracy_by_type(r_chosen - r_rejected, pairs, pair_types(world, pairs))


def train_reward_model(
    key: jax.Array, sft_params: dict, pairs: dict, heldout: dict, model_cfg: transformer.ModelConfig,
    cfg: RMConfig = RMConfig(),
) -> tuple[dict, dict, dict]:
    """Fit an RM on `pairs`; returns (rm_params, loss history, held-out metrics beside the ceilings)."""
    key_head, key_train = jax.random.split(key)
    params = init_reward_model(key_head, sft_params, model_cfg)
    params, history = fit(params, loss, train_arrays(pairs), key_train, cfg.optim, desc="reward model",
                          static={"cfg": model_cfg}, traced={"centering": cfg.centering})
    ceiling = label_noise_ceiling(heldout)
    metrics = {**accuracy(params, heldout, model_cfg), "ceiling_gold": ceiling["gold_agreement"],
               "ceiling_labels": ceiling["bayes"]}
    return params, history, metrics


# lm-human-preferences, normalize_after: r' = (r - mean) / std, folded into the head:
#     r' = (h.w + b - mean) / std = h.(w / std) + (b - mean) / std
def normalize(
    rm_params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], cfg: transformer.ModelConfig
) -> dict:
    """Rescale the head so these samples (SFT's, on train prompts) score mean 0 and std 1."""
    r = score(rm_params, jax.device_put(tokens), jax.device_put(valid), cfg)  # [B]
    mean, std = jnp.mean(r), jnp.std(r) + NORM_EPS
    head = rm_params["head"]
    return {**rm_params, "head": {"w": head["w"] / std, "b": (head["b"] - mean) / std}}


def rm_keys(key: jax.Array) -> dict[str, jax.Array]:
    """The stage's key split by purpose: training pairs, the two measuring sets, training, normalisation."""
    return dict(zip(("pairs", "heldout", "train", "normalize", "new_questions"), jax.random.split(key, 5)))


def heldout_pairs(key: jax.Array, sft_params: dict, world: World, model_cfg: transformer.ModelConfig,
                  cfg: RMConfig = RMConfig()) -> tuple[dict, dict]:
    """The two sets `run_reward_model(key, ...)` measures on, drawn again from its key: (held-out, new questions).

    Held-out pairs: fresh samples and fresh labels, never trained on, for the prompts RL will see. New questions:
    a harder test on math questions the RM never saw, where judging correctness needs pretraining's knowledge.
    """
    keys = rm_keys(key)
    heldout = make_pairs(keys["heldout"], sft_params, world, model_cfg, cfg.n_heldout, cfg.labeler, split="train")
    new_questions = make_pairs(keys["new_questions"], sft_params, world, model_cfg, cfg.n_heldout, cfg.labeler,
                               split="heldout")
    return heldout, new_questions


def run_reward_model(
    key: jax.Array, sft_params: dict, world: World, model_cfg: transformer.ModelConfig, cfg: RMConfig = RMConfig()
) -> tuple[dict, dict, dict, dict]:
    """The whole stage: label pairs, train, measure, normalize.

    Returns (normalized rm_params, the training pairs (DPO reuses them), held-out metrics, history).
    """
    keys = rm_keys(key)
    pairs = make_pairs(keys["pairs"], sft_params, world, model_cfg, cfg.n_pairs, cfg.labeler, split="train")
    heldout, new_questions = heldout_pairs(key, sft_params, world, model_cfg, cfg)
    rm_params, history, metrics = train_reward_model(keys["train"], sft_params, pairs, heldout, model_cfg, cfg)
    metrics["accuracy_gold_new_questions"] = accuracy(rm_params, new_questions, model_cfg)["accuracy_gold"]
    metrics["ceiling_gold_new_questions"] = label_noise_ceiling(new_questions)["gold_agreement"]
    metrics["by_pair_type"] = accuracy_by_pair_type(rm_params, heldout, world, model_cfg)
    metrics["by_pair_type_new_questions"] = accuracy_by_pair_type(rm_params, new_questions, world, model_cfg)
    key_prompts, key_sample = jax.random.split(keys["normalize"])
    prompts = sample_prompts(world, numpy_rng(key_prompts), cfg.n_normalize)
    gen = sample(sft_params, model_cfg, prompts, key_sample)  # the distribution RL starts from
    return normalize(rm_params, gen.tokens, gen.valid, model_cfg), pairs, metrics, history
