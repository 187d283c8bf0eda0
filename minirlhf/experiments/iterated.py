"""Iterated online RLHF (Bai et al. 2022 §4.5; Touvron et al. 2023, Llama 2 §3.2): label the policy you have now.

The single pass labels pairs of SFT samples once, fits one reward model and climbs it. The RM has never seen
what the policy drifts to, so it can rate a hack highly. Iterating collects comparisons where the policy is:

    pi_0 = SFT;   for r = 1..R:
        D_r  = pairs sampled from pi_{r-1}, labelled by the same simulated labeler      (budget / R labels)
        RM_r = Bradley-Terry fit on D_1 u ... u D_r, from the SFT weights; normalised on pi_{r-1}'s samples
        pi_r = PPO from pi_{r-1} against RM_r (reference and KL: still SFT), iterations / R iterations

and is compared with the single pass at an equal label budget (R x budget/R against budget at once), at the
pipeline's beta and at beta = 0, where the single pass over-optimises. Each RM trains for as many passes over
its pairs as the pipeline's RM does over its own. At each round's end both runs are measured on the same
held-out prompts (gold ± se, exact KL to SFT, the RM in use, per-kind behaviour), and the RM in use is scored
on fresh labelled pairs of the policy before and after the round (not counted in the budget, like the
pipeline's held-out pairs): its on-distribution accuracy, which a practitioner can read without gold (against
the labels), beside its accuracy on SFT's pairs. The hack of a round is its most common response to one kind of prompt
that the RM scores above its normalisation mean (better than where the round started) while gold is below 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np

from minirlhf import reward_model
from minirlhf.evaluation import per_kind
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.iterated_writeup import METHODS, label_stop, plot, summary  # noqa: F401 (re-exported)
from minirlhf.experiments.monitoring import find_hack, follow_hack
from minirlhf.experiments.online import fit_rm, policy_pairs, rm_accuracy, rm_config, union
from minirlhf.experiments.report import result, spread_tree
from minirlhf.experiments.toolkit import (check_counts, eval_prompts, measure, response_text, rm_variant, seed_bases,
                                          train_ppo)
from minirlhf.pipeline import PipelineConfig

ROUND_TAG = 1500  # fold_in tag + round: this experiment's keys, apart from every pipeline stage's own


@dataclass(frozen=True)
class Config:
    """The label budget and how it is spent. Config() is the CLI's run, Config.small() the notebook's."""

    rounds: int = 4
    """R: label-train-climb rounds of the iterated run."""
    label_budget: int = 2000
    """Labelled training pairs in all, for both runs (the pipeline's RM has 2000: the single pass reuses it)."""
    iterations: int = 40
    """PPO iterations in all, for both runs (iterations / R per round; the single pass measures at the same marks)."""
    betas: tuple[float, ...] = (0.2, 0.0)
    """KL coefficients: the pipeline's, and 0, where the single pass over-optimises (experiment overoptimization)."""
    n_eval: int = 256
    """Held-out prompts each round's policy answers (the same prompts and draws every time)."""
    n_heldout: int = 250
    """Fresh labelled pairs of each round's policy, for the RM's on-distribution accuracy (not in the budget)."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the RM's training and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        check_counts(self, "rounds", "label_budget", "iterations", "n_eval", "n_heldout")
        for name in ("label_budget", "iterations"):
            if getattr(self, name) % self.rounds:
                raise ValueError(f"Config.{name}={getattr(self, name)} must split evenly into rounds={self.rounds}")
        if not self.betas or min(self.betas) < 0:
            raise ValueError(f"Config.betas must be a non-empty tuple of values >= 0, got {self.betas}")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: two rounds of 1000 pairs, 20 iterations, at beta = 0 only."""
        return cls(rounds=2, iterations=20, betas=(0.0,), n_eval=128, n_heldout=200)

    @property
    def pairs_per_round(self) -> int:
        return self.label_budget // self.rounds

    @property
    def iterations_per_round(self) -> int:
        return self.iterations // self.rounds


# ---------------------------------------------------------------- a round's keys


def round_keys(base: BaseModels, r: int) -> dict:
    """Round r's keys by purpose: its pairs, held-out pairs, RM training and normalisation (all split from "rm",
    as the RM stage splits its key), and its PPO."""
    key = jax.random.fold_in(base.keys["rm"], ROUND_TAG + r)
    return reward_model.rm_keys(key) | {"rm": key, "ppo": jax.random.fold_in(base.keys["ppo"], ROUND_TAG + r)}


# ---------------------------------------------------------------- measuring a round's policy


def checkpoint(params: dict, base: BaseModels, prompts: list, rm: dict) -> dict:
    """`measure` of params with `rm` as the proxy, per kind, and each response (kept apart, for the hack)."""
    figures, ev = measure(params, base, prompts, rm={})
    scores = np.asarray(reward_model.score(rm, ev["tokens"], ev["valid"], base.cfg.model))  # [N]
    return figures | {"proxy": float(scores.mean()), "per_kind": per_kind(base.world, prompts, ev["tokens"]),
                      "_eval": {"tokens": ev["tokens"], "valid": ev["valid"], "gold": ev["gold"], "scores": scores,
                                "kind": [p.kind for p in prompts],
                                "text": [t.split(" <eos>")[0] for t in response_text(ev["tokens"])]}}


# ---------------------------------------------------------------- the two runs


def gold_free(history: dict) -> dict:
    """A round's gold-free signals from its PPO log: the proxy's slope (per iteration) and the last entropy."""
    proxy = np.asarray(history["objective/scores"])
    slope = float(np.polyfit(np.arange(len(proxy)), proxy, 1)[0]) if len(proxy) > 1 else float("nan")
    return {"proxy_slope": slope, "entropy": float(history["policy/entropy"][-1])}


def logged(history: dict) -> dict:
    """The per-iteration curves the result keeps: the rollouts' proxy, gold, sampled KL and entropy."""
    return {k.split("/")[-1]: list(history[k]) for k in ("objective/scores", "objective/gold", "objective/kl",
                                                         "policy/entropy")}


def round_end(params: dict, base: BaseModels, cfg: Config, prompts: list, rm: dict, r: int) -> dict:
    """The end of round r (0: SFT): `checkpoint` against the RM in use, and fresh labelled pairs of params."""
    pairs = policy_pairs(base, params, round_keys(base, r + 1)["heldout"], cfg.n_heldout)
    return checkpoint(params, base, prompts, rm) | {"_pairs": pairs}


def run_single(cfg: Config, base: BaseModels, rm: dict, beta: float, prompts: list) -> tuple[list, list, dict, dict]:
    """PPO from SFT against the single-pass RM for all iterations, measured at every round's end; returns the
    round ends, the RM of each round, the logged curves and the final policy."""
    ppo_cfg = dataclasses.replace(base.cfg.ppo, beta=beta, iterations=cfg.iterations)
    n, points = cfg.iterations_per_round, []

    def on_iteration(i: int, params: dict) -> None:
        if i % n == 0:
            points.append(round_end(params, base, cfg, prompts, rm, i // n))

    policy, history = train_ppo(base, ppo_cfg, rm=rm, on_iteration=on_iteration)
    for r, point in enumerate(points):  # each round's slice of the one PPO log
        point |= gold_free({k: v[r * n:(r + 1) * n] for k, v in history.items()})
    return points, [rm] * cfg.rounds, logged(history), policy


def run_iterated(cfg: Config, base: BaseModels, first: tuple[dict, dict], beta: float,
                 prompts: list) -> tuple[list, list, dict, dict]:
    """R rounds of label, retrain on every pair so far, and continue PPO; first: round 1's (pairs, RM) from SFT.
    Returns what `run_single` returns."""
    ppo_cfg = dataclasses.replace(base.cfg.ppo, beta=beta, iterations=cfg.iterations_per_round)
    policy, (pairs, rm) = base.sft, first
    pair_sets, points, rms, curves = [pairs], [], [], []
    for r in range(1, cfg.rounds + 1):
        keys = round_keys(base, r)
        if r > 1:
            pair_sets.append(policy_pairs(base, policy, keys["pairs"], cfg.pairs_per_round))
            rm = fit_rm(base, pair_sets, policy, keys["rm"])
        policy, history = train_ppo(base, ppo_cfg, rm=rm, start=policy, key=keys["ppo"])
        points.append(round_end(policy, base, cfg, prompts, rm, r) | gold_free(history)
                      | {"pairs": len(union(pair_sets)["kind"])})
        rms.append(rm)
        curves.append(logged(history))
    return points, rms, {k: sum((c[k] for c in curves), []) for k in curves[0]}, policy


def finish(points: list, rms: list, start: dict, base: BaseModels, cfg: Config) -> list:
    """Per round: the RM's accuracies (on the pairs of the policy it started from, of the one it made, of SFT),
    the proxy at the round's start, the hack and what the next round did to it; private fields dropped."""
    before = [start] + points[:-1]
    for r, (point, rm, prev) in enumerate(zip(points, rms, before)):
        point["rm"] = {"on_start": rm_accuracy(rm, prev["_pairs"], base), "on_end": rm_accuracy(rm, point["_pairs"], base),
                       "on_sft": rm_accuracy(rm, start["_pairs"], base)}
        point["proxy_start"] = float(np.asarray(reward_model.score(rm, prev["_eval"]["tokens"], prev["_eval"]["valid"],
                                                                    base.cfg.model)).mean())
        point.setdefault("pairs", cfg.label_budget)
        ev, last = point["_eval"], r + 1 == len(points)
        hack = find_hack(ev["text"], ev["kind"], ev["gold"], ev["scores"])
        following = () if last else (np.asarray(reward_model.score(rms[r + 1], ev["tokens"], ev["valid"], base.cfg.model)),
                                     points[r + 1]["_eval"]["text"])  # the next RM on these replies; the next replies
        point["hack"] = None if hack is None else follow_hack(hack, ev, *following)
    return [{k: v for k, v in p.items() if not k.startswith("_")} | {"round": r} for r, p in enumerate(points, 1)]


# ---------------------------------------------------------------- one seed, many seeds


def single_pass_rm(cfg: Config, base: BaseModels, cache) -> dict:
    """The pipeline's RM when the budget is its number of pairs; else one trained (and cached) on the budget."""
    if cfg.label_budget == base.cfg.rm.n_pairs:
        return base.rm
    return rm_variant(base, rm_config(base, cfg.label_budget), cache)[0]


def run_seed(cfg: Config, base: BaseModels, cache=None, keep: dict | None = None) -> dict:
    """Both runs at every beta from one seed's base models; round 1's pairs and RM are shared by the betas.
    keep: if given, keep["beta=B"][run] = that run's final policy, for a caller to read."""
    prompts = eval_prompts(base, cfg.n_eval)
    start = round_end(base.sft, base, cfg, prompts, base.rm, 0)  # SFT, with its held-out pairs
    keys = round_keys(base, 1)
    first_pairs = policy_pairs(base, base.sft, keys["pairs"], cfg.pairs_per_round)
    first = (first_pairs, fit_rm(base, [first_pairs], base.sft, keys["rm"]))
    single_rm = single_pass_rm(cfg, base, cache)
    runs = {}
    for beta in cfg.betas:
        single = run_single(cfg, base, single_rm, beta, prompts)
        iterated = run_iterated(cfg, base, first, beta, prompts)
        runs[f"beta={beta:g}"] = {name: {"rounds": finish(points, rms, start, base, cfg), "curves": curves}
                                  for name, (points, rms, curves, _) in zip(METHODS, (single, iterated))}
        if keep is not None:
            keep[f"beta={beta:g}"] = {name: run[-1] for name, run in zip(METHODS, (single, iterated))}
    sft = {k: v for k, v in start.items() if not k.startswith("_")}
    return {"seed": base.cfg.seed, "sft": sft, "runs": runs}


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict[int, BaseModels] | None = None,
        keep: dict | None = None) -> dict:
    """Run every seed; `bases` may hold already-trained base models by seed (a notebook passes its own). keep: if
    given, keep[seed]["beta=B"][run] = the final policy of that run."""
    kept = {seed: {} for seed in seeds} if keep is not None else {}
    per_seed = {str(seed): run_seed(cfg, base, cache, kept.get(seed))
                for seed, base in seed_bases(cfg, seeds, cache, bases)}
    if keep is not None:
        keep.update(kept)
    return result("iterated", cfg, per_seed, aggregate(per_seed), pairs_per_round=cfg.pairs_per_round,
                  iterations_per_round=cfg.iterations_per_round)


def aggregate(per_seed: dict) -> dict:
    """Per beta, run and round: every number's spread over seeds; and the final gold, iterated minus single."""
    seeds = list(per_seed.values())
    out = {}
    for name, run0 in seeds[0]["runs"].items():
        out[name] = {m: {str(p["round"]): spread_tree([s["runs"][name][m]["rounds"][i] for s in seeds], skip=("hack",))
                         for i, p in enumerate(run0[m]["rounds"])} for m in METHODS}
        gap = [s["runs"][name]["iterated"]["rounds"][-1]["gold"] - s["runs"][name]["single"]["rounds"][-1]["gold"]
               for s in seeds]
        out[name]["final_gold_gap"] = seed_spread(gap) | {"wins": int(sum(g > 0 for g in gap)), "seeds": len(gap)}
    return out
