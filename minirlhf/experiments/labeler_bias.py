"""Labeler bias: raters who like confident (or long) answers teach the reward model, and PPO, to sound sure.

A labeler does not see the gold score g(x, y); it sees g plus its own taste (minirlhf.preferences.perceived_score):

    s(x, y) = g(x, y) + b_conf * [y says "definitely"] + b_len * |y|,   P(a > b) = sigmoid((s_a - s_b) / T)

Bradley-Terry fits r(x, y) to those labels, so the RM learns s, bias included; PPO then climbs r. With the
same SFT pairs labelled three ways (unbiased, confidence-biased, length-biased), this experiment measures
  1. the labels: how often each labeler picks the "definitely" (or the longer) response of a pair;
  2. the RM: its score change when "definitely" is inserted into an answer of the kind SFT gives (or chatter
     is appended), the value itself unchanged, on right and on wrong answers separately;
  3. the policy after PPO: how often it says "definitely" (overall and on wrong answers), how often its
     math answer is right, how long it writes, and its gold reward, beside SFT's.
The length version is Singhal et al. 2023 ("A long way to go: investigating length correlations in RLHF").
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import ppo, reward_model
from minirlhf.data import decode_responses, encode_pairs
from minirlhf.evaluation import evaluate, gold_scores
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels, base_models
from minirlhf.gold import gold_reward
from minirlhf.pipeline import PipelineConfig
from minirlhf.preferences import Labeler, perceived_score
from minirlhf.tokenizer import CONFIDENCE
from minirlhf.world import RAMBLES, World, demonstrate, parse_response, sample_prompts

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
    """PPO iterations per labeler. The pipeline runs 100; 30 fits three policies per seed in the budget, and in a
    50-iteration trial (seed 0) the gold reward and KL had settled by iteration 20 for every labeler."""
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
        if min(self.ppo_iterations, self.n_probe, self.n_eval) < 1:
            raise ValueError("Config.ppo_iterations, n_probe and n_eval must be >= 1")

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


# ---------------------------------------------------------------- editing an answer, keeping its value

def confidence_of(words: list[str]) -> str | None:
    """The leading confidence word ("definitely" / "maybe"), or None."""
    return words[0] if words and words[0] in CONFIDENCE else None


def with_confidence(words: list[str], confidence: str | None) -> list[str]:
    """The same response with its leading confidence word replaced by `confidence` (None removes it)."""
    if confidence is not None and confidence not in CONFIDENCE:
        raise ValueError(f"confidence must be one of {CONFIDENCE} or None, got {confidence!r}")
    body = words[1:] if confidence_of(words) else list(words)
    return ([confidence] if confidence else []) + body


def with_ramble(words: list[str], ramble: str | None, secret: tuple[str, ...] = ()) -> list[str]:
    """The same answer with whatever follows its answer sentence replaced by `ramble` (None: nothing)."""
    p = parse_response(words, True, secret)
    if p.answer is None and not p.refusal:
        raise ValueError(f"not an answer sentence, nothing to keep: {' '.join(words)!r}")
    kept = words[: len(words) - p.extra_tokens]
    return kept + (ramble.split() if ramble else [])


# ---------------------------------------------------------------- measurements

def label_preferences(pairs: dict) -> dict[str, float]:
    """Share of labels picking the "definitely" response (pairs where just one says it), and the longer one."""
    chosen = [w for w, _ in decode_responses(pairs["chosen_tokens"])]
    rejected = [w for w, _ in decode_responses(pairs["rejected_tokens"])]
    sure = np.array([["definitely" in c, "definitely" in r] for c, r in zip(chosen, rejected)])  # [N, 2]
    length = np.array([[len(c), len(r)] for c, r in zip(chosen, rejected)])  # [N, 2]
    one_sure, unequal = sure[:, 0] != sure[:, 1], length[:, 0] != length[:, 1]
    return {"picks_definitely": _mean(sure[one_sure, 0]), "picks_longer": _mean(length[unequal, 0] > length[unequal, 1])}


def _mean(x) -> float:
    """The mean, or nan for no data (a share of nothing is unknown, not 0)."""
    return float(np.mean(x)) if len(x) else float("nan")


def probe_answers(world: World, rng: np.random.Generator, n: int):
    """Answers like the ones SFT learned to give, reduced to the bare sentence "it is V .": (prompts, words, right).

    They come from the demonstrators (SFT's training data) on n fresh train prompts, secret ones dropped, so every
    reward model and every seed's model is probed with answers of the same kind, right about as often as SFT is.
    """
    kept = []
    for p in sample_prompts(world, rng, n):
        words, _ = demonstrate(world, rng, p)
        if p.kind != "secret":
            kept.append((p, with_ramble(with_confidence(words, None), None), parse_response(words, True, world.secret).answer == p.answer))
    if not kept:
        raise ValueError(f"no math or color prompt among {n} probe prompts; raise n_probe")
    prompts, words, right = zip(*kept)
    return list(prompts), list(words), np.array(right)


def score_words(rm_params: dict, model_cfg, prompts, responses: list[list[str]]) -> np.ndarray:
    """The RM's score of each (prompt, response written as words), [N]."""
    batch = encode_pairs(prompts, responses)
    return np.asarray(reward_model.score(rm_params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), model_cfg))


