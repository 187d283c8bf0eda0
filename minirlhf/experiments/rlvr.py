"""Verifiable rewards (RLVR) and the perfect-reward control: what RL draws out when the reward can check a sum.

The reward model orders right and wrong sums little better than a coin, so PPO against it moves refusals and
rambling, not accuracy. Here every policy starts from the same SFT model with the pipeline's PPO settings (beta,
lr, epochs, minibatches) and the same number of samples; only the reward differs (`minirlhf.verifiers`):
    rm_ppo     the normalised reward model: the pipeline's PPO
    gold_ppo   the gold reward itself, standardised on SFT samples as the RM is: RLHF with a perfect proxy
    rlvr_ppo   an exact-match verifier on math prompts (Lambert et al. 2024, Tülu 3), the RM on the others
    rlvr_grpo  the same reward with GRPO, G replies per prompt (DeepSeek-R1's pairing of checker and optimizer)
    plus_ppo   a buggy checker on math (every sum read as a plus), the RM elsewhere: a verifier that pays a wrong reply
Each is measured on the pipeline's held-out prompts (math questions never trained on): gold ± se, exact KL to
SFT, math accuracy and refusals (`evaluation.per_kind`), what it does where the plus-only checker is wrong, and
pass@k on the held-out math questions from n samples each (Chen et al. 2021): does RL sharpen (pass@1 up) or teach
(pass@k up at large k; Yue et al. 2025)? Where RLVR stops short, two probes say why: each policy's probability of
the right digit on the sums it trained on against the held-out ones, and whether the pretrained model, asked in
its own Q&A format, already knew the held-out sums.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import grpo_rloo, ppo, verifiers
from minirlhf.data import PROMPT_WIDTH, encode_pairs
from minirlhf.evaluation import pass_at_k, per_kind
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.rlvr_writeup import GOAL, LABELS, plot, summary  # noqa: F401 (re-exported)
from minirlhf.experiments.toolkit import (eval_prompts, measure, question, response_text, result, seed_bases,
                                          spread_tree, train_group, train_ppo)
from minirlhf.ops import numpy_rng, token_logprobs
from minirlhf.pipeline import PipelineConfig
from minirlhf.policy_gradient import PGConfig
from minirlhf.sampling import sample
from minirlhf.tokenizer import TOKEN_ID, encode
from minirlhf.transformer import forward
from minirlhf.world import math_prompt, sample_prompts

METHODS = ("rm_ppo", "gold_ppo", "rlvr_ppo", "rlvr_grpo", "plus_ppo")
SCALE_KEY, PASS_KEY = 101, 102  # fold_in tags: the SFT draws that fit the scales, the pass@k draws


@dataclass(frozen=True)
class Config:
    """What is trained, how long, how it is measured. Config() is the CLI's run, Config.small() the notebook's."""

    methods: tuple[str, ...] = METHODS
    """Which rewards/optimizers to train, each from SFT with the same samples, beta and PPO settings."""
    iterations: int = 80
    """Iterations of every method (the pipeline's PPO runs 100); RLVR's accuracy on held-out sums still climbs at 40."""
    batch_size: int = 64
    """Replies sampled per iteration by every method (GRPO: batch_size / group_size prompts)."""
    group_size: int = 4
    """G, GRPO's replies per prompt."""
    n_eval: int = 512
    """Held-out prompts each policy answers (the pipeline's)."""
    n_scale: int = 512
    """SFT samples on train prompts that the gold's and the checkers' shift and scale are fitted on."""
    pass_samples: int = 64
    """n, samples per held-out math question for pass@k (k runs over powers of 2 up to n)."""
    n_shown: int = 6
    """How many of the plus-only policy's commonest replies to the gameable held-out sums are kept to read."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the RM and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"Config.methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if min(self.iterations, self.n_eval, self.n_scale, self.pass_samples) < 1:
            raise ValueError("Config.iterations, n_eval, n_scale and pass_samples must be >= 1")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: 30 iterations, 256 held-out prompts, 16 samples per question for pass@k."""
        return cls(iterations=30, n_eval=256, pass_samples=16)

    @property
    def ks(self) -> list[int]:
        return [2 ** i for i in range(int(np.log2(self.pass_samples)) + 1)]

    def ppo_config(self) -> ppo.PPOConfig:
        return dataclasses.replace(self.pipeline.ppo, iterations=self.iterations, batch_size=self.batch_size)

    def grpo_config(self) -> grpo_rloo.GroupConfig:
        """PPO's shared settings (lr, beta, epochs, minibatches, clip, width) with a group of G replies."""
        shared = {f.name: getattr(self.ppo_config(), f.name) for f in dataclasses.fields(PGConfig)}
        return grpo_rloo.GroupConfig(**shared | {"group_size": self.group_size})


# ---------------------------------------------------------------- the rewards


def rewards(base: BaseModels, cfg: Config) -> dict[str, tuple]:
    """method -> (reward_fn, reward_params). Scales are fitted on SFT's own samples, as `reward_model.normalize`
    fits the RM's: gold over all prompts, each checker over the math prompts it scores."""
    key_prompts, key_sample = jax.random.split(jax.random.fold_in(base.keys["ppo"], SCALE_KEY))
    prompts = sample_prompts(base.world, numpy_rng(key_prompts), cfg.n_scale)
    gen = sample(base.sft, base.cfg.model, prompts, key_sample)
    secret = verifiers.secret_ids(base.world)
    is_math = np.array([p.kind == "math" for p in prompts])
    gold = verifiers.standardise(np.asarray(verifiers.gold_tokens(gen.tokens, secret)))
    strict = verifiers.standardise(np.asarray(verifiers.exact_match(gen.tokens))[is_math])
    plus_only = verifiers.standardise(np.asarray(verifiers.plus_only_match(gen.tokens))[is_math])
    model = base.cfg.model
    return {"gold_ppo": (verifiers.GoldReward(), {"secret": secret, **gold}),
            "rlvr_ppo": (verifiers.VerifierReward(model), (base.rm, strict)),
            "rlvr_grpo": (verifiers.VerifierReward(model), (base.rm, strict)),
            "plus_ppo": (verifiers.VerifierReward(model, "plus_only"), (base.rm, plus_only))}


def train(method: str, base: BaseModels, cfg: Config, reward: tuple | None) -> tuple[dict, dict]:
    """One method from SFT with the pipeline's key and prompts; PPO's value model starts from the RM, as there."""
    if method == "rlvr_grpo":
        return train_group(base, cfg.grpo_config(), reward=reward)
    return train_ppo(base, cfg.ppo_config(), reward=reward)  # reward None: the RM


# ---------------------------------------------------------------- measuring


def pass_curve(params: dict, base: BaseModels, cfg: Config) -> list[float]:
    """pass@k for k in cfg.ks, averaged over the held-out math questions, from cfg.pass_samples replies each."""
    n = cfg.pass_samples
    prompts = [math_prompt(*q) for q in base.world.heldout_math for _ in range(n)]
    gen = sample(params, base.cfg.model, prompts, jax.random.fold_in(base.keys["eval"], PASS_KEY))
    right = np.asarray(verifiers.exact_match(gen.tokens)).reshape(-1, n)  # [questions, n]
    counts = right.sum(axis=1).astype(int)
    return [float(np.mean([pass_at_k(n, int(c), k) for c in counts])) for k in cfg.ks]


QUIZ = "<bos> question : what is {} {} {} ? reply : it is"  # how pretraining's Q&A pages ask a sum (`world._quiz`)


def answer_probs(params: dict, model_cfg, questions: list[tuple]) -> np.ndarray:
    """P(each question's right digit | "<prompt> it is"), [Q]: how sure the policy is of a sum, without sampling."""
    prompts = [math_prompt(*q) for q in questions]
    batch = encode_pairs(prompts, [["it", "is", p.answer[0], "."] for p in prompts])
    tokens = jnp.asarray(batch["tokens"])
    logprobs = token_logprobs(forward(params, tokens, jnp.asarray(batch["valid"]), model_cfg).logits, tokens)  # [Q, T]
    return np.exp(np.asarray(logprobs[:, PROMPT_WIDTH + 2]))  # the digit after "it is"


def pretraining_knows(base: BaseModels) -> float:
    """The share of held-out sums whose right digit is the pretrained model's favourite next word after a Q&A page's
    "question : what is a op b ? reply : it is": what pretraining stored, in the format it was stored in."""
    questions = base.world.heldout_math
    tokens = jnp.asarray([encode(QUIZ.format(*q)) for q in questions])  # [Q, T], one length: no padding
    logits = forward(base.pretrained, tokens, jnp.ones_like(tokens, bool), base.cfg.model).logits[:, -1]  # [Q, V]
    right = np.array([TOKEN_ID[math_prompt(*q).answer[0]] for q in questions])  # [Q]
    return float(np.mean(np.asarray(logits).argmax(axis=-1) == right))


def gameable(tokens: np.ndarray) -> np.ndarray:
    """Rows asking "a minus b" where a + b is another digit: where the plus-only checker pays a wrong answer, [B]."""
    prompt = jnp.asarray(tokens)[:, :PROMPT_WIDTH]
    right, paid = verifiers.read_prompts(prompt).answer, verifiers.plus_only_prompts(prompt).answer
    return np.asarray((paid != verifiers.NO_WORD) & (paid != right))


def mean_where(values: np.ndarray, rows: np.ndarray) -> float:
    """The mean of values[rows]; NaN where no row is selected (a few held-out prompts may hold no gameable sum)."""
    return float(values[rows].mean()) if rows.any() else float("nan")


def measure_policy(params: dict, base: BaseModels, prompts: list, cfg: Config) -> tuple[dict, dict]:
    """toolkit.measure's figures, per kind, each checker's pass rate on math; on the gameable questions (`gameable`)
    the share answered a + b (paid by the plus-only checker, wrong), the share answered right and their gold; pass@k."""
    figures, ev = measure(params, base, prompts)
    math, tokens = np.array([p.kind == "math" for p in prompts]), jnp.asarray(ev["tokens"])
    passes = {name: np.asarray(check(tokens)) for name, check in verifiers.CHECKERS.items()}  # [B] each
    hole = gameable(ev["tokens"])
    checks = {f"{name}_pass": float(v[math].mean()) for name, v in passes.items()}
    checks |= {"games_minus": mean_where(passes["plus_only"], hole),
               "right_on_gameable": mean_where(passes["strict"], hole), "gold_on_gameable": mean_where(ev["gold"], hole)}
    sure = {f"sure_{split}": float(answer_probs(params, base.cfg.model, qs).mean())
            for split, qs in (("train", base.world.train_math), ("heldout", base.world.heldout_math))}
    return figures | checks | sure | {"per_kind": per_kind(base.world, prompts, ev["tokens"]),
                                      "pass_at_k": pass_curve(params, base, cfg)}, ev


def decode_hack(prompts: list, ev: dict, n_shown: int) -> dict:
    """The commonest replies of a policy to the gameable held-out questions, each with its count, its gold and the
    strict verifier's verdict: what the plus-only checker taught, read."""
    rows = np.flatnonzero(gameable(ev["tokens"]))
    texts = [f"{question(prompts[i])} -> {t}" for i, t in zip(rows, response_text(ev["tokens"][rows]))]
    strict = np.asarray(verifiers.exact_match(jnp.asarray(ev["tokens"][rows])))  # [rows]
    first = {t: k for k, t in reversed(list(enumerate(texts)))}  # one row of each distinct reply
    return {"gameable": len(rows), "common": [
        {"reply": t, "count": n, "gold": float(ev["gold"][rows[first[t]]]), "strict": float(strict[first[t]])}
        for t, n in Counter(texts).most_common(n_shown)]}


def run_seed(cfg: Config, base: BaseModels, keep: dict | None = None) -> dict:
    """Train every method from these base models and measure it on the held-out prompts; one seed's result.
    keep: if given, each method's trained params are kept in it (method -> params), for a caller to read."""
    prompts = eval_prompts(base, cfg.n_eval)
    reward = rewards(base, cfg)
    out = {"sft": measure_policy(base.sft, base, prompts, cfg)[0], "pretrained": {"knows": pretraining_knows(base)}}
    for method in cfg.methods:
        start = time.perf_counter()
        params, history = train(method, base, cfg, reward.get(method))
        seconds = time.perf_counter() - start
        if keep is not None:
            keep[method] = params
        out[method], ev = measure_policy(params, base, prompts, cfg)
        out[method] |= {"gold_curve": history["objective/gold"].tolist(), "seconds": round(seconds, 1)}
        if method == "plus_ppo":
            out[method]["hack"] = decode_hack(prompts, ev, cfg.n_shown)
    return out


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict | None = None,
        keep: dict | None = None) -> dict:
    """Every seed's result and their spread. keep: if given, keep[seed][method] = the trained params (a notebook
    reads its policies from there)."""
    kept = {seed: {} for seed in seeds} if keep is not None else {}
    per_seed = {str(seed): run_seed(cfg, base, kept.get(seed)) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    if keep is not None:
        keep.update(kept)
    agg = spread_tree(list(per_seed.values()))
    for name in ("sft", *cfg.methods):  # pass@k is a curve: its spread point by point
        agg[name]["pass_at_k"] = [spread_tree([{"p": s[name]["pass_at_k"][j]} for s in per_seed.values()])["p"]
                                  for j in range(len(cfg.ks))]
    return result("rlvr", cfg, per_seed, agg, ks=cfg.ks, beta=cfg.pipeline.ppo.beta)
