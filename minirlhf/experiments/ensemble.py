"""Reward-model ensembles against over-optimisation, and a stopping rule that needs no gold (Coste et al. 2024).

The over-optimisation setup (PPO at beta = 0 from SFT; best-of-n up to n = 256 from one set of SFT draws), with
the reward either the pipeline's RM alone ("single") or an ensemble of k members: the pipeline's RM and k - 1
more, each trained with its own key on a bootstrap resample of the same labelled pairs (`minirlhf.ensemble`),
combined by mean, min or mean - lambda std. Per seed and curve: where gold peaks, the KL there, and gold at the
end (`gao_forms.peak`).

Monitoring: a practitioner has no gold. At every checkpoint of every PPO run we record beside gold what they do
have: the KL to SFT, the proxy and its slope per unit of d = sqrt(KL), the policy's entropy, and the members'
disagreement (std across members, per sample). The stopping rule: tau is the `alarm_quantile` quantile of the
disagreement over SFT's own samples; stop when more than `alarm_share` of a checkpoint's samples exceed tau,
and keep the checkpoint before. Its gold is set against the best checkpoint's, which only gold can find.

Time: each extra member costs one reward-model stage (trained once, then cached); each PPO run is timed
without its checkpoint measurements.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import ensemble, reward_model, store
from minirlhf.data import response_mask
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels, made_by
from minirlhf.experiments.ensemble_writeup import SINGLE, plot, summary  # noqa: F401 (re-exported)
from minirlhf.experiments.monitoring import stop_report, with_peak
from minirlhf.experiments.report import result, spread_tree
from minirlhf.experiments.toolkit import (bon_curve, bon_draws, check_bon_ns, check_counts, eval_prompts, measure,
                                          seed_bases, watched_ppo)
from minirlhf.ops import masked_mean
from minirlhf.pipeline import PipelineConfig
from minirlhf.ppo_losses import token_entropy
from minirlhf.transformer import ModelConfig, forward
from minirlhf.world import Prompt


@dataclass(frozen=True)
class Config:
    """The ensemble, its objectives, the budget of each curve and the stopping rule. Config() is the CLI's run."""

    k: int = 4
    """Members: the pipeline's RM and k - 1 more (Coste et al. use five)."""
    bootstrap: bool = True
    """Train the extra members on bootstrap resamples of the pairs (False: the same pairs, other keys only)."""
    objectives: tuple[tuple[str, float], ...] = (("mean", 0.0), ("min", 0.0), ("mean_minus_std", 1.0))
    """Ensemble objectives as (name, lambda), each climbed by its own PPO run and best-of-n curve."""
    ppo_iterations: int = 40
    """PPO iterations per run at beta = 0: room for the single RM's gold to peak and fall (the curves show where)."""
    n_checkpoints: int = 9
    """Log-spaced iterations at which each run is measured (SFT is iteration 0)."""
    n_eval: int = 256
    """Held-out prompts every checkpoint answers (the same prompts and sampling key each time)."""
    bon_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    """Best-of-n's n values, all from the same draws."""
    bon_draws: int = 1024
    """SFT samples per distinct held-out prompt, from which best-of-n (n <= bon_draws) is estimated."""
    alarm_quantile: float = 0.9
    """tau = this quantile of the disagreement over SFT's samples (so a share 1 - quantile of them exceed it)."""
    alarm_share: float = 0.2
    """Stop once more than this share of a checkpoint's samples exceed tau (twice SFT's own share)."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the reward model and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        if self.k < 2:
            raise ValueError(f"Config.k must be >= 2 (an ensemble of one has no disagreement), got {self.k}")
        bad = [o for o in self.objectives if len(o) != 2 or o[0] not in ensemble.OBJECTIVES or not o[1] >= 0]
        if not self.objectives or bad:
            raise ValueError(f"Config.objectives must be (name, lambda >= 0) pairs, name one of {ensemble.OBJECTIVES}; "
                             f"bad: {bad or 'none given'}")
        check_counts(self, "ppo_iterations", "n_checkpoints", "n_eval", "bon_draws")
        check_bon_ns(self.bon_ns, self.bon_draws)
        if not (0 < self.alarm_quantile < 1 and 0 < self.alarm_share < 1):
            raise ValueError("Config.alarm_quantile and alarm_share must lie in (0, 1)")

    @classmethod
    def small(cls) -> Config:
        """A notebook's budget: three members, shorter PPO, fewer prompts and draws."""
        return cls(k=3, ppo_iterations=24, n_checkpoints=7, n_eval=128, bon_ns=(1, 2, 4, 8, 16, 32, 64),
                   bon_draws=256)


