"""The exact KL-regularised optimum beside PPO, DPO and best-of-n: where the gap to the ideal is lost.

`minirlhf.optimum` computes pi*_beta ∝ pi_sft exp(r / beta) (Rafailov et al. 2023, eq. 4) on the distinct responses
of many SFT samples per held-out prompt. Per seed, for a sweep of beta:

    r = the RM     the policy a perfect optimizer of PPO's objective would reach; its gold and KL to SFT
    r = gold       the most gold any policy can have at its KL (on the support): the ideal frontier

and, from the same SFT model, RM and held-out prompts, the pipeline's PPO and DPO (measured as `frontier` measures
them, through the toolkit) and best-of-n (`toolkit.best_of_n_curves`, whose draws are the support's own: the
same key per prompt). Two comparisons split the gap between PPO and the ideal:

    optimizer    PPO against the RM's optimum at PPO's own beta: its RM score, KL and objective E[r] - beta KL
    reward model at PPO's KL, the gold of the RM's optimum against the gold of gold's optimum

The optimum's KL is to SFT renormalised on the support (as best-of-n's); `coverage` is the SFT mass the support
holds, and kl_restricted the exact KL of the same weights as a policy that never leaves the support.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np

from minirlhf import dpo, optimum
from minirlhf.evaluation import gold_scores
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.optimum_writeup import (COLORS, LABEL, REWARDS, gold_at_kl, plot,  # noqa: F401 (re-exported)
                                                  summary)
from minirlhf.experiments.toolkit import (best_of_n_curves, bon_draws, eval_prompts, measure, result, rm_scores,
                                          seed_bases, spread_tree, train_ppo)
from minirlhf.pipeline import PipelineConfig
from minirlhf.world import PROMPT_KINDS


@dataclass(frozen=True)
class Config:
    """The beta sweep and the support. Config() is the CLI's run, Config.small() the notebook's."""

    betas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    """The optimum's KL coefficients, log-spaced: from nearly the argmax of r (0.01) to nearly SFT (10)."""
    draws: int = 256
    """SFT samples per distinct held-out prompt; their distinct responses are the support (best-of-n's too)."""
    bon_ns: tuple[int, ...] = (1, 4, 16, 64)
    """Best-of-n's n values, estimated from the same draws."""
    ppo_iterations: int | None = None
    """PPO iterations; None: the pipeline's."""
    n_eval: int = 512
    """Held-out prompts (the pipeline's evaluation prompts); each distinct one gets `draws` samples."""
    pipeline: PipelineConfig = PipelineConfig()
    """Every other setting, as the pipeline runs it (PPO's beta is the one the optimum is compared at)."""

    def __post_init__(self):
        if not self.betas or min(self.betas) <= 0:
            raise ValueError(f"Config.betas must be a non-empty tuple of numbers > 0, got {self.betas}")
        if min(self.draws, self.n_eval, self.ppo_iterations or 1) < 1:
            raise ValueError("Config.draws, n_eval and ppo_iterations must be >= 1")
        if self.bon_ns and (min(self.bon_ns) < 1 or max(self.bon_ns) > self.draws):
            raise ValueError(f"Config.bon_ns must lie in [1, draws={self.draws}], got {self.bon_ns}")
        if self.pipeline.ppo.adaptive is not None:
            raise ValueError("the optimum is PPO's for a fixed beta: use a PPOConfig with adaptive=None")

    @classmethod
    def small(cls) -> Config:
        """The notebook's budget: fewer prompts and a shorter PPO run."""
        return cls(ppo_iterations=40, n_eval=256)


# ---------------------------------------------------------------- the optimum's curves


def distinct_prompts(prompts) -> list[tuple]:
    """(prompt, how often it occurs) for each distinct prompt, in order of first occurrence (best-of-n's order)."""
    counts: dict[tuple, list] = {}
    for p in prompts:
        counts.setdefault(p.words, [p, 0])[1] += 1
    return [(p, n) for p, n in counts.values()]


