"""Labeler bias: raters who like confident (or long) answers teach the reward model, and PPO, to sound sure.

A labeler does not see the gold score g(x, y); it sees g plus its own taste (minirlhf.preferences.perceived_score):

    s(x, y) = g(x, y) + b_conf * [y says "definitely"] + b_len * |y|,   P(a > b) = sigmoid((s_a - s_b) / T)

Bradley-Terry fits r(x, y) to those labels, so the RM learns s, bias included; PPO then climbs r. With the
same SFT pairs labelled three ways (unbiased, confidence-biased, length-biased), this experiment measures
  1. the labels: how often each labeler picks the "definitely" (or the longer) response of a pair;
  2. the RM: its score change when "definitely" is inserted into an answer of the kind SFT gives (or chatter
     is appended), the value itself unchanged, on right and on wrong answers separately (answer_probes);
  3. the policy after PPO: how often it says "definitely" (overall and on wrong answers), how often its
     math answer is right, how long it writes, and its gold reward, beside SFT's.
The length version is Singhal et al. 2023 ("A long way to go: investigating length correlations in RLHF").
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from minirlhf.evaluation import answered_right, gold_scores, parse_all, rambles, says_definitely, share
from minirlhf.experiments.answer_probes import (edit_shifts, gold_of, perceived_of, probe_answers, score_words,
                                                with_confidence)  # noqa: F401 (with_confidence: notebook 06)
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.labeler_bias_writeup import plot, summary  # noqa: F401 (re-exported)
from minirlhf.experiments import report
from minirlhf.experiments.report import plain, result, spread_tree
from minirlhf.experiments.toolkit import (check_counts, eval_prompts, first_of_kinds, measure, question, response_text,
                                          rm_variant, seed_bases, train_ppo)
from minirlhf.pipeline import PipelineConfig
from minirlhf.preferences import Labeler
from minirlhf.world import World

LABELERS = ("unbiased", "confident", "long")  # the names `labeler` understands


@dataclass(frozen=True)
class Config:
    """Bias strengths and budgets. Config() is the CLI's run, Config.small() the notebook's."""

    confidence_bias: float = 0.5
    """Added to a "definitely" response's score by the confident labeler. Gold charges a wrong "definitely"
    0.4, so at 0.5 the labeler prefers "definitely" even on a WRONG answer (by 0.1), and by 0.7 on a right one."""
    length_bias: float = 0.2
    """Added per response word by the long labeler: twice the gold's 0.1 penalty per rambled word, so each rambled
    word nets +0.1 to this labeler (the same net favour as the confident labeler's on a wrong answer). Note that gold
    scores every unfinished response -0.5, so to this labeler a 16-word response that never ends beats a short
    wrong answer (-0.4) by far: a policy can exploit it by not stopping."""
    labelers: tuple[str, ...] = LABELERS
    """Which labelers to train an RM and a PPO policy for ("unbiased" reuses the pipeline's RM)."""
    ppo_iterations: int = 30
    """PPO iterations per labeler (the pipeline runs 100; 30 fits three policies per seed in the budget)."""
    n_probe: int = 512
    """Prompts whose demonstrated math/color answers are edited to probe each RM (secret prompts are dropped)."""
    n_eval: int = 512
    """Held-out prompts each policy answers (the pipeline's evaluation prompts)."""
    n_shown: int = 6
    """Prompts whose responses (SFT and each policy, first seed) the result keeps for reading."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, RM and PPO settings, as the pipeline runs them."""

    def __post_init__(self):
        unknown = [n for n in self.labelers if n not in LABELERS]
        if unknown or not self.labelers:
            raise ValueError(f"Config.labelers must be a non-empty subset of {LABELERS}, got {self.labelers}")
        if self.confidence_bias < 0 or self.length_bias < 0:
            raise ValueError("Config.confidence_bias and length_bias must be >= 0")
        check_counts(self, "ppo_iterations", "n_probe", "n_eval")

    @classmethod
    def small(cls) -> Config:
        """The notebook's budget: unbiased vs confident only (no length-biased RM and policy)."""
        return cls(labelers=("unbiased", "confident"))


def labeler(cfg: Config, name: str) -> Labeler:
    """The pipeline's labeler with one bias switched on (or none, for "unbiased")."""
    base = cfg.pipeline.rm.labeler
    bias = {"unbiased": {}, "confident": {"confidence_bias": cfg.confidence_bias}, "long": {"length_bias": cfg.length_bias}}
    if name not in bias:
        raise ValueError(f"unknown labeler {name!r}; choose one of {LABELERS}")
    return dataclasses.replace(base, **bias[name])


# ---------------------------------------------------------------- measurements

def label_preferences(world: World, pairs: dict) -> dict[str, float]:
    """Share of labels picking the "definitely" response (pairs where just one says it), and the longer one."""
    chosen, rejected = parse_all(world, pairs["chosen_tokens"]), parse_all(world, pairs["rejected_tokens"])
    sure = np.array([[says_definitely(c), says_definitely(r)] for (_, c), (_, r) in zip(chosen, rejected)])  # [N, 2]
    length = np.array([[len(c), len(r)] for (c, _), (r, _) in zip(chosen, rejected)])  # [N, 2]
    one_sure, unequal = sure[:, 0] != sure[:, 1], length[:, 0] != length[:, 1]
    return {"picks_definitely": share(sure[one_sure, 0]), "picks_longer": share(length[unequal, 0] > length[unequal, 1])}


def policy_stats(world: World, prompts, tokens: np.ndarray) -> dict[str, float]:
    """How a policy words its math/color answers (refusals aside), and its math accuracy (`evaluation`'s reading)."""
    read = [(q, p) for q, (_, p) in zip(prompts, parse_all(world, tokens))]
    answers = [(q, p) for q, p in read if q.kind != "secret" and p.formatted and p.answer is not None]
    return {
        "says_definitely": share([says_definitely(p) for _, p in answers]),
        "definitely_when_wrong": share([says_definitely(p) for q, p in answers if not answered_right(q, p)]),
        "says_maybe": share([p.confidence == "maybe" for _, p in answers]),
        "math_accuracy": share([answered_right(q, p) for q, p in read if q.kind == "math"]),  # of all math prompts
        "rambles": share([rambles(p) for _, p in answers]),
    }


# ---------------------------------------------------------------- one labeler, one seed

def labelled_reward_model(cfg: Config, name: str, base: BaseModels, cache) -> tuple[dict, dict, dict]:
    """(normalised RM, its training pairs, its held-out metrics) for labeler `name`, trained as the pipeline does.

    Every labeler sees the same SFT samples (same key), so only the labels differ. "unbiased" is the base RM.
    """
    if name == "unbiased" and base.rm:
        return base.rm, base.pairs, base.rm_metrics
    return rm_variant(base, dataclasses.replace(base.cfg.rm, labeler=labeler(cfg, name)), cache)


def train_policy(cfg: Config, base: BaseModels, rm_params: dict) -> tuple[dict, dict]:
    """PPO against `rm_params`, as the pipeline runs it but for cfg.ppo_iterations (same key for every labeler)."""
    return train_ppo(base, dataclasses.replace(base.cfg.ppo, iterations=cfg.ppo_iterations), rm=rm_params)


def measure_policy(base: BaseModels, params: dict, prompts, rm: dict | None = None) -> tuple[dict, np.ndarray]:
    """`toolkit.measure` (proxy: `rm`, default the pipeline's) and policy_stats on `prompts`; and the sampled tokens."""
    stats, ev = measure(params, base, prompts, rm=rm)
    return stats | policy_stats(base.world, prompts, ev["tokens"]), np.asarray(ev["tokens"])


def run_seed(cfg: Config, base: BaseModels, cache=None) -> dict:
    """Every labeler of cfg on one seed's base models: labels, RM probes, PPO, evaluation."""
    world, model_cfg = base.world, base.cfg.model
    probe_prompts, bare, right = probe_answers(world, np.random.default_rng(base.cfg.seed + 2), cfg.n_probe)
    prompts = eval_prompts(base, cfg.n_eval)
    sft_stats, sft_tokens = measure_policy(base, base.sft, prompts)
    out = {"n_probe_right": int(right.sum()), "n_probe_wrong": int((~right).sum()), "sft": sft_stats,
           "gold_shift": edit_shifts(partial(gold_of, world), probe_prompts, bare, right), "labelers": {}}
    tokens, seconds = {"SFT": sft_tokens}, {}
    for name in cfg.labelers:
        clock = time.perf_counter()
        rm, pairs, rm_metrics = labelled_reward_model(cfg, name, base, cache)
        seconds[f"rm_{name}"], clock = round(time.perf_counter() - clock, 1), time.perf_counter()
        policy, history = train_policy(cfg, base, rm)
        seconds[f"ppo_{name}"] = round(time.perf_counter() - clock, 1)
        stats, tokens[name] = measure_policy(base, policy, prompts, rm=rm)
        out["labelers"][name] = {
            "labels": label_preferences(world, pairs),
            "labeler_shift": edit_shifts(partial(perceived_of, world, labeler(cfg, name)), probe_prompts, bare, right),
            "rm_shift": edit_shifts(partial(score_words, rm, model_cfg), probe_prompts, bare, right),
            "rm": plain(rm_metrics),
            "policy": stats,
            "history": {k: history[f"objective/{k}"].round(4).tolist() for k in ("scores", "gold", "kl")},
        }
    out["samples"] = samples(world, prompts, tokens, cfg.n_shown)
    out["seconds"] = seconds  # wall time of each RM (0 when loaded from the cache) and each PPO run
    return out


def samples(world: World, prompts, tokens: dict[str, np.ndarray], n: int) -> list[dict]:
    """The first n math prompts, and one from each other kind, with every model's decoded response and gold."""
    shown = []
    for i in first_of_kinds(prompts, {"math": max(n - 2, 1), "color": 1, "secret": 1})[:n]:
        p = prompts[i]
        replies = {model: {"text": response_text(t[i : i + 1])[0], "gold": float(gold_scores(world, [p], t[i : i + 1])[0])}
                   for model, t in tokens.items()}
        shown.append({"prompt": question(p), "answer": " ".join(p.answer) if p.kind != "secret" else "refuse",
                      "responses": replies})
    return shown


# ---------------------------------------------------------------- the experiment interface

def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict | None = None) -> dict:
    """run_seed for every seed; bases maps seed -> BaseModels already trained (the notebook's), else base_models."""
    per_seed = {str(seed): run_seed(cfg, base, cache) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    return result("labeler_bias", cfg, per_seed, aggregate(per_seed),
                  labeler_base=dataclasses.asdict(cfg.pipeline.rm.labeler))


def merge(results: list[dict]) -> dict:
    """One result from runs of the same Config on different seeds (e.g. one process per seed): `report.merge`."""
    return report.merge(results, aggregate)


def aggregate(per_seed: dict[str, dict]) -> dict:
    """`seed_spread` (mean, std, min, max, values over seeds) of every measured number (training curves aside)."""
    return spread_tree(list(per_seed.values()), skip=("history",))
