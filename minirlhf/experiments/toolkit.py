"""What every experiment does the same way: train from the base models, measure a policy, best-of-n.

An experiment varies what comes after SFT; everything around that is here, once:
    eval_prompts, train_ppo, train_group   the pipeline's held-out prompts; RL from SFT against a reward model
    watched_ppo, checkpoints               PPO looked at along the way, at log-spaced iterations
    train_rm, rm_variant                   a reward model on given pairs, with the RM stage's keys; the RM stage
                                           run with other settings (more pairs, another labeler)
    measure                                gold ± standard error, exact KL to SFT, the proxy score, and the rates of
                                           `evaluation.behaviour` (the one reading of what a response does)
    bon_draws, bon_curve                   best-of-n's gold, proxy and KL for many n from one set of SFT draws
The result is written down by `report` (schema, spread over seeds, text, bars), re-exported here.

What a response does ("answered right", "says definitely", "refused", "leaked", and how a cut-off reply counts)
is read once, in `evaluation`; every experiment reads it from there.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import numpy as np
from jaxtyping import Float
from scipy.special import gammaln

from minirlhf import best_of_n as bon
from minirlhf import ensemble, grpo_rloo, ppo, reward_model
from minirlhf.data import decode_responses
from minirlhf.evaluation import behaviour, evaluate, gold_scores
from minirlhf.experiments.base import BaseModels, base_models
from minirlhf.experiments.report import at, bars, fmt, plain, result, spread_tree, table  # noqa: F401 (re-exported)
from minirlhf.sampling import sample
from minirlhf.world import Prompt, sample_prompts

# ---------------------------------------------------------------- prompts and training


def eval_prompts(base: BaseModels, n: int) -> list[Prompt]:
    """The held-out prompts the pipeline evaluates on for base's seed (drawn as `pipeline.run` draws them)."""
    return sample_prompts(base.world, np.random.default_rng(base.cfg.seed + 1), n, split="heldout")


def _rl_args(base: BaseModels, reward: tuple, start: dict | None = None, key: jax.Array | None = None) -> tuple:
    """What PPO, GRPO and RLOO all take: key, the start (default SFT) and SFT as reference, the reward, training
    prompts, model. key: default the pipeline's PPO key."""
    return (base.keys["ppo"] if key is None else key, base.sft if start is None else start, base.sft, *reward,
            partial(sample_prompts, base.world), base.cfg.model)


def _reward(base: BaseModels, rm: dict | None, reward: tuple | None) -> tuple:
    """(reward_fn, reward_params): `reward` when given (a verifier, the gold reward), else the RM `rm` (default the pipeline's)."""
    return reward or (reward_model.reward_fn(base.cfg.model), base.rm if rm is None else rm)


def train_ppo(base: BaseModels, ppo_cfg: ppo.PPOConfig, rm: dict | None = None, value_params: dict | None = None,
              on_iteration=None, reward: tuple | None = None, start: dict | None = None,
              key: jax.Array | None = None) -> tuple[dict, dict]:
    """PPO from SFT against `rm` (default the pipeline's), as the pipeline runs it: (policy, history).

    reward: (reward_fn, reward_params) to climb instead of an RM. value_params: the value model's start, by default
    the reward model (`rm`, or the pipeline's), as the pipeline does. start, key: a policy to continue from instead
    of SFT (the reference stays SFT) and PPO's key. The history logs the gold reward of the rollouts; the policy
    never sees it.
    """
    rm = base.rm if rm is None else rm
    return ppo.train_ppo(*_rl_args(base, _reward(base, rm, reward), start, key), ppo_cfg,
                         gold_fn=partial(gold_scores, base.world), value_params=rm if value_params is None else value_params,
                         on_iteration=on_iteration)


def train_group(base: BaseModels, group_cfg: grpo_rloo.GroupConfig, rm: dict | None = None,
                reward: tuple | None = None) -> tuple[dict, dict]:
    """GRPO or RLOO from SFT against `rm` (default the pipeline's) or `reward`, the same key and prompts as `train_ppo`."""
    return grpo_rloo.train_group(*_rl_args(base, _reward(base, rm, reward)), group_cfg,
                                 gold_fn=partial(gold_scores, base.world))


def checkpoints(iterations: int, count: int) -> list[int]:
    """About `count` log-spaced iterations in [1, iterations], always including the last."""
    return [int(i) for i in np.unique(np.round(np.geomspace(1, iterations, count)).astype(int))]


def watched_ppo(base: BaseModels, ppo_cfg: ppo.PPOConfig, count: int, look, start: dict, **train) -> tuple[dict, float]:
    """`train_ppo(base, ppo_cfg, **train)`, looked at with `look(params) -> figures` at `checkpoints(.., count)`.

    Returns one list per figure, SFT's figures (`start`) first as iteration 0, and the seconds PPO took without the
    looking.
    """
    marks, points, looking = set(checkpoints(ppo_cfg.iterations, count)), [{"iteration": 0, **start}], [0.0]

    def on_iteration(i: int, params: dict) -> None:
        if i in marks:
            t = time.perf_counter()
            points.append({"iteration": i, **look(params)})
            looking[0] += time.perf_counter() - t

    t = time.perf_counter()
    train_ppo(base, ppo_cfg, on_iteration=on_iteration, **train)
    return {k: [p[k] for p in points] for k in points[0]}, time.perf_counter() - t - looking[0]


