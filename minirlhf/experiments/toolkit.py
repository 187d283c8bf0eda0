"""What every experiment does the same way: train from the base models, measure a policy, shape the result.

An experiment varies what comes after SFT; everything around that is here, once:
    eval_prompts, train_ppo, train_group   the pipeline's held-out prompts; RL from SFT against a reward model
    measure                                gold ± standard error, exact KL to SFT, the proxy score, and the rates of
                                           `evaluation.behaviour` (the one reading of what a response does)
    best_of_n_curves                       best-of-n's gold, proxy and KL for many n from one set of SFT draws
    result, spread_tree, fmt, table, bars  the one result schema, its mean/std/min/max leaves, their text and bars

What a response does ("answered right", "says definitely", "refused", "leaked", and how a cut-off reply counts)
is read once, in `evaluation`; every experiment reads it from there.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import numpy as np
from jaxtyping import Float
from scipy.special import gammaln

from minirlhf import best_of_n as bon
from minirlhf import grpo_rloo, ppo, reward_model
from minirlhf.data import decode_responses
from minirlhf.evaluation import behaviour, evaluate, gold_scores
from minirlhf.sampling import sample
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels, base_models
from minirlhf.world import Prompt, sample_prompts

# ---------------------------------------------------------------- prompts and training


def eval_prompts(base: BaseModels, n: int) -> list[Prompt]:
    """The held-out prompts the pipeline evaluates on for base's seed (drawn as `pipeline.run` draws them)."""
    return sample_prompts(base.world, np.random.default_rng(base.cfg.seed + 1), n, split="heldout")


def _rl_args(base: BaseModels, reward: tuple) -> tuple:
    """What PPO, GRPO and RLOO all take: key, SFT as start and reference, the reward, training prompts, model."""
    return (base.keys["ppo"], base.sft, base.sft, *reward, partial(sample_prompts, base.world), base.cfg.model)


def _reward(base: BaseModels, rm: dict | None, reward: tuple | None) -> tuple:
    """(reward_fn, reward_params): `reward` when given (a verifier, the gold reward), else the RM `rm` (default the pipeline's)."""
    return reward or (reward_model.reward_fn(base.cfg.model), base.rm if rm is None else rm)


def train_ppo(base: BaseModels, ppo_cfg: ppo.PPOConfig, rm: dict | None = None, value_params: dict | None = None,
              on_iteration=None, reward: tuple | None = None) -> tuple[dict, dict]:
    """PPO from SFT against `rm` (default the pipeline's), as the pipeline runs it: (policy, history).

    reward: (reward_fn, reward_params) to climb instead of an RM. value_params: the value model's start, by default
    the reward model (`rm`, or the pipeline's), as the pipeline does. The history logs the gold reward of the
    rollouts; the policy never sees it.
    """
    rm = base.rm if rm is None else rm
    return ppo.train_ppo(*_rl_args(base, _reward(base, rm, reward)), ppo_cfg, gold_fn=partial(gold_scores, base.world),
                         value_params=rm if value_params is None else value_params, on_iteration=on_iteration)


def train_group(base: BaseModels, group_cfg: grpo_rloo.GroupConfig, rm: dict | None = None,
                reward: tuple | None = None) -> tuple[dict, dict]:
    """GRPO or RLOO from SFT against `rm` (default the pipeline's) or `reward`, the same key and prompts as `train_ppo`."""
    return grpo_rloo.train_group(*_rl_args(base, _reward(base, rm, reward)), group_cfg,
                                 gold_fn=partial(gold_scores, base.world))


def seed_bases(cfg, seeds, cache, bases: dict | None = None):
    """(seed, BaseModels) for each seed: from `bases` where given (a notebook's own models), else `base_models`."""
    for seed in seeds:
        yield seed, (bases or {}).get(seed) or base_models(seed, cfg.pipeline, cache)


