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
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import dpo, optimum
from minirlhf.evaluation import gold_scores
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import (at, best_of_n_curves, bon_draws, eval_prompts, fmt, measure, result,
                                          rm_scores, seed_bases, spread_tree, table, train_ppo)
from minirlhf.pipeline import PipelineConfig
from minirlhf.world import PROMPT_KINDS

REWARDS = ("rm", "gold")  # the two rewards pi* is computed for
LABEL = {"rm": "optimum of the RM", "gold": "optimum of gold", "ppo": "PPO", "dpo": "DPO", "best_of_n": "best-of-n",
         "sft": "SFT"}
COLORS = {"rm": "tab:orange", "gold": "black", "ppo": "tab:red", "dpo": "tab:green", "best_of_n": "tab:purple",
          "sft": "tab:blue"}


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


def gold_at_kl(curve: dict, kl: float, kl_key: str = "kl") -> float:
    """The gold of an optimum curve at this KL, read off the beta sweep by linear interpolation (KL falls as beta
    grows); beyond the sweep's ends, the end value. kl_key "kl_restricted": the curve of the policies on the support."""
    points = sorted((v[kl_key], v["gold"]) for v in curve.values())
    return float(np.interp(kl, [k for k, _ in points], [g for _, g in points]))


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


# ---------------------------------------------------------------- plot and summary