def run_name(objective: str, lam: float) -> str:
    return f"mean - {lam:g} std" if objective == "mean_minus_std" else objective


def scorer(objective: str | None, lam: float = 0.0):
    """Members' scores [k, M] -> the reward a curve climbs [M]: member 0 alone (objective None), or combined."""
    if objective is None:
        return lambda scores: np.asarray(scores[0])
    return lambda scores: np.asarray(ensemble.combine(jnp.asarray(scores), objective, lam))


# ---------------------------------------------------------------- the members


def members(cfg: Config, base: BaseModels, cache_dir) -> tuple[tuple, list[dict]]:
    """(the k members, the pipeline's RM first; per member its held-out gold accuracy and training seconds).

    Member i >= 1 is trained from key fold_in(rm key, i), kept in the cache beside the pipeline's RM.
    """
    @cache
    def inputs():  # drawn once, and only when some member must be trained
        heldout, _ = reward_model.heldout_pairs(base.keys["rm"], base.sft, base.world, base.cfg.model, base.cfg.rm)
        return heldout, ensemble.normalization_samples(base.keys["rm"], base.sft, base.world, base.cfg.model,
                                                       base.cfg.rm)

    def make(i: int):
        start = time.perf_counter()
        params, metrics = ensemble.train_member(jax.random.fold_in(base.keys["rm"], i), base.sft, base.pairs,
                                                *inputs(), base.cfg.model, base.cfg.rm, resample=cfg.bootstrap)
        return params, {"metrics": metrics, "seconds": time.perf_counter() - start}

    found, info = [base.rm], [{"accuracy_gold": base.rm_metrics.get("accuracy_gold"), "seconds": None}]
    for i in range(1, cfg.k):
        record = made_by("rm", base.cfg) | {"stage": "rm_member", "member": i, "bootstrap": cfg.bootstrap}
        params, extra = store.cached(cache_dir, record, base.cfg.model, partial(make, i))
        found.append(params)
        info.append({"accuracy_gold": extra["metrics"]["accuracy_gold"], "seconds": extra["seconds"]})
    return tuple(found), info


# ---------------------------------------------------------------- what a practitioner sees at a checkpoint


@partial(jax.jit, static_argnames="cfg")
def response_entropy(params: dict, tokens, valid, cfg: ModelConfig) -> jax.Array:
    """The policy's exact entropy per response token, averaged over these samples' response tokens (nats)."""
    return masked_mean(token_entropy(forward(params, tokens, valid, cfg).logits), response_mask(valid))


def look(params: dict, base: BaseModels, prompts: list[Prompt], members: tuple) -> tuple[dict, np.ndarray]:
    """`toolkit.measure` (gold, KL, the single RM's proxy, behaviour), the members' mean score, their mean
    disagreement and the policy's entropy; and the disagreement of each sample, [n]."""
    stats, ev = measure(params, base, prompts)
    scores = ensemble.member_scores(members, ev["tokens"], ev["valid"], base.cfg.model)  # [k, n]
    per_sample = np.asarray(ensemble.disagreement(jnp.asarray(scores)))
    entropy = float(response_entropy(params, jnp.asarray(ev["tokens"]), jnp.asarray(ev["valid"]), base.cfg.model))
    return stats | {"ensemble_mean": float(scores.mean()), "disagreement": float(per_sample.mean()),
                    "entropy": entropy}, per_sample


# ---------------------------------------------------------------- PPO at beta = 0, watched