def train_rm(base: BaseModels, key: jax.Array, pairs: dict, heldout: dict, rm_cfg: reward_model.RMConfig | None = None,
             policy: dict | None = None) -> dict:
    """A reward model on `pairs` from SFT's weights, normalised on `policy`'s samples (default SFT's), with the keys
    `reward_model.run_reward_model(key, ...)` trains and normalises with: only the pairs (or the policy) differ."""
    cfg = rm_cfg or base.cfg.rm
    params, _, _ = reward_model.train_reward_model(reward_model.rm_keys(key)["train"], base.sft, pairs, heldout,
                                                   base.cfg.model, cfg)
    samples = ensemble.normalization_samples(key, base.sft if policy is None else policy, base.world, base.cfg.model, cfg)
    return reward_model.normalize(params, *samples, base.cfg.model)


def rm_variant(base: BaseModels, rm_cfg: reward_model.RMConfig, cache) -> tuple[dict, dict, dict]:
    """(RM, its pairs, its held-out metrics): the reward-model stage run with `rm_cfg` instead of the pipeline's, on
    base's SFT with the stage's own key; from `cache` (whose record includes rm_cfg) when there is one."""
    if cache is not None:
        models = base_models(base.cfg.seed, dataclasses.replace(base.cfg, rm=rm_cfg), cache)
        return models.rm, models.pairs, models.rm_metrics
    rm, pairs, metrics, _ = reward_model.run_reward_model(base.keys["rm"], base.sft, base.world, base.cfg.model, rm_cfg)
    return rm, pairs, metrics


def check_counts(cfg, *fields: str) -> None:
    """Raise, naming the field, if any of cfg's counts `fields` (budgets, iterations, prompts) is below 1."""
    for field in fields:
        if getattr(cfg, field) < 1:
            raise ValueError(f"{type(cfg).__name__}.{field} must be >= 1, got {getattr(cfg, field)}")


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


def check_bon_ns(ns: tuple[int, ...], draws: int) -> None:
    """Best-of-n's n values must lie in [1, draws]: each is estimated from that many draws (`best_of_n_mean`)."""
    if not ns or min(ns) < 1 or max(ns) > draws:
        raise ValueError(f"Config.bon_ns must lie in [1, bon_draws={draws}], got {ns}")


def bon_draws(base: BaseModels, prompts: list[Prompt], draws: int, score) -> list[dict]:
    """Per distinct prompt of `prompts`: `draws` SFT samples (the "bon" key folded with the prompt's index) and what
    best-of-n needs of them: how often the prompt occurs, gold [M], log-probs [M], the distinct rows, the tokens
    [M, T] with their validity, and `score(gen)`: the reward models' scores of the samples, in whatever form the
    caller's curves read."""
    distinct: dict[tuple, list] = {}
    for p in prompts:
        distinct.setdefault(p.words, [p, 0])[1] += 1
    out = []
    for j, (prompt, count) in enumerate(distinct.values()):
        gen = sample(base.sft, base.cfg.model, [prompt] * draws, jax.random.fold_in(base.keys["bon"], j))
        tokens = np.asarray(gen.tokens)
        out.append({"prompt": prompt, "count": count, "gold": gold_scores(base.world, [prompt] * draws, tokens),
                    "logprobs": np.asarray(gen.logprobs).sum(axis=1), "keep": bon.distinct_responses(tokens),
                    "tokens": tokens, "valid": np.asarray(gen.valid), "scores": score(gen)})
    return out


def bon_curve(draws: list[dict], reward, ns: tuple[int, ...]) -> dict:
    """Best-of-n picking by `reward(draw["scores"]) -> [M]`, per n: gold and the reward of the pick (unbiased over
    the draws, `best_of_n_mean`), KL to SFT (`best_of_n.finite_best_of_n_kl` over the distinct draws); each
    prompt weighted by how often it occurs."""
    total = np.zeros((len(ns), 3))
    for dr in draws:
        r, keep = reward(dr["scores"]), dr["keep"]
        total += dr["count"] * np.array([[best_of_n_mean(r, dr["gold"], n), best_of_n_mean(r, r, n),
                                          bon.finite_best_of_n_kl(dr["logprobs"][keep], r[keep], n)] for n in ns])
    gold, proxy, kl = (total / sum(dr["count"] for dr in draws)).T
    return {"n": list(ns), "gold": list(gold), "proxy": list(proxy), "kl": list(kl)}


def rm_scores(base: BaseModels, rms: dict[str, dict]):
    """`bon_draws`' score: each reward model's scores of the samples, name -> [M]."""
    return lambda gen: {name: np.asarray(reward_model.score(rm, gen.tokens, gen.valid, base.cfg.model))
                        for name, rm in rms.items()}


def best_of_n_curves(base: BaseModels, rms: dict[str, dict], prompts: list[Prompt], ns: tuple[int, ...],
                     draws: int, found: list[dict] | None = None) -> dict:
    """`bon_curve` for every reward model of `rms` from one set of `bon_draws`, with the KL bound, the coverage (the
    SFT mass the distinct draws hold) and, per distinct prompt, the response the RM likes best and its gold.
    found: those draws, if the caller has made them (`bon_draws(base, prompts, draws, rm_scores(base, rms))`)."""
    found = found or bon_draws(base, prompts, draws, rm_scores(base, rms))
    total = sum(dr["count"] for dr in found)
    coverage = sum(dr["count"] * float(np.exp(dr["logprobs"][dr["keep"]]).sum()) for dr in found) / total
    top = {name: [int(np.argmax(dr["scores"][name])) for dr in found] for name in rms}
    return {name: bon_curve(found, lambda scores: scores[name], ns) | {
        "bound": [bon.kl_bound(n) for n in ns], "coverage": coverage,
        "favourites": {question(dr["prompt"]): (response_text(dr["tokens"][i:i + 1])[0], float(dr["gold"][i]))
                       for dr, i in zip(found, top[name])}} for name in rms}
