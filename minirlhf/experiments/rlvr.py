"""Verifiable rewards (RLVR) and the perfect-reward control: what RL draws out when the reward can check a sum.

The reward model orders right and wrong sums little better than a coin, so PPO against it moves refusals and
rambling, not accuracy. Here every policy starts from the same SFT model with the pipeline's PPO settings (beta,
lr, epochs, minibatches) and the same number of samples; only the reward differs (`minirlhf.verifiers`):
    rm_ppo     the normalised reward model: the pipeline's PPO
    gold_ppo   the gold reward itself, standardised on SFT samples as the RM is: RLHF with a perfect proxy
    rlvr_ppo   an exact-match verifier on math prompts (Lambert et al. 2024, Tülu 3), the RM on the others
    rlvr_grpo  the same reward with GRPO, G replies per prompt (DeepSeek-R1's pairing of checker and optimizer)
    lax_ppo    a lax checker on math (the right digit anywhere in the reply), the RM elsewhere: a gameable verifier
Each is measured on the pipeline's held-out prompts (math questions never trained on): gold ± se, exact KL to
SFT, math accuracy and refusals (`evaluation.per_kind`), and pass@k on the held-out math questions from n
samples each (Chen et al. 2021): does RL sharpen (pass@1 up) or teach (pass@k up at large k; Yue et al. 2025)?
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import grpo_rloo, ppo, verifiers
from minirlhf.data import PROMPT_WIDTH
from minirlhf.evaluation import pass_at_k, per_kind
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import (at, bars, eval_prompts, first_of_kinds, fmt, measure, question,
                                          response_text, result, seed_bases, spread_tree, table, train_group,
                                          train_ppo)
from minirlhf.ops import numpy_rng
from minirlhf.pipeline import PipelineConfig
from minirlhf.policy_gradient import PGConfig
from minirlhf.sampling import sample
from minirlhf.tokenizer import DIGITS, encode
from minirlhf.world import math_prompt, sample_prompts

METHODS = ("rm_ppo", "gold_ppo", "rlvr_ppo", "rlvr_grpo", "lax_ppo")
LABELS = {"sft": "SFT", "rm_ppo": "PPO, RM", "gold_ppo": "PPO, gold", "rlvr_ppo": "RLVR, PPO",
          "rlvr_grpo": "RLVR, GRPO", "lax_ppo": "lax checker, PPO"}
SCALE_KEY, PASS_KEY = 101, 102
GOAL = 0.85  # issue 14's target for RLVR's held-out math accuracy, on every seed
DIGIT_IDS = np.array(encode(DIGITS))  # fold_in tags: the SFT draws that fit the scales, the pass@k draws


@dataclass(frozen=True)
class Config:
    """Budgets of the comparison. Config() is the CLI's run, Config.small() the notebook's."""

    iterations: int = 40
    """Iterations of every method (the pipeline's PPO runs 100; this keeps 3 seeds within 5 minutes on 2 cores)."""
    batch_size: int = 64
    """Responses per iteration for every method (GRPO: batch_size / group_size prompts)."""
    group_size: int = 4
    """G, replies per prompt for GRPO."""
    methods: tuple[str, ...] = METHODS
    """Which rewards/optimizers to train."""
    n_eval: int = 512
    """Held-out prompts each policy answers (the pipeline's)."""
    n_scale: int = 512
    """SFT samples on train prompts that the gold's and the checkers' shift and scale are fitted on."""
    pass_samples: int = 64
    """n, samples per held-out math question for pass@k (k runs over powers of 2 up to n)."""
    n_shown: int = 6
    """Held-out math replies of the lax-checker policy kept to read."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the RM and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"Config.methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if min(self.iterations, self.n_eval, self.n_scale, self.pass_samples) < 1:
            raise ValueError("Config.iterations, n_eval, n_scale and pass_samples must be >= 1")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: 20 iterations, 256 held-out prompts, 16 samples per question for pass@k."""
        return cls(iterations=20, n_eval=256, pass_samples=16)

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
    lax = verifiers.standardise(np.asarray(verifiers.lax_match(gen.tokens))[is_math])
    model = base.cfg.model
    return {"gold_ppo": (verifiers.GoldReward(), {"secret": secret, **gold}),
            "rlvr_ppo": (verifiers.VerifierReward(model), (base.rm, strict)),
            "rlvr_grpo": (verifiers.VerifierReward(model), (base.rm, strict)),
            "lax_ppo": (verifiers.VerifierReward(model, lax=True), (base.rm, lax))}


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


def measure_policy(params: dict, base: BaseModels, prompts: list, cfg: Config) -> tuple[dict, dict]:
    """toolkit.measure's figures, per kind, both checkers' pass rates on math, the share of math replies that
    write two digits or more (how a lax checker is gamed), and pass@k."""
    figures, ev = measure(params, base, prompts)
    math = np.array([p.kind == "math" for p in prompts])
    tokens = jnp.asarray(ev["tokens"])
    words = np.asarray(verifiers.response_words(tokens[:, PROMPT_WIDTH:])[0])[math]  # [math rows, R]
    checks = {"strict_pass": float(np.asarray(verifiers.exact_match(tokens))[math].mean()),
              "lax_pass": float(np.asarray(verifiers.lax_match(tokens))[math].mean()),
              "lists_digits": float(np.mean(np.isin(words, DIGIT_IDS).sum(axis=1) >= 2))}  # the lax checker's hack
    return figures | checks | {"per_kind": per_kind(base.world, prompts, ev["tokens"]),
                               "pass_at_k": pass_curve(params, base, cfg)}, ev


def run_seed(cfg: Config, base: BaseModels) -> dict:
    """Train every method from these base models and measure it on the held-out prompts; one seed's result."""
    prompts = eval_prompts(base, cfg.n_eval)
    reward = rewards(base, cfg)
    out = {"sft": measure_policy(base.sft, base, prompts, cfg)[0]}
    for method in cfg.methods:
        start = time.perf_counter()
        params, history = train(method, base, cfg, reward.get(method))
        seconds = time.perf_counter() - start
        out[method], ev = measure_policy(params, base, prompts, cfg)
        out[method] |= {"gold_curve": history["objective/gold"].tolist(), "seconds": round(seconds, 1)}
        if method == "lax_ppo":
            shown = first_of_kinds(prompts, {"math": cfg.n_shown})
            out[method]["shown"] = [{"question": question(prompts[i]), "reply": text, "gold": float(ev["gold"][i])}
                                    for i, text in zip(shown, response_text(ev["tokens"][shown]))]
    return out


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict | None = None) -> dict:
    per_seed = {str(seed): run_seed(cfg, base) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    agg = spread_tree(list(per_seed.values()))
    for name in agg:  # pass@k is a curve: its spread point by point
        agg[name]["pass_at_k"] = [spread_tree([{"p": s[name]["pass_at_k"][j]} for s in per_seed.values()])["p"]
                                  for j in range(len(cfg.ks))]
    return result("rlvr", cfg, per_seed, agg, ks=cfg.ks, beta=cfg.pipeline.ppo.beta)


# ---------------------------------------------------------------- plot and summary


def plot(result: dict) -> plt.Figure:
    """Bars: math accuracy, refusals on math and gold per policy (dots: seeds); curves: pass@k on held-out sums."""
    agg, ks = result["aggregate"], result["config"]["ks"]
    names = [n for n in LABELS if n in agg]
    fig, (ax_bars, ax_pass) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    groups = {"right on held-out sums": "per_kind/math/right", "refuses sums": "per_kind/math/refuses",
              "gold (all prompts)": "gold"}
    series = {LABELS[n]: [at(agg[n], path) for path in groups.values()] for n in names}
    bars(ax_bars, list(groups), series, "mean over seeds", f"{len(result['seeds'])} seed(s), held-out prompts")
    for n in [n for n in ("sft", "rm_ppo", "gold_ppo", "rlvr_ppo", "rlvr_grpo") if n in agg]:
        mean = [p["mean"] for p in agg[n]["pass_at_k"]]
        ax_pass.plot(ks, mean, marker="o", ms=3, label=LABELS[n])
        ax_pass.fill_between(ks, [p["min"] for p in agg[n]["pass_at_k"]], [p["max"] for p in agg[n]["pass_at_k"]],
                             alpha=0.12)
    ax_pass.set(xscale="log", xlabel="k (samples per question)", ylabel="pass@k (exact match)",
                title=f"pass@k on held-out sums (n = {ks[-1]} per question)")
    ax_pass.set_xticks(ks, [str(k) for k in ks])
    ax_pass.legend(fontsize=7)
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    agg, c, seeds = result["aggregate"], result["config"], result["seeds"]
    names = [n for n in LABELS if n in agg]
    pct = lambda x: f"{100 * x:.0f}%"
    lines = [f"**RLVR and the perfect-reward control** ({c['iterations']} iterations x {c['batch_size']} replies, "
             f"beta {c['beta']}, GRPO G = {c['group_size']}; {len(seeds)} seed(s); {c['n_eval']} held-out prompts)", ""]
    rows = [[LABELS[n], " / ".join(pct(s[n]["per_kind"]["math"]["right"]) for s in seeds.values()),
             " / ".join(pct(s[n]["per_kind"]["math"]["refuses"]) for s in seeds.values()),
             " / ".join(f"{s[n]['gold']:.2f} ± {s[n]['gold_se']:.2f}" for s in seeds.values()),
             " / ".join(f"{s[n]['kl']:.2f}" for s in seeds.values())] for n in names]
    lines += table(["policy (per seed)", "right on held-out sums", "refuses sums", "gold ± se", "KL to SFT"], rows)
    lines += ["", *table(["policy (over seeds)", "right on held-out sums", "gold", "KL to SFT"],
                         [[LABELS[n], fmt(agg[n]["per_kind"]["math"]["right"]), fmt(agg[n]["gold"]),
                           fmt(agg[n]["kl"], 2)] for n in names])]
    if "rlvr_ppo" in agg:
        right = [s["rlvr_ppo"]["per_kind"]["math"]["right"] for s in seeds.values()]
        curves = np.array([s["rlvr_ppo"]["gold_curve"] for s in seeds.values()])  # [seeds, iterations]
        tenth = max(1, curves.shape[1] // 10)
        lines += ["", f"RLVR (PPO) is right on at least {pct(GOAL)} of held-out sums on {sum(r >= GOAL for r in right)} "
                      f"of {len(right)} seed(s) (lowest {pct(min(right))}); the gold of its training samples went from "
                      f"{curves[:, :tenth].mean():.2f} (first tenth of the run) to {curves[:, -tenth:].mean():.2f} "
                      f"(last tenth), mean over seeds."]
    lines += ["", f"pass@k on the held-out sums (n = {c['ks'][-1]} samples per question; mean over seeds):", "",
              *table(["policy", *[f"k={k}" for k in c["ks"]]],
                     [[LABELS[n], *[f"{p['mean']:.2f}" for p in agg[n]["pass_at_k"]]] for n in names])]
    lines += ["", "Sharpen or teach: pass@1 / pass@" + str(c["ks"][-1]) + " = " + ", ".join(
        f"{LABELS[n]} {agg[n]['pass_at_k'][0]['mean']:.2f} / {agg[n]['pass_at_k'][-1]['mean']:.2f}" for n in names) + "."]
    if "lax_ppo" in agg:
        lax = agg["lax_ppo"]
        lines += ["", f"The lax checker's policy passes its own check on {pct(lax['lax_pass']['mean'])} of held-out "
                      f"sums and the strict one on {pct(lax['strict_pass']['mean'])}; {pct(lax['lists_digits']['mean'])} "
                      f"of its replies write two digits or more (SFT: {pct(agg['sft']['lists_digits']['mean'])}). "
                      f"What it writes (seed {next(iter(seeds))}):", ""]
        lines += [f"- `{d['question']}` → `{d['reply']}` (gold {d['gold']:+.1f})"
                  for d in next(iter(seeds.values()))["lax_ppo"]["shown"]]
    return "\n".join(lines)