def ppo_curve(cfg: Config, base: BaseModels, prompts: list[Prompt], members: tuple, start: tuple[dict, float],
              objective: str | None, lam: float = 0.0) -> dict:
    """PPO at beta = 0 against the single RM (objective None) or the ensemble, looked at every checkpoint.

    start: SFT's `look` and tau. The value model starts from the pipeline's RM in every run.
    """
    ppo_cfg = dataclasses.replace(base.cfg.ppo, beta=0.0, iterations=cfg.ppo_iterations)
    sft_stats, tau = start
    reward = None if objective is None else (ensemble.ensemble_reward_fn(base.cfg.model, objective, lam), members)

    def watch(params: dict) -> dict:
        stats, per_sample = look(params, base, prompts, members)
        return stats | {"alarm_share": ensemble.share_above(per_sample, tau)}

    curve, seconds = watched_ppo(base, ppo_cfg, cfg.n_checkpoints, watch,
                                 sft_stats | {"alarm_share": 1 - cfg.alarm_quantile}, reward=reward)
    return read_curve(curve | {"seconds": seconds}, cfg.alarm_share)


def read_curve(curve: dict, alarm_share: float) -> dict:
    """Add d and the gold peak, the proxy's slope per unit d, and where the stopping rule stops (gold at the stop vs
    at the best checkpoint)."""
    curve = with_peak(curve)
    slope = np.diff(curve["proxy"]) / np.maximum(np.diff(curve["d"]), 1e-3)  # d steps back too; 1e-3: no division by 0
    return curve | {"proxy_slope": [None, *slope], "stop": stop_report(curve, curve["alarm_share"], alarm_share)}


# ---------------------------------------------------------------- one seed, many seeds


def run_seed(cfg: Config, base: BaseModels, cache_dir=None) -> dict:
    """Members, the PPO runs and the best-of-n curves of one seed, with the load the machine was under."""
    load, cpu = os.getloadavg()[0], time.process_time()
    prompts = eval_prompts(base, cfg.n_eval)
    found, member_info = members(cfg, base, cache_dir)
    sft_stats, sft_disagreement = look(base.sft, base, prompts, found)
    start = (sft_stats, ensemble.alarm_threshold(sft_disagreement, cfg.alarm_quantile))
    runs = {SINGLE: (None, 0.0)} | {run_name(o, lam): (o, lam) for o, lam in cfg.objectives}
    ppo_runs = {name: ppo_curve(cfg, base, prompts, found, start, o, lam) for name, (o, lam) in runs.items()}
    t = time.perf_counter()
    draws = bon_draws(base, prompts, cfg.bon_draws, lambda gen: ensemble.member_scores(
        found, gen.tokens, gen.valid, base.cfg.model))  # the members' scores [k, M] of each prompt's draws
    bon_seconds = time.perf_counter() - t
    curves = {name: with_peak(bon_curve(draws, scorer(o, lam), cfg.bon_ns)) for name, (o, lam) in runs.items()}
    return {"seed": base.cfg.seed, "tau": start[1], "members": member_info, "ppo": ppo_runs, "bon": curves,
            "seconds": {"bon_draws_and_scores": bon_seconds, "cpu": time.process_time() - cpu},
            "load": {"start": load, "end": os.getloadavg()[0]}}


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict[int, BaseModels] | None = None) -> dict:
    """Every seed; `bases` may hold already-trained base models by seed (a notebook or a test passes its own)."""
    per_seed = {str(seed): run_seed(cfg, base, cache) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    return result("ensemble", cfg, per_seed, aggregate(per_seed))


def aggregate(per_seed: dict) -> dict:
    """Across seeds, per PPO run and best-of-n curve: its peak's figures; per PPO run its stop and its seconds."""
    seeds = list(per_seed.values())
    out = {}
    for method in ("ppo", "bon"):
        for name in seeds[0][method]:
            runs = [s[method][name] for s in seeds]
            out[f"{method} {name}"] = spread_tree([r["peak"] | ({"stop": r["stop"], "seconds": r["seconds"]}
                                                                if method == "ppo" else {}) for r in runs],
                                                  skip=("peak_inside", "index"))
    trained = [m["seconds"] for s in seeds for m in s["members"] if m["seconds"] is not None]
    out["member_seconds"] = seed_spread(trained) if trained else None
    return out
