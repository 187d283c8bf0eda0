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
We use PPO, not DPO: RL-CAI trains a preference model and does RL against it, and PPO reaches a higher gold
reward than DPO in the pipeline's runs (README), so a difference between the label sources is not hidden by a
weaker optimiser. The price is two PPO runs per seed; at notebook 04's 60 iterations each, three seeds fit the
experiments' five-minute budget (base models cached).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import cai, ppo, reward_model
from minirlhf.data import decode_responses
from minirlhf.evaluation import evaluate, gold_scores, sample
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels, base_models
from minirlhf.ops import numpy_rng
from minirlhf.pipeline import PipelineConfig
from minirlhf.preferences import make_pairs
from minirlhf.world import PROMPT_KINDS, RULES, World, parse_response, sample_prompts

JUDGES = ("pretrained", "sft")  # the models that can give feedback
HELDOUT_STREAM = 8  # folded into the RM key for this experiment's own held-out pairs (the pipeline uses 0..4)
SL_CAI_STREAM = 9  # folded into the RM key for SL-CAI's prompts, samples and fine-tuning
POLICIES = ("sft", "sl_cai", "human", "rlaif")  # SFT, SFT on revisions, PPO on the human-only RM, PPO on the RLAIF RM
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
        if min(self.ppo_iterations, self.n_heldout, self.n_eval) < 1:
            raise ValueError("Config.ppo_iterations, n_heldout and n_eval must be >= 1")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: fewer held-out pairs for the reward models' accuracy (PPO is notebook 04's either way)."""
        return cls(n_heldout=256)

    @property
    def ppo(self) -> ppo.PPOConfig:
        return dataclasses.replace(self.pipeline.ppo, iterations=self.ppo_iterations)


# ---------------------------------------------------------------- measurements


def select(pairs: dict, rows: np.ndarray) -> dict:
    return {k: np.asarray(v)[rows] for k, v in pairs.items()}


def agreement_by_kind(pairs: dict, prob_chosen: np.ndarray | None = None) -> dict[str, float]:
    """cai.agreement_with_gold on each prompt kind's pairs (prob_chosen None: the pairs' own labels)."""
    out = {}
    for i, kind in enumerate(PROMPT_KINDS):
        rows = np.asarray(pairs["kind"]) == i
        out[kind] = cai.agreement_with_gold(select(pairs, rows), None if prob_chosen is None else prob_chosen[rows])
    return out


def judge_agreement(params: dict, cfg: Config, base: BaseModels) -> tuple[dict, np.ndarray]:
    """Agreement with gold per kind for each principle alone and for cfg.rules ensembled; also the verdicts."""
    rules = tuple(RULES)
    verdicts = cai.pair_verdicts(params, base.cfg.model, base.pairs, rules)  # [4, K, N]
    result = {rule: agreement_by_kind(base.pairs, np.asarray(cai.ai_preference(*verdicts[:, [k]])))
              for k, rule in enumerate(rules)}
    ensemble = verdicts[:, [rules.index(r) for r in cfg.rules]]
    result["ensemble"] = agreement_by_kind(base.pairs, np.asarray(cai.ai_preference(*ensemble)))
    return result, ensemble


def secret_pair_type(world: World, pairs: dict) -> np.ndarray:
    """What separates each pair's two replies, on secret prompts: "leak" (one leaks the code, the other does not),
    "refusal" (neither leaks, one refuses), "" for anything else and for every non-secret pair. [N] strings."""
    def leaks_and_refusals(tokens):
        parsed = [parse_response(w, ended, world.secret) for w, ended in decode_responses(tokens)]
        return np.array([p.leaked for p in parsed]), np.array([p.formatted and p.refusal for p in parsed])

    leak_c, refuse_c = leaks_and_refusals(pairs["chosen_tokens"])
    leak_r, refuse_r = leaks_and_refusals(pairs["rejected_tokens"])
    secret = np.asarray(pairs["kind"]) == PROMPT_KINDS.index("secret")
    leak = secret & (leak_c != leak_r)
    refusal = secret & ~leak_c & ~leak_r & (refuse_c != refuse_r)
    return np.where(leak, "leak", np.where(refusal, "refusal", ""))


def agreement_by_secret_type(world: World, pairs: dict, probs: dict[str, np.ndarray | None]) -> dict:
    """Agreement with gold on the secret pairs that differ by a leak, and on those that differ by a refusal."""
    types = secret_pair_type(world, pairs)
    out = {}
    for t in ("leak", "refusal"):
        rows = types == t
        out[t] = {"n": int(rows.sum()), **{who: cai.agreement_with_gold(select(pairs, rows), None if p is None else p[rows])
                                          for who, p in probs.items()}}
    return out


def behaviour(world: World, prompts, tokens: np.ndarray) -> dict[str, float]:
    """Harmlessness and helpfulness of sampled responses, read from the decoded text.

    leak_rate / refusal_rate: share of secret prompts whose response contains the code / is the refusal.
    correct_rate: share of math and color prompts answered in the assistant format with the right value.
    """
    parsed = [parse_response(w, ended, world.secret) for w, ended in decode_responses(tokens)]
    gold = gold_scores(world, prompts, tokens)
    secret = np.array([p.kind == "secret" for p in prompts])
    right = np.array([r.formatted and r.answer == p.answer for p, r in zip(prompts, parsed)])
    leaked = np.array([r.leaked for r in parsed])
    refused = np.array([r.formatted and r.refusal for r in parsed])
    mean = lambda x: float(x.mean()) if x.size else float("nan")  # nan when no prompt of that kind was drawn
    return {
        "leak_rate": mean(leaked[secret]),
        "refusal_rate": mean(refused[secret]),
        "correct_rate": mean(right[~secret]),
        "gold_secret": mean(gold[secret]),
        "gold_helpful": mean(gold[~secret]),
        "gold_reward": mean(gold),
    }


def rm_accuracy_by_kind(rm_params: dict, pairs: dict, cfg: PipelineConfig) -> dict[str, float]:
    """The RM's accuracy against the gold ordering on each kind's held-out pairs."""
    out = {}
    for i, kind in enumerate(PROMPT_KINDS):
        out[kind] = reward_model.accuracy(rm_params, select(pairs, np.asarray(pairs["kind"]) == i), cfg.model)["accuracy_gold"]
    return out


# ---------------------------------------------------------------- one seed


def rlaif_reward_model(base: BaseModels, ai_pairs: dict, heldout: dict) -> dict:
    """An RM trained on the AI-relabelled pairs with the pipeline's config AND keys (run_reward_model's split),
    normalised on the same SFT samples: it differs from the human-only RM only by its labels."""
    cfg, model = base.cfg.rm, base.cfg.model
    _, _, key_train, key_norm, _ = jax.random.split(base.keys["rm"], 5)  # as reward_model.run_reward_model
    params, _, _ = reward_model.train_reward_model(key_train, base.sft, ai_pairs, heldout, model, cfg)
    key_prompts, key_sample = jax.random.split(key_norm)
    prompts = sample_prompts(base.world, numpy_rng(key_prompts),
                             cfg.n_normalize)
    gen = sample(base.sft, model, prompts, key_sample)
    return reward_model.normalize(params, gen.tokens, gen.valid, model)


def train_policy(base: BaseModels, rm_params: dict, cfg: Config) -> dict:
    """PPO exactly as the pipeline runs it (SFT start and reference, value model from the RM)."""
    policy, _ = ppo.train_ppo(base.keys["ppo"], base.sft, base.sft, reward_model.reward_fn(base.cfg.model),
                              rm_params, partial(sample_prompts, base.world), base.cfg.model, cfg.ppo,
                              gold_fn=partial(gold_scores, base.world), value_params=rm_params)
    return policy


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
        agreement[name], ensemble = judge_agreement(getattr(base, name), cfg, base)
        probs[name] = np.asarray(cai.ai_preference(*ensemble))  # the ensembled AI label, P(chosen > rejected)
    ai_pairs = cai.relabel(base.pairs, probs[cfg.judge], cfg.ai_kinds)
    secret_types = agreement_by_secret_type(world, base.pairs, probs)
    lap("judging")

    heldout = make_pairs(jax.random.fold_in(base.keys["rm"], HELDOUT_STREAM), base.sft, world, model, cfg.n_heldout,
                         base.cfg.rm.labeler)
    rm_rlaif = rlaif_reward_model(base, ai_pairs, heldout)
    rm_accuracy = {"human": rm_accuracy_by_kind(base.rm, heldout, base.cfg),
                   "rlaif": rm_accuracy_by_kind(rm_rlaif, heldout, base.cfg)}
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

    prompts = sample_prompts(world, np.random.default_rng(base.cfg.seed + 1), cfg.n_eval, split="heldout")
    results, samples = {}, {}
    for name, params in policies.items():
        ev = evaluate(params, model, world, prompts, base.keys["eval"], ref_params=base.sft)
        results[name] = {**behaviour(world, prompts, ev["tokens"]), "answer_rate": ev["answer_rate"],
                         "kl_to_sft": ev["kl_to_sft"]}
        samples[name] = ev["tokens"]
    lap("evaluation")
    shown = _shown(prompts, cfg.n_shown)
    return {
        "seed": base.cfg.seed,
        "agreement": agreement,
        "agreement_secret_pairs": secret_types,
        "ai_labels": {"relabelled": int(ai_pairs["ai_labelled"].sum()),
                      "flipped_vs_human": int((ai_pairs["chosen_tokens"] != base.pairs["chosen_tokens"]).any(axis=1).sum())},
        "rm_accuracy_gold": rm_accuracy,
        "revisions": revisions,
        "policies": results,
        "samples": [{"prompt": " ".join(prompts[i].words[1:]), **{n: decode_response(samples[n][i]) for n in POLICIES}}
                    for i in shown],
        "seconds": seconds,
    }, {"rm_rlaif": rm_rlaif, "ai_pairs": ai_pairs, **{f"policy_{k}": v for k, v in policies.items()}}


def revision_effect(world: World, sl: dict) -> dict[str, float]:
    """What revising did to SL-CAI's fine-tuning data on the revised prompts: leak, refusal and gold of the
    first samples against the revisions, and how often the revision is not the first sample."""
    prompts = [p for p, r in zip(sl["prompts"], sl["revised"]) if r]
    rev = sl["revisions"]
    out = {"n": len(prompts), "changed": float(rev["changed"][sl["revised"]].mean()) if prompts else float("nan")}
    for which, key in (("first", "first_tokens"), ("revised", "tokens")):
        b = behaviour(world, prompts, rev[key][sl["revised"]])
        out.update({f"{which}_leak_rate": b["leak_rate"], f"{which}_refusal_rate": b["refusal_rate"],
                    f"{which}_gold": b["gold_reward"]})
    return out


def decode_response(row: np.ndarray) -> str:
    words, ended = decode_responses(np.asarray(row)[None])[0]
    return " ".join(words) + (" <eos>" if ended else " ...")


def _shown(prompts, n: int) -> list[int]:
    """Indices of the first n secret and first n math prompts."""
    return ([i for i, p in enumerate(prompts) if p.kind == "secret"][:n] +
            [i for i, p in enumerate(prompts) if p.kind == "math"][:n])


# ---------------------------------------------------------------- the experiment interface


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache") -> dict:
    """Every seed's measurements and their spread (mean, std, min, max over seeds)."""
    per_seed = []
    for seed in seeds:
        base = base_models(seed, cfg.pipeline, cache)
        per_seed.append(run_seed(cfg, base)[0])
    return {"config": {"judge": cfg.judge, "rules": list(cfg.rules), "ai_kinds": list(cfg.ai_kinds),
                       "ppo_iterations": cfg.ppo_iterations, "n_eval": cfg.n_eval, "sl_cai_k": cfg.sl_cai.k},
            "seeds": per_seed, "spread": spread([{k: s[k] for k in SPREAD}
                                                 for s in per_seed])}


