"""Constitutional AI (Bai et al. 2022): AI feedback for harmlessness, human feedback for helpfulness.

The constitution is `world.RULES` (three principles in the toy language). The feedback model is our own
pretrained (or SFT) language model, prompted with a principle, the question, a reply and "verdict :";
its P(good) vs P(bad) is the judgement (minirlhf.cai). For each seed this experiment
  1. measures how often AI labels agree with the gold ordering on the pipeline's preference pairs, per prompt
     kind, for each judge (pretrained, SFT) and each principle alone or all of them ensembled, beside the
     simulated human labelers' agreement on the same pairs;
  2. replaces the human labels of the secret-prompt pairs (harmlessness) with AI labels, keeps the human
     labels of the math/color pairs (helpfulness), and trains a reward model on the mix (RLAIF), with the
     same key as the pipeline's human-only RM, so only the labels differ;
  3. runs PPO against each RM (same key, same config);
  4. SL-CAI (the paper's supervised stage, minirlhf.cai.sl_cai): the same judge critiques SFT samples on secret
     prompts, the best-critiqued of k samples is the revision, and SFT is fine-tuned on the revisions;
  5. measures every policy on held-out prompts: harmlessness (leak and refusal rates on secret prompts),
     helpfulness (right answers on math/color), gold reward, and KL to SFT.
We use PPO, not DPO: RL-CAI trains a preference model and does RL against it (Bai et al. 2022), and only a
reward model can take labels from two sources, AI for one kind of pair and human for the others. The price is two
PPO runs per seed; at notebook 04's 60 iterations each, three seeds fit the experiments' five-minute budget (base
models cached).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import numpy as np

from minirlhf import cai, ppo
from minirlhf.evaluation import behaviour, gold_scores, share
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.cai_writeup import COLORS, JUDGES, LABELS, POLICIES, plot, summary  # noqa: F401 (re-exported)
from minirlhf.experiments.label_agreement import (agreement_by_kind, agreement_by_secret_type, judge_agreement,
                                                  rm_accuracy_by_kind, secret_pair_type)  # noqa: F401 (tests)
from minirlhf.experiments.report import result, spread_tree
from minirlhf.experiments.toolkit import (check_counts, eval_prompts, first_of_kinds, measure, response_text,
                                          seed_bases, train_ppo, train_rm)
from minirlhf.pipeline import PipelineConfig
from minirlhf.preferences import make_pairs
from minirlhf.world import PROMPT_KINDS, RULES, World

HELDOUT_STREAM = 8  # folded into the RM key for this experiment's own held-out pairs (the pipeline uses 0..4)
SL_CAI_STREAM = 9  # folded into the RM key for SL-CAI's prompts, samples and fine-tuning
SPREAD = ("agreement", "agreement_secret_pairs", "rm_accuracy_gold", "revisions", "policies")  # what `run` aggregates over seeds


@dataclass(frozen=True)
class Config:
    """Who judges, by which principles, which labels it replaces, and the RL budget."""

    judge: str = "pretrained"
    """The feedback model whose labels train the RLAIF reward model: "pretrained" or "sft"."""
    rules: tuple[str, ...] = tuple(RULES)
    """Principles (keys of world.RULES) whose verdicts are averaged into one AI label (Bai et al. ensemble them)."""
    ai_kinds: tuple[str, ...] = ("secret",)
    """Prompt kinds whose human labels are replaced by AI labels (harmlessness); the rest stay human."""
    ppo_iterations: int = 60
    """PPO iterations for each of the two policies: notebook 04's run (the pipeline's runs 100)."""
    n_heldout: int = 512
    """Fresh human-labelled SFT pairs on which both reward models' accuracy against gold is measured."""
    n_eval: int = 512
    """Held-out prompts every policy answers (the pipeline's evaluation prompts)."""
    sl_cai: cai.SLCAIConfig = cai.SLCAIConfig()
    """SL-CAI's prompts, samples per revision and fine-tuning (critiqued by `judge` under `rules`)."""
    n_shown: int = 4
    """Secret and math prompts each whose responses (first seed) the result keeps for reading."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, RM and PPO settings, as the pipeline runs them."""

    def __post_init__(self):
        if self.judge not in JUDGES:
            raise ValueError(f"Config.judge must be one of {JUDGES}, got {self.judge!r}")
        if not self.rules or set(self.rules) - set(RULES):
            raise ValueError(f"Config.rules must be a non-empty subset of {tuple(RULES)}, got {self.rules}")
        if not self.ai_kinds or set(self.ai_kinds) - set(PROMPT_KINDS):
            raise ValueError(f"Config.ai_kinds must be a non-empty subset of {PROMPT_KINDS}, got {self.ai_kinds}")
        check_counts(self, "ppo_iterations", "n_heldout", "n_eval")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: fewer held-out pairs for the reward models' accuracy (PPO is notebook 04's either way)."""
        return cls(n_heldout=256)

    @property
    def ppo(self) -> ppo.PPOConfig:
        return dataclasses.replace(self.pipeline.ppo, iterations=self.ppo_iterations)


# ---------------------------------------------------------------- measurements


def policy_figures(params: dict, base: BaseModels, prompts) -> tuple[dict, np.ndarray]:
    """`toolkit.measure` of a policy, and its gold on secret prompts (harmlessness) and on the others (helpfulness)."""
    stats, ev = measure(params, base, prompts)
    secret = np.array([p.kind == "secret" for p in prompts])
    return stats | {"gold_secret": share(ev["gold"][secret]), "gold_helpful": share(ev["gold"][~secret])}, ev["tokens"]


# ---------------------------------------------------------------- one seed


def rlaif_reward_model(base: BaseModels, ai_pairs: dict, heldout: dict) -> dict:
    """An RM trained on the AI-relabelled pairs with the pipeline's config AND keys, normalised on the same SFT
    samples: it differs from the human-only RM only by its labels."""
    return train_rm(base, base.keys["rm"], ai_pairs, heldout)


def train_policy(base: BaseModels, rm_params: dict, cfg: Config) -> dict:
    """PPO exactly as the pipeline runs it (SFT start and reference, value model from the RM)."""
    return train_ppo(base, cfg.ppo, rm=rm_params)[0]


def run_seed(cfg: Config, base: BaseModels, human_policy: dict | None = None) -> tuple[dict, dict]:
    """Every measurement for one seed's base models: (JSON-able results, the models and AI-labelled pairs).

    human_policy: PPO on base.rm if already trained with cfg.ppo and base.keys["ppo"] (the notebooks' PPO
    policy is); trained here when None."""
    clock = time.perf_counter()
    world, model = base.world, base.cfg.model
    seconds = {}

    def lap(stage):
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    agreement, probs = {"human": agreement_by_kind(base.pairs)}, {"human": None}
    for name in JUDGES:
        agreement[name], ensemble = judge_agreement(getattr(base, name), model, base.pairs, cfg.rules)
        probs[name] = np.asarray(cai.ai_preference(*ensemble))  # the ensembled AI label, P(chosen > rejected)
    ai_pairs = cai.relabel(base.pairs, probs[cfg.judge], cfg.ai_kinds)
    secret_types = agreement_by_secret_type(world, base.pairs, probs)
    lap("judging")

    heldout = make_pairs(jax.random.fold_in(base.keys["rm"], HELDOUT_STREAM), base.sft, world, model, cfg.n_heldout,
                         base.cfg.rm.labeler)
    rm_rlaif = rlaif_reward_model(base, ai_pairs, heldout)
    rm_accuracy = {"human": rm_accuracy_by_kind(base.rm, heldout, model),
                   "rlaif": rm_accuracy_by_kind(rm_rlaif, heldout, model)}
    lap("rlaif_reward_model")

    policies = {"sft": base.sft,
                "human": human_policy if human_policy is not None else train_policy(base, base.rm, cfg)}
    lap("ppo_human")
    policies["rlaif"] = train_policy(base, rm_rlaif, cfg)
    lap("ppo_rlaif")
    policies["sl_cai"], sl = cai.sl_cai(jax.random.fold_in(base.keys["rm"], SL_CAI_STREAM), base.sft,
                                        getattr(base, cfg.judge), world, model, cfg.rules, cfg.sl_cai)
    revisions = revision_effect(world, sl)
    lap("sl_cai")

    prompts = eval_prompts(base, cfg.n_eval)
    results, samples = {}, {}
    for name, params in policies.items():
        results[name], samples[name] = policy_figures(params, base, prompts)
    lap("evaluation")
    shown = first_of_kinds(prompts, {"secret": cfg.n_shown, "math": cfg.n_shown})
    return {
        "seed": base.cfg.seed,
        "agreement": agreement,
        "agreement_secret_pairs": secret_types,
        "ai_labels": {"relabelled": int(ai_pairs["ai_labelled"].sum()),
                      "flipped_vs_human": int((ai_pairs["chosen_tokens"] != base.pairs["chosen_tokens"]).any(axis=1).sum())},
        "rm_accuracy_gold": rm_accuracy,
        "revisions": revisions,
        "policies": results,
        "samples": [{"prompt": " ".join(prompts[i].words[1:]), **{n: response_text(samples[n][i:i + 1])[0] for n in POLICIES}}
                    for i in shown],
        "seconds": seconds,
    }, {"rm_rlaif": rm_rlaif, "ai_pairs": ai_pairs, **{f"policy_{k}": v for k, v in policies.items()}}


def revision_effect(world: World, sl: dict) -> dict[str, float]:
    """What revising did to SL-CAI's fine-tuning data on the revised prompts: leaks, refusals and gold of the
    first samples against the revisions, and how often the revision is not the first sample."""
    prompts = [p for p, r in zip(sl["prompts"], sl["revised"]) if r]
    rev = sl["revisions"]
    out = {"n": len(prompts), "changed": share(rev["changed"][sl["revised"]])}
    for which, key in (("first", "first_tokens"), ("revised", "tokens")):
        tokens = rev[key][sl["revised"]]
        b = behaviour(world, prompts, tokens)
        out.update({f"{which}_leaks": b["leaks"], f"{which}_refuses_secret": b["refuses_secret"],
                    f"{which}_gold": share(gold_scores(world, prompts, tokens))})
    return out


# ---------------------------------------------------------------- the experiment interface


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache") -> dict:
    """Every seed's measurements and their spread (mean, std, min, max over seeds)."""
    return collect(cfg, {str(seed): run_seed(cfg, base)[0] for seed, base in seed_bases(cfg, seeds, cache)})


def collect(cfg: Config, per_seed: dict[str, dict]) -> dict:
    """The result of these seeds' `run_seed`s (seed -> data): the seeds and the spread of the SPREAD parts."""
    return result("cai", cfg, per_seed, aggregate(per_seed))


def aggregate(per_seed: dict[str, dict]) -> dict:
    """The SPREAD parts of every seed -> the same tree with {"mean", "std", "min", "max", "values"} leaves."""
    return spread_tree([{k: s[k] for k in SPREAD} for s in per_seed.values()])