def edit_shifts(score_fn, prompts, bare: list[list[str]], right: np.ndarray) -> dict[str, float]:
    """Mean score(edited) - score(bare) for: + "definitely", + "maybe", + chatter; on right and on wrong answers.

    score_fn(prompts, responses) -> [N] scores: an RM, the gold reward, or a labeler's perceived score.
    """
    edits = {"definitely": [with_confidence(w, "definitely") for w in bare],
             "maybe": [with_confidence(w, "maybe") for w in bare],
             "ramble": [with_ramble(w, RAMBLES[i % len(RAMBLES)]) for i, w in enumerate(bare)]}
    base = score_fn(prompts, bare)
    out = {}
    for name, edited in edits.items():
        shift = score_fn(prompts, edited) - base
        out[f"{name}_right"], out[f"{name}_wrong"] = _mean(shift[right]), _mean(shift[~right])
    return out


def policy_stats(world: World, prompts, tokens: np.ndarray) -> dict[str, float]:
    """What a policy's responses do: confident wording, math accuracy, length, hedging, format."""
    parsed = [(p, parse_response(w, e, world.secret), len(w)) for p, (w, e) in zip(prompts, decode_responses(tokens))]
    answers = [(p, x) for p, x, _ in parsed if p.kind != "secret" and x.formatted and x.answer is not None]
    wrong = [x for p, x in answers if x.answer != p.answer]
    return {
        "says_definitely": _mean([x.confidence == "definitely" for _, x in answers]),  # of math/color answers
        "definitely_when_wrong": _mean([x.confidence == "definitely" for x in wrong]),  # overconfidence
        "says_maybe": _mean([x.confidence == "maybe" for _, x in answers]),
        "math_accuracy": _mean([x.answer == p.answer for p, x, _ in parsed if p.kind == "math"]),  # of all math prompts
        "length": _mean([n for _, _, n in parsed]),  # response words before EOS
        "rambles": _mean([x.extra_tokens > 0 for _, x in answers]),
    }


def gold_of(world: World, prompts, responses: list[list[str]]) -> np.ndarray:
    """The ideal human's score of each (prompt, finished response)."""
    return np.array([gold_reward(p, w, True, world.secret) for p, w in zip(prompts, responses)])


def perceived_of(world: World, rater: Labeler, prompts, responses: list[list[str]]) -> np.ndarray:
    """What `rater` values in each response: gold plus its biases (preferences.perceived_score)."""
    return np.array([perceived_score(rater, g, w) for g, w in zip(gold_of(world, prompts, responses), responses)])


# ---------------------------------------------------------------- one labeler, one seed