def plot(result: dict) -> plt.Figure:
    """Gold against KL to SFT: both optimum curves (mean over seeds per beta, a thin line per seed; dotted: the same
    weights as policies on the support, at their exact KL) and the methods' points (mean over seeds, bars: std);
    a star marks the RM's optimum at PPO's beta."""
    agg, seeds = result["aggregate"], list(result["seeds"].values())
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name in REWARDS:
        for s in seeds:
            pts = sorted((v["kl"], v["gold"]) for v in s["curves"][name].values())
            ax.plot(*zip(*pts), color=COLORS[name], lw=0.6, alpha=0.35)
        pts = sorted((v["kl"]["mean"], v["gold"]["mean"], b) for b, v in agg["curves"][name].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=COLORS[name], lw=2, label=f"{LABEL[name]} (π*)")
        pts = sorted((v["kl_restricted"]["mean"], v["gold"]["mean"]) for v in agg["curves"][name].values())
        ax.plot(*zip(*pts), ":", color=COLORS[name], lw=1.2, label=f"{LABEL[name]}, as a policy on the support")
    for method in ("sft", "ppo", "dpo"):
        g, k = agg[method]["gold"], agg[method].get("kl", {"mean": 0.0, "std": 0.0})
        ax.errorbar([k["mean"]], [g["mean"]], xerr=[k["std"]], yerr=[g["std"]], fmt="s" if method == "sft" else "o",
                    color=COLORS[method], ms=7, capsize=2, label=LABEL[method], zorder=3)
    if agg.get("best_of_n"):
        pts = sorted((v["kl"]["mean"], v["gold"]["mean"]) for v in agg["best_of_n"].values())
        ax.plot(*zip(*pts), "^--", color=COLORS["best_of_n"], label="best-of-n (n = " + ", ".join(agg["best_of_n"]) + ")")
    star = agg["optimum_at_ppo_beta"]
    ax.plot([star["kl"]["mean"]], [star["gold"]["mean"]], "*", ms=14, color=COLORS["rm"], zorder=4,
            label=f"optimum of the RM at PPO's beta = {seeds[0]['ppo']['beta']:g}")
    ax.set_xlabel("KL(policy || SFT), nats per response (the optimum's and best-of-n's on the sampled support)")
    ax.set_ylabel("gold reward (mean over held-out prompts)")
    ax.set_title(f"The KL-regularised optimum π* ∝ π_sft·exp(r/β), mean over {len(seeds)} seed(s); "
                 f"SFT mass covered {agg['coverage']['mean']['mean']:.0%}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown: both curves over beta (mean ± std over seeds), coverage, PPO against its own optimum and the split
    of its gap to the ideal (each seed and the spread), and where DPO and best-of-n sit."""
    agg, per_seed = result["aggregate"], result["seeds"]
    names = list(per_seed)
    cover, gold = agg["coverage"], agg["sft_gold"]
    lines = [f"## The exact KL-regularised optimum (seeds {', '.join(names)})", "",
             f"Support: {fmt(agg['support'], 1)} distinct responses per prompt from {result['config']['draws']} SFT "
             f"draws each. SFT mass covered: {fmt(cover['mean'])}; lowest prompt {fmt(cover['min'])}; by kind "
             + ", ".join(f"{k} {cover[k]['mean']:.3f}" for k in PROMPT_KINDS if k in cover) + ".",
             "", f"SFT's gold: {fmt(gold['drawn'], signed=True)} over the draws (best-of-1's), "
             f"{fmt(gold['on_support'], signed=True)} on the support renormalised (both curves' limit as beta grows), so the "
             f"unseen rest of SFT's mass scores {fmt(gold['unseen'], signed=True)}: the curves' left ends sit "
             f"{'above' if gold['on_support']['mean'] > gold['drawn']['mean'] else 'below'} SFT's point by what "
             "renormalising leaves out. As policies that never leave the support, the same weights are exact: their "
             "KL is log(1/c) more (kl_restricted; dotted in the plot).",
             "", "### π* over beta (mean ± std [min, max] over seeds; KL to SFT renormalised on the support)", ""]
    rows = [[b, *(fmt(agg["curves"][n][b][k], d, signed=k == "gold") for n in REWARDS for k, d in (("gold", 3), ("kl", 2)))]
            for b in agg["curves"]["rm"]]
    lines += table(["beta", "RM's π*: gold", "RM's π*: KL", "gold's π*: gold", "gold's π*: KL"], rows)
    lines += ["", "### PPO against the optimum of its own objective J = E[RM] − β KL, and its gap to the ideal", ""]
    rows = [[label, *(f"{at(per_seed[s], path):{'' if d == 2 else '+'}.{d}f}" for s in names),
             fmt(at(agg, path), d, signed=d != 2)] for label, path, d in COMPARED]
    lines += table(["", *(f"seed {s}" for s in names), "mean ± std [min, max]"], rows)
    lines += ["", "### Where each method sits beside the curves (means over seeds)", ""]
    points = {LABEL[m]: agg[m] for m in ("sft", "ppo", "dpo")} | {f"best-of-{n}": v for n, v in agg["best_of_n"].items()}
    curve = {name: {b: {k: s["mean"] for k, s in v.items()} for b, v in agg["curves"][name].items()} for name in REWARDS}
    rows = [[label, fmt(v["gold"], signed=True), fmt(v["kl"], 2),
             *(f"{gold_at_kl(curve[name], v['kl']['mean']):+.3f}" for name in REWARDS)] for label, v in points.items()]
    lines += table(["method", "gold", "KL to SFT", "RM's π* at that KL: gold", "gold's π* at that KL: gold"], rows)
    return "\n".join(lines)


COMPARED = (  # (row label, path in a seed's data, digits): PPO beside the optimum; KLs are the rows of 2 digits
    ("PPO: RM score", "ppo/proxy", 3), ("π*_RM at PPO's β: RM score", "optimum_at_ppo_beta/reward", 3),
    ("PPO: KL (exact)", "ppo/kl", 2), ("π*_RM at PPO's β: KL (support renormalised)", "optimum_at_ppo_beta/kl", 2),
    ("π*_RM at PPO's β: KL (as a policy on the support, exact)", "optimum_at_ppo_beta/kl_restricted", 2),
    ("PPO: J", "gap/objective_ppo", 3), ("π*_RM at PPO's β: J = β log Z", "gap/objective_optimum", 3),
    ("π*_RM at PPO's β on the support: J = β log(c Z), a lower bound", "gap/objective_optimum_restricted", 3),
    ("PPO: gold", "ppo/gold", 3), ("π*_RM at PPO's β: gold", "optimum_at_ppo_beta/gold", 3),
    ("π*_RM at PPO's KL: gold", "gap/gold_optimum_of_rm_at_ppo_kl", 3),
    ("π*_gold at PPO's KL: gold", "gap/gold_optimum_of_gold_at_ppo_kl", 3),
    ("lost to the reward model: π*_gold − π*_RM at PPO's KL", "gap/lost_to_rm", 3),
    ("lost to the optimizer: π*_RM − PPO at PPO's KL", "gap/lost_to_optimizer", 3),
    ("the same two, the optima as policies on the support: to the RM", "gap/lost_to_rm_restricted", 3),
    ("... to the optimizer", "gap/lost_to_optimizer_restricted", 3))