def optimum_curves(cfg: Config, base: BaseModels, prompts, betas: tuple[float, ...],
                   found: list[dict] | None = None) -> dict:
    """pi*_beta's figures for each reward and beta, averaged over `prompts` (repeats weighted); the coverage (mean,
    lowest prompt, mean by kind), the support's size, and SFT's gold three ways (`sft_gold`). found: best-of-n's
    `bon_draws` of these prompts, if made already (the support is drawn from them: the same key, the same draws)."""
    rows = {name: {beta: [] for beta in betas} for name in REWARDS}
    weights, cover, kinds, sizes, drawn, on_support = [], [], [], [], [], []
    for j, (prompt, count) in enumerate(distinct_prompts(prompts)):
        if found:  # bon_draws of the same prompts, in the same order
            s = optimum.support(found[j]["tokens"], found[j]["valid"], base.sft, base.rm, base.cfg.model)
        else:
            key = jax.random.fold_in(base.keys["bon"], j)  # best_of_n_curves' key: the same draws
            s = optimum.draw_support(key, base.sft, base.rm, prompt, base.cfg.model, cfg.draws)
        rewards = {"rm": s.scores, "gold": gold_scores(base.world, [prompt] * len(s.tokens), s.tokens)}
        for name in REWARDS:
            for beta in betas:
                rows[name][beta].append(optimum.optimum(s.logprobs, rewards[name], beta, rewards))
        weights.append(count)
        cover.append(optimum.coverage(s.logprobs))
        kinds.append(prompt.kind)
        sizes.append(len(s.tokens))
        drawn.append(float(s.counts @ rewards["gold"] / cfg.draws))  # the plain mean over the draws
        on_support.append(optimum.expect(optimum.renormalised(s.logprobs), rewards["gold"]))
    mean = lambda per_prompt: {k: float(np.average([d[k] for d in per_prompt], weights=weights)) for k in per_prompt[0]}
    by_kind = {kind: float(np.average([c for c, k in zip(cover, kinds) if k == kind],
                                      weights=[w for w, k in zip(weights, kinds) if k == kind]))
               for kind in PROMPT_KINDS if kind in kinds}
    w, c = np.array(weights, float), np.array(cover)
    # SFT's gold = c * (its mean on the support) + (1 - c) * (its mean on the unseen rest), prompt by prompt
    unseen = float(w @ (np.array(drawn) - c * np.array(on_support)) / max(w @ (1 - c), 1e-12))
    return {"curves": {name: {str(beta): mean(rows[name][beta]) for beta in betas} for name in REWARDS},
            "coverage": {"mean": float(np.average(c, weights=w)), "min": float(c.min()), **by_kind},
            "support": float(np.average(sizes, weights=w)), "distinct_prompts": len(weights),
            "sft_gold": {"drawn": float(np.average(drawn, weights=w)), "on_support": float(np.average(on_support, weights=w)),
                         "unseen": unseen}}


def gap(ppo: dict, at_beta: dict, curves: dict) -> dict:
    """Where PPO's gold falls short of the ideal. The optimizer: PPO beside the RM's optimum at its beta, and at its
    KL. The reward model: at PPO's KL, the RM's optimum against gold's (what a perfect optimizer of the RM would
    still lose). *_restricted: the same, read off the curves of the optima as policies that stay on the support."""
    out = {"objective_ppo": ppo["objective"], "objective_optimum": at_beta["objective"],
           "objective_optimum_restricted": at_beta["objective_restricted"],
           "objective_shortfall": at_beta["objective"] - ppo["objective"]}
    for suffix, kl_key in (("", "kl"), ("_restricted", "kl_restricted")):
        rm_at, gold_at = (gold_at_kl(curves[name], ppo["kl"], kl_key) for name in REWARDS)
        out |= {f"gold_optimum_of_rm_at_ppo_kl{suffix}": rm_at, f"gold_optimum_of_gold_at_ppo_kl{suffix}": gold_at,
                f"lost_to_rm{suffix}": gold_at - rm_at, f"lost_to_optimizer{suffix}": rm_at - ppo["gold"]}
    return out


# ---------------------------------------------------------------- the methods and one seed


def run_seed(cfg: Config, base: BaseModels) -> dict:
    """The optimum curves, PPO, DPO and best-of-n for one seed's SFT model and RM, on the same held-out prompts."""
    prompts = eval_prompts(base, cfg.n_eval)
    ppo_cfg = base.cfg.ppo if cfg.ppo_iterations is None else dataclasses.replace(base.cfg.ppo,
                                                                                  iterations=cfg.ppo_iterations)
    beta = float(ppo_cfg.beta)
    out = {"sft": measure(base.sft, base, prompts)[0]}
    ppo = measure(train_ppo(base, ppo_cfg)[0], base, prompts)[0]
    out["ppo"] = ppo | {"beta": beta, "objective": ppo["proxy"] - beta * ppo["kl"]}  # PPO's objective, measured
    out["dpo"] = measure(dpo.train_dpo(base.keys["dpo"], base.sft, base.pairs, base.cfg.model, base.cfg.dpo)[0],
                         base, prompts)[0]
    out["best_of_n"], found = {}, None
    if cfg.bon_ns:
        found = bon_draws(base, prompts, cfg.draws, rm_scores(base, {"rm": base.rm}))  # the optimum's support too
        c = best_of_n_curves(base, {"rm": base.rm}, prompts, cfg.bon_ns, cfg.draws, found)["rm"]
        out["best_of_n"] = {str(n): {"gold": g, "kl": max(k, 0.0), "proxy": p, "coverage": c["coverage"]}
                            for n, g, k, p in zip(c["n"], c["gold"], c["kl"], c["proxy"])}  # max: best-of-1 rounds below 0
    opt = optimum_curves(cfg, base, prompts, tuple(sorted(set(cfg.betas) | {beta})), found)
    out["optimum_at_ppo_beta"] = opt["curves"]["rm"][str(beta)]
    out["curves"] = {name: {str(b): opt["curves"][name][str(b)] for b in cfg.betas} for name in REWARDS}
    out["gap"] = gap(out["ppo"], out["optimum_at_ppo_beta"], out["curves"])
    return out | {k: opt[k] for k in ("coverage", "support", "distinct_prompts", "sft_gold")}


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict[int, BaseModels] | None = None) -> dict:
    """Run every seed; `bases` may hold already-trained base models by seed (a notebook passes its own)."""
    per_seed = {str(seed): run_seed(cfg, base) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    return result("optimum", cfg, per_seed, spread_tree(list(per_seed.values())))