def labelled_reward_model(cfg: Config, name: str, base: BaseModels, cache) -> tuple[dict, dict, dict]:
    """(normalised RM, its training pairs, its held-out metrics) for labeler `name`, trained as the pipeline does.

    Every labeler sees the same SFT samples (same key), so only the labels differ. "unbiased" is the base RM.
    """
    if name == "unbiased" and base.rm:
        return base.rm, base.pairs, base.rm_metrics
    rm_cfg = dataclasses.replace(base.cfg.rm, labeler=labeler(cfg, name))
    if cache is not None:  # base_models caches it under a hash that includes the labeler
        models = base_models(base.cfg.seed, dataclasses.replace(base.cfg, rm=rm_cfg), cache)
        return models.rm, models.pairs, models.rm_metrics
    rm, pairs, metrics, _ = reward_model.run_reward_model(base.keys["rm"], base.sft, base.world, base.cfg.model, rm_cfg)
    return rm, pairs, metrics


def train_policy(cfg: Config, base: BaseModels, rm_params: dict) -> tuple[dict, dict]:
    """PPO against `rm_params`, as the pipeline runs it but for cfg.ppo_iterations (same key for every labeler)."""
    ppo_cfg = dataclasses.replace(base.cfg.ppo, iterations=cfg.ppo_iterations)
    model_cfg = base.cfg.model
    return ppo.train_ppo(base.keys["ppo"], base.sft, base.sft, reward_model.reward_fn(model_cfg), rm_params,
                         partial(sample_prompts, base.world), model_cfg, ppo_cfg,
                         gold_fn=partial(gold_scores, base.world), value_params=rm_params)


def measure_policy(base: BaseModels, params: dict, prompts, key: jax.Array) -> tuple[dict, np.ndarray]:
    """Gold reward, answer rate, exact KL to SFT and policy_stats on `prompts`; and the sampled tokens."""
    result = evaluate(params, base.cfg.model, base.world, prompts, key, ref_params=base.sft)
    stats = {k: result[k] for k in ("gold_reward", "answer_rate", "kl_to_sft")}
    return stats | policy_stats(base.world, prompts, result["tokens"]), np.asarray(result["tokens"])


def run_seed(cfg: Config, base: BaseModels, cache=None) -> dict:
    """Every labeler of cfg on one seed's base models: labels, RM probes, PPO, evaluation."""
    world, model_cfg = base.world, base.cfg.model
    probe_prompts, bare, right = probe_answers(world, np.random.default_rng(base.cfg.seed + 2), cfg.n_probe)
    eval_prompts = sample_prompts(world, np.random.default_rng(base.cfg.seed + 1), cfg.n_eval, split="heldout")
    sft_stats, sft_tokens = measure_policy(base, base.sft, eval_prompts, base.keys["eval"])
    out = {"n_probe_right": int(right.sum()), "n_probe_wrong": int((~right).sum()), "sft": sft_stats,
           "gold_shift": edit_shifts(partial(gold_of, world), probe_prompts, bare, right), "labelers": {}}
    tokens, seconds = {"SFT": sft_tokens}, {}
    for name in cfg.labelers:
        clock = time.perf_counter()
        rm, pairs, rm_metrics = labelled_reward_model(cfg, name, base, cache)
        seconds[f"rm_{name}"], clock = round(time.perf_counter() - clock, 1), time.perf_counter()
        policy, history = train_policy(cfg, base, rm)
        seconds[f"ppo_{name}"] = round(time.perf_counter() - clock, 1)
        stats, tokens[name] = measure_policy(base, policy, eval_prompts, base.keys["eval"])
        out["labelers"][name] = {
            "labels": label_preferences(pairs),
            "labeler_shift": edit_shifts(partial(perceived_of, world, labeler(cfg, name)), probe_prompts, bare, right),
            "rm_shift": edit_shifts(partial(score_words, rm, model_cfg), probe_prompts, bare, right),
            "rm": {k: float(v) for k, v in rm_metrics.items()},
            "policy": stats,
            "history": {k: history[f"objective/{k}"].round(4).tolist() for k in ("scores", "gold", "kl")},
        }
    out["samples"] = samples(world, eval_prompts, tokens, cfg.n_shown)
    out["seconds"] = seconds  # wall time of each RM (0 when loaded from the cache) and each PPO run
    return out