def measure(params: dict, base: BaseModels, prompts: list[Prompt], rm: dict | None = None, model_cfg=None,
            kl: bool = True) -> tuple[dict, dict]:
    """Gold (mean and standard error), exact KL to SFT, proxy score and `behaviour` of `params` on `prompts`.

    Samples with the eval key, so every policy answers the same prompts with the same draws. rm: the proxy
    (default the pipeline's RM; none when the base models have none). model_cfg: params' model, if not the base
    one; kl=False skips the KL to SFT (it needs params of SFT's own shape).
    Returns (figures, `evaluation.evaluate`'s dict, which holds the tokens and per-response gold).
    """
    model_cfg = model_cfg or base.cfg.model
    ev = evaluate(params, model_cfg, base.world, prompts, base.keys["eval"], ref_params=base.sft if kl else None)
    out = {"gold": ev["gold_reward"], "gold_se": float(np.std(ev["gold"]) / np.sqrt(len(prompts)))}
    if kl:
        out["kl"] = ev["kl_to_sft"]
    rm = base.rm if rm is None else rm
    if rm:
        out["proxy"] = float(np.asarray(reward_model.score(rm, ev["tokens"], ev["valid"], base.cfg.model)).mean())
    return out | behaviour(base.world, prompts, ev["tokens"]), ev


def response_text(tokens: np.ndarray) -> list[str]:
    """Each response as text, ending in "<eos>" or, when cut off, "..."."""
    return [" ".join(w) + (" <eos>" if ended else " ...") for w, ended in decode_responses(np.asarray(tokens))]


def first_of_kinds(prompts: list[Prompt], counts: dict[str, int]) -> list[int]:
    """Indices of the first counts[kind] prompts of each kind, kind by kind: the prompts a result keeps to read."""
    return [i for kind, n in counts.items() for i in [j for j, p in enumerate(prompts) if p.kind == kind][:n]]


def question(prompt: Prompt) -> str:
    """The user's question, without the <bos> <user> ... <bot> frame."""
    return " ".join(prompt.words[2:-1])


# ---------------------------------------------------------------- best-of-n from a fixed set of draws


def best_of_n_mean(scores: Float[np.ndarray, " m"], values: Float[np.ndarray, " m"], n: int) -> float:
    """E[value of the pick] when best-of-n picks, by score, among n of these m draws; unbiased for n <= m.

    Sort the draws by score; the best of a random n-subset is the i-th smallest with probability
    C(i - 1, n - 1) / C(m, n) (the other n - 1 come from the i - 1 below it). Averaging over every subset
    instead of using the first n draws only (Nakano et al. 2021, app.; used by Gao et al. 2022) cuts the noise.
    """
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"best_of_n_mean needs 1 <= n <= {m} draws, got n = {n}")
    v = np.asarray(values, float)[np.argsort(scores, kind="stable")]
    i = np.arange(n, m + 1)  # ranks that can be the maximum
    log_w = (gammaln(i) - gammaln(n) - gammaln(i - n + 1)) - (gammaln(m + 1) - gammaln(n + 1) - gammaln(m - n + 1))
    return float(np.sum(np.exp(log_w) * v[n - 1:]))


def best_of_n_curves(base: BaseModels, rms: dict[str, dict], prompts: list[Prompt], ns: tuple[int, ...],
                     draws: int) -> dict:
    """Gold, proxy and KL to SFT of best-of-n for every n and every reward model, from one set of SFT draws.

    Each distinct prompt gets `draws` samples (the "bon" key); its figures are weighted by how often it occurs in
    `prompts`. KL: `best_of_n.finite_best_of_n_kl` over the distinct responses drawn (coverage: the SFT mass they
    hold). Also returns, per distinct prompt, the response each RM likes best among the draws.
    """
    distinct: dict[tuple, list] = {}
    for p in prompts:
        distinct.setdefault(p.words, [p, 0])[1] += 1
    sums = {name: np.zeros((3, len(ns))) for name in rms}
    coverage, favourites = 0.0, {name: {} for name in rms}
    for j, (prompt, count) in enumerate(distinct.values()):
        gen = sample(base.sft, base.cfg.model, [prompt] * draws, jax.random.fold_in(base.keys["bon"], j))
        tokens, logprobs = np.asarray(gen.tokens), np.asarray(gen.logprobs).sum(axis=1)  # [M, T], [M]
        gold = gold_scores(base.world, [prompt] * draws, tokens)  # [M]
        keep = bon.distinct_responses(tokens)
        coverage += count * float(np.exp(logprobs[keep]).sum())
        for name, rm in rms.items():
            scores = np.asarray(reward_model.score(rm, gen.tokens, gen.valid, base.cfg.model))  # [M]
            sums[name] += count * np.array([[best_of_n_mean(scores, gold, n) for n in ns],
                                            [best_of_n_mean(scores, scores, n) for n in ns],
                                            [bon.finite_best_of_n_kl(logprobs[keep], scores[keep], n) for n in ns]])
            top = int(np.argmax(scores))
            favourites[name][question(prompt)] = (response_text(tokens[top:top + 1])[0], float(gold[top]))
    total = sum(count for _, count in distinct.values())
    return {name: {"n": list(ns), "gold": list(s[0] / total), "proxy": list(s[1] / total), "kl": list(s[2] / total),
                   "bound": [bon.kl_bound(n) for n in ns], "coverage": coverage / total, "favourites": favourites[name]}
            for name, s in sums.items()}