def spread(per_seed: list[dict]) -> dict:
    """Nested dicts of numbers (one per seed) -> the same tree with {"mean", "std", "min", "max"} leaves."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: spread([d[k] for d in per_seed]) for k in first}
    return seed_spread(per_seed)


LABELS = {"sft": "SFT", "sl_cai": "SL-CAI", "human": "PPO, human labels", "rlaif": "PPO, RLAIF"}
COLORS = {"sft": "tab:blue", "sl_cai": "tab:purple", "human": "tab:red", "rlaif": "tab:green"}


def plot(result: dict) -> plt.Figure:
    """Left: AI-label agreement with gold by prompt kind. Middle: harmlessness. Right: helpfulness and gold."""
    seeds = result["seeds"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    judges = [("human", "human labelers"), ("pretrained", "pretrained judge"), ("sft", "SFT judge")]
    x = np.arange(len(PROMPT_KINDS))
    for j, (who, label) in enumerate(judges):
        vals = np.array([[_agree(s, who, k) for k in PROMPT_KINDS] for s in seeds])  # [seeds, kinds]
        pos = x + (j - 1) * 0.27
        axes[0].bar(pos, vals.mean(0), 0.27, yerr=_std(vals), capsize=3, label=label, alpha=0.8)
        for row in vals:
            axes[0].scatter(pos, row, s=8, color="k", zorder=3)
    axes[0].set_xticks(x, [f"{k} pairs" for k in PROMPT_KINDS])
    axes[0].set_ylim(0.4, 1.0)
    axes[0].set_ylabel("agreement with gold ordering")
    axes[0].set_title("who labels pairs like the ideal human?")
    axes[0].legend(fontsize=7, loc="lower left")
    types = ("leak", "refusal")
    for j, (who, label) in enumerate(judges):
        vals = np.array([[s["agreement_secret_pairs"][t][who] for t in types] for s in seeds])  # [seeds, types]
        pos = np.arange(len(types)) + (j - 1) * 0.27
        axes[1].bar(pos, np.nanmean(vals, 0), 0.27, yerr=_std(vals), capsize=3, label=label, alpha=0.8)
        for row in vals:
            axes[1].scatter(pos, row, s=8, color="k", zorder=3)
    axes[1].set_xticks(np.arange(len(types)), ["one reply leaks", "one refuses,\nneither leaks"])
    axes[1].set_ylim(0.0, 1.0)
    axes[1].axhline(0.5, color="k", lw=0.5, ls=":")
    axes[1].set_ylabel("agreement with gold ordering")
    axes[1].set_title("secret pairs, by what separates the replies")
    panels = [(axes[2], ["leak_rate", "refusal_rate"], "secret prompts: share of responses", "harmlessness"),
              (axes[3], ["correct_rate", "gold_reward"], "rate / mean gold reward", "helpfulness and gold reward")]
    for ax, metrics, ylabel, title in panels:
        x = np.arange(len(metrics))
        width = 0.8 / len(POLICIES)
        for j, pol in enumerate(POLICIES):
            vals = np.array([[s["policies"][pol][m] for m in metrics] for s in seeds])
            pos = x + (j - (len(POLICIES) - 1) / 2) * width
            ax.bar(pos, vals.mean(0), width, yerr=_std(vals), capsize=3, color=COLORS[pol], label=LABELS[pol], alpha=0.8)
            for row in vals:
                ax.scatter(pos, row, s=8, color="k", zorder=3)
        ax.set_xticks(x, [m.replace("_", " ") for m in metrics])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    fig.suptitle(f"Constitutional AI: {len(seeds)} seed(s), bars = mean, error bars = std, dots = seeds", fontsize=9)
    fig.tight_layout()
    return fig


def _std(vals: np.ndarray) -> np.ndarray:
    """Each column's spread over seeds (the rows), as `seed_spread` computes it: the error bars."""
    return np.array([seed_spread(col)["std"] for col in vals.T])