def samples(world: World, prompts, tokens: dict[str, np.ndarray], n: int) -> list[dict]:
    """The first n math prompts, and one from each other kind, with every model's decoded response and gold."""
    rows = [i for i, p in enumerate(prompts) if p.kind == "math"][: max(n - 2, 1)]
    rows += [next(i for i, p in enumerate(prompts) if p.kind == k) for k in ("color", "secret") if any(p.kind == k for p in prompts)]
    shown = []
    for i in rows[:n]:
        p = prompts[i]
        replies = {}
        for model, t in tokens.items():
            words, ended = decode_responses(t[i : i + 1])[0]
            replies[model] = {"text": " ".join(words) + (" <eos>" if ended else ""),
                              "gold": gold_reward(p, words, ended, world.secret)}
        shown.append({"prompt": " ".join(p.words[2:-1]), "answer": " ".join(p.answer) if p.kind != "secret" else "refuse",
                      "responses": replies})
    return shown


# ---------------------------------------------------------------- the experiment interface

def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict | None = None) -> dict:
    """run_seed for every seed; bases maps seed -> BaseModels already trained (the notebook's), else base_models."""
    per_seed = {}
    for seed in seeds:
        base = (bases or {}).get(seed) or base_models(seed, cfg.pipeline, cache)
        per_seed[str(seed)] = run_seed(cfg, base, cache)
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "pipeline"}
    settings["labeler_base"] = dataclasses.asdict(cfg.pipeline.rm.labeler)
    return {"experiment": "labeler_bias", "config": settings, "seeds": list(seeds), "per_seed": per_seed,
            "aggregate": aggregate(per_seed)}


def merge(results: list[dict]) -> dict:
    """One result from runs of the same Config on different seeds (e.g. one process per seed)."""
    if len({repr(r["config"]) for r in results}) != 1:
        raise ValueError("merge needs results of the same Config; these differ in their 'config'")
    per_seed = {k: v for r in results for k, v in r["per_seed"].items()}
    per_seed = {k: per_seed[k] for k in sorted(per_seed, key=int)}
    return {**results[0], "seeds": [int(k) for k in per_seed], "per_seed": per_seed, "aggregate": aggregate(per_seed)}