# ---------------------------------------------------------------- the result: schema, spread, text


def result(name: str, cfg, per_seed: dict, aggregate: dict, **config) -> dict:
    """The one result schema: {"experiment", "config", "seeds": {seed: data}, "aggregate"}, as plain JSON types.

    config: settings to record beside cfg's own fields (the pipeline's are left out: they are the pipeline's).
    """
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "pipeline"}
    settings = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}
    return plain({"experiment": name, "config": settings | config, "seeds": per_seed, "aggregate": aggregate})


def plain(x):
    """numpy numbers -> Python numbers, tuples -> lists, all the way down: what json.dumps writes."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def spread_tree(trees: list[dict], skip: tuple[str, ...] = ()) -> dict:
    """Seeds' nested dicts -> one dict of the same shape whose number leaves are `seed_spread`s over the seeds.

    Keys in `skip`, keys some seed lacks, and anything that is not a number or a dict (texts, curves) are left out.
    """
    out = {}
    for k, v in trees[0].items():
        if k in skip or not all(k in t for t in trees):
            continue
        if isinstance(v, dict):
            out[k] = spread_tree([t[k] for t in trees], skip)
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
            out[k] = seed_spread([t[k] for t in trees])
    return out


def at(tree: dict, path: str):
    """tree["a"]["b"] for path "a/b", or None where the path is missing."""
    for k in path.split("/"):
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def fmt(s: dict | None, digits: int = 3, signed: bool = False) -> str:
    """A `seed_spread` as text, the one way every summary writes it: "mean ± std [min, max]" ("n/a" if missing).

    One seed has no spread to show, so it is written as its value alone (not as "± 0.000").
    """
    if s is None:
        return "n/a"
    sign = "+" if signed else ""
    if len(s.get("values", ())) == 1:
        return f"{s['mean']:{sign}.{digits}f}"
    return (f"{s['mean']:{sign}.{digits}f} ± {s['std']:.{digits}f} "
            f"[{s['min']:{sign}.{digits}f}, {s['max']:{sign}.{digits}f}]")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: the header, the rule under it, one line per row of cells."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in rows)]


def bars(ax, groups: list[str], series: dict[str, list[dict | None]], ylabel: str, title: str) -> None:
    """Grouped bars, one group per entry of `groups`, one bar per series: the mean over seeds, whiskers from the
    min to the max, a dot per seed. series: label -> one `seed_spread` per group (None: not measured)."""
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for j, (label, spreads) in enumerate(series.items()):
        pos = x + (j - (len(series) - 1) / 2) * width
        s = [sp or {"mean": np.nan, "min": np.nan, "max": np.nan, "values": []} for sp in spreads]
        mean = np.array([v["mean"] for v in s])
        ax.bar(pos, mean, width, yerr=[mean - [v["min"] for v in s], np.array([v["max"] for v in s]) - mean],
               capsize=3, label=label, alpha=0.8)
        for p, v in zip(pos, s):
            ax.scatter([p] * len(v["values"]), v["values"], s=8, color="k", zorder=3)
    ax.set_xticks(x, groups)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