def _agree(seed_result: dict, who: str, kind: str) -> float:
    a = seed_result["agreement"][who]
    return a[kind] if who == "human" else a["ensemble"][kind]


def summary(result: dict) -> str:
    s = result["spread"]
    fmt = lambda d: f"{d['mean']:.3f} ± {d['std']:.3f}"
    lines = [(f"Constitutional AI over seeds {[x['seed'] for x in result['seeds']]} (mean ± std over seeds; "
              f"judge: {result['config']['judge']} model, principles {result['config']['rules']} ensembled; "
              f"AI labels replace human ones on {result['config']['ai_kinds']} pairs)."), "",
             "AI-label agreement with the gold ordering on the pipeline's preference pairs:", "",
             "| labeller | " + " | ".join(f"{k} pairs" for k in PROMPT_KINDS) + " |", "|---|" + "---|" * len(PROMPT_KINDS)]
    lines.append("| human labelers | " + " | ".join(fmt(s["agreement"]["human"][k]) for k in PROMPT_KINDS) + " |")
    for judge in JUDGES:
        for rule in (*RULES, "ensemble"):
            lines.append(f"| {judge} judge, {rule} | " + " | ".join(fmt(s["agreement"][judge][rule][k]) for k in PROMPT_KINDS) + " |")
    counts = {t: [x["agreement_secret_pairs"][t]["n"] for x in result["seeds"]] for t in ("leak", "refusal")}
    lines += ["", (f"On secret pairs, by what separates the two replies (pairs per seed: {counts['leak']} differ by a "
                   f"leak, {counts['refusal']} by a refusal, neither leaking):"), "",
              "| labeller | one leaks | one refuses, neither leaks |", "|---|---|---|"]
    for who, label in (("human", "human labelers"), *((j, f"{j} judge, ensemble") for j in JUDGES)):
        lines.append(f"| {label} | " + " | ".join(fmt(s["agreement_secret_pairs"][t][who]) for t in ("leak", "refusal")) + " |")
    lines += ["", "Reward models' accuracy against gold on fresh held-out pairs:", "",
              "| reward model | " + " | ".join(PROMPT_KINDS) + " |", "|---|" + "---|" * len(PROMPT_KINDS)]
    for rm in ("human", "rlaif"):
        lines.append(f"| {rm} | " + " | ".join(fmt(s["rm_accuracy_gold"][rm][k]) for k in PROMPT_KINDS) + " |")
    r = s["revisions"]
    lines += ["", (f"SL-CAI's fine-tuning data on secret prompts ({r['n']['mean']:.0f} per seed): the revision is the "
                   f"best-critiqued of {result['config']['sl_cai_k']} SFT samples and differs from the first "
                   f"sample on {fmt(r['changed'])} of them."), "",
              "| responses | leak rate | refusal rate | gold |", "|---|---|---|---|",
              f"| first samples | {fmt(r['first_leak_rate'])} | {fmt(r['first_refusal_rate'])} | {fmt(r['first_gold'])} |",
              f"| revisions | {fmt(r['revised_leak_rate'])} | {fmt(r['revised_refusal_rate'])} | {fmt(r['revised_gold'])} |"]
    metrics = ["leak_rate", "refusal_rate", "correct_rate", "gold_secret", "gold_helpful", "gold_reward", "kl_to_sft"]
    lines += ["", "Policies on held-out prompts (leak/refusal on secret prompts, correct on math/color):", "",
              "| policy | " + " | ".join(m.replace("_", " ") for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for pol in POLICIES:
        lines.append(f"| {LABELS[pol]} | " + " | ".join(fmt(s["policies"][pol][m]) for m in metrics) + " |")
    return "\n".join(lines)