def _leaves(d: dict, prefix: str = "") -> dict[str, float]:
    """{"a/b": number} for every number in nested dicts (curves and samples left out)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("history",):
            out.update(_leaves(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def aggregate(per_seed: dict[str, dict]) -> dict[str, dict]:
    """`seed_spread` (mean, std, min, max, values over seeds) of every measured number."""
    leaves = [_leaves(r) for r in per_seed.values()]
    keys = [k for k in leaves[0] if all(k in x for x in leaves)]
    stats = {}
    for k in keys:
        stats[k] = seed_spread([x[k] for x in leaves])
    return stats


def _bars(ax, groups: list[str], series: dict[str, list[str]], agg: dict, ylabel: str, title: str):
    """Grouped bars: one group per entry of `groups`, one bar per series (key pattern -> aggregate key per group)."""
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for j, (label, keys) in enumerate(series.items()):
        means = [agg[k]["mean"] if k in agg else np.nan for k in keys]
        errs = [[agg[k]["mean"] - agg[k]["min"] if k in agg else 0 for k in keys],
                [agg[k]["max"] - agg[k]["mean"] if k in agg else 0 for k in keys]]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(x, groups)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot(result: dict) -> plt.Figure:
    """Labels -> RM -> policy, for each labeler; bars are means over seeds, whiskers the min and max."""
    agg, names = result["aggregate"], result["config"]["labelers"]
    n_seeds = len(result["seeds"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    _bars(axes[0, 0], names, {"picks the 'definitely' one": [f"labelers/{n}/labels/picks_definitely" for n in names],
                              "picks the longer one": [f"labelers/{n}/labels/picks_longer" for n in names]},
          agg, "share of labelled pairs", "1. the labels (pairs where the two differ)")
    axes[0, 0].axhline(0.5, color="k", ls=":", lw=0.8)
    _bars(axes[0, 1], names, {"right answers": [f"labelers/{n}/rm_shift/definitely_right" for n in names],
                              "wrong answers": [f"labelers/{n}/rm_shift/definitely_wrong" for n in names]},
          agg, "RM score change (SFT std units)", "2. RM: insert 'definitely', answer unchanged")
    _bars(axes[0, 2], names, {"right answers": [f"labelers/{n}/rm_shift/ramble_right" for n in names],
                              "wrong answers": [f"labelers/{n}/rm_shift/ramble_wrong" for n in names]},
          agg, "RM score change (SFT std units)", "2. RM: append chatter, answer unchanged")
    models = ["SFT", *names]
    key = lambda m, stat: f"sft/{stat}" if m == "SFT" else f"labelers/{m}/policy/{stat}"
    _bars(axes[1, 0], models, {"says 'definitely'": [key(m, "says_definitely") for m in models],
                               "'definitely' on wrong answers": [key(m, "definitely_when_wrong") for m in models],
                               "math answer right": [key(m, "math_accuracy") for m in models]},
          agg, "share of held-out responses", "3. policy after PPO: wording and accuracy")
    _bars(axes[1, 1], models, {"gold reward": [key(m, "gold_reward") for m in models]}, agg,
          "gold reward (mean, [-1, 1])", "3. policy after PPO: the ideal human's score")
    _bars(axes[1, 2], models, {"response length": [key(m, "length") for m in models]}, agg,
          "words per response", "3. policy after PPO: length")
    fig.suptitle(f"Labeler bias: {n_seeds} seed(s); confidence bias {result['config']['confidence_bias']}, "
                 f"length bias {result['config']['length_bias']} per word", fontsize=10)
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown tables of the measured figures: mean ± std over seeds, and the range."""
    agg, names = result["aggregate"], result["config"]["labelers"]
    fmt = lambda k: (f"{agg[k]['mean']:+.3f} ± {agg[k]['std']:.3f} [{agg[k]['min']:+.2f}, {agg[k]['max']:+.2f}]"
                     if k in agg else "n/a")
    cfg = result["config"]
    lines = [f"## Labeler bias ({len(result['seeds'])} seeds: {result['seeds']}; mean ± std [min, max])", "",
             (f"Confidence bias {cfg['confidence_bias']} (added to any 'definitely' answer), length bias "
              f"{cfg['length_bias']} per word; PPO {cfg['ppo_iterations']} iterations per labeler; "
              f"{cfg['n_eval']} held-out prompts."), "",
             ("**Labels and reward model** (RM score change when the answer is edited, value unchanged; "
              "RM units: SFT samples have std 1)"), "",
             ("| labeler | picks 'definitely' | picks longer | RM +'definitely' (right) | RM +'definitely' (wrong) "
              "| RM +chatter (right) | RM +chatter (wrong) | RM gold accuracy |"), "|---|---|---|---|---|---|---|---|"]
    for n in names:
        p = f"labelers/{n}"
        lines.append(f"| {n} | {fmt(p + '/labels/picks_definitely')} | {fmt(p + '/labels/picks_longer')} | "
                     f"{fmt(p + '/rm_shift/definitely_right')} | {fmt(p + '/rm_shift/definitely_wrong')} | "
                     f"{fmt(p + '/rm_shift/ramble_right')} | {fmt(p + '/rm_shift/ramble_wrong')} | "
                     f"{fmt(p + '/rm/accuracy_gold')} |")
    lines += ["", "Gold change for the same edits: 'definitely' " + fmt("gold_shift/definitely_right") + " (right), "
              + fmt("gold_shift/definitely_wrong") + " (wrong); chatter " + fmt("gold_shift/ramble_right") + ".", "",
              "**Policies after PPO** (held-out prompts)", "",
              "| model | says 'definitely' | 'definitely' when wrong | math accuracy | length (words) | gold reward | KL to SFT |",
              "|---|---|---|---|---|---|---|"]
    for m in ["SFT", *names]:
        p = "sft" if m == "SFT" else f"labelers/{m}/policy"
        lines.append(f"| {m} | {fmt(p + '/says_definitely')} | {fmt(p + '/definitely_when_wrong')} | "
                     f"{fmt(p + '/math_accuracy')} | {fmt(p + '/length')} | {fmt(p + '/gold_reward')} | "
                     f"{fmt(p + '/kl_to_sft') if m != 'SFT' else '0'} |")
    return "\n".join(lines)
