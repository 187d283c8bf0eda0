"""The reward-KL frontier (Rafailov et al. 2023, Fig. 2): how much gold each method buys per nat of KL.

Every way of using preferences trades reward against distance from the SFT model. A fair comparison puts
each method's runs on one plot, gold reward against KL(pi || pi_sft), and asks which reaches more gold at
the same KL. The DPO paper did this on IMDb sentiment with a known reward (their Fig. 2) and found DPO's
frontier above PPO's. Here, per seed and from the same SFT model, reward model and labelled pairs:

    PPO          a sweep over the KL coefficient beta (ppo.PPOConfig, the pipeline's other settings)
    DPO          a sweep over its beta (dpo.DPOConfig, the pipeline's lr 1e-4 and 200 steps)
    best-of-n    a sweep over n (best_of_n, against the pipeline's reward model)

PPO's and DPO's points: gold reward and exact KL (evaluation.sequence_kl) on held-out prompts' samples.
Best-of-n's: the unbiased best-of-n estimate of gold and the finite-support KL of
`toolkit.best_of_n_curves` (best-of-n has no parameters whose KL could be computed exactly).
One point per run and seed; the plot shows the mean over seeds with the spread as error bars.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt

from minirlhf import dpo
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import (best_of_n_curves, eval_prompts, fmt, measure, result, seed_bases,
                                          train_ppo)
from minirlhf.pipeline import PipelineConfig

METHODS = ("ppo", "dpo", "best_of_n")
COLORS = {"ppo": "tab:red", "dpo": "tab:green", "best_of_n": "tab:purple"}


@dataclass(frozen=True)
class Config:
    """The sweeps. Config() is the CLI's run, Config.small() the notebook's."""

    ppo_betas: tuple[float, ...] = (0.05, 0.2, 0.5)
    """PPO's fixed KL coefficients (the pipeline's is 0.2; 0.5 lands near DPO beta = 1's KL, for a like-for-like
    comparison). Three, so that the three-seed run stays near five minutes."""
    ppo_iterations: int = 60
    """PPO iterations per run (the pipeline runs 100; shortened so that three runs per seed fit the budget)."""
    dpo_betas: tuple[float, ...] = (0.1, 0.3, 1.0)
    """DPO's betas (the pipeline's is 0.3)."""
    dpo_steps: int = 200
    """DPO optimizer steps per run (the pipeline's)."""
    bon_ns: tuple[int, ...] = (1, 4, 16, 64)
    """Best-of-n's n values (n = 1 is SFT itself)."""
    bon_draws: int = 256
    """SFT samples per distinct held-out prompt from which best-of-n is estimated (>= max n)."""
    n_eval: int = 512
    """Held-out prompts every PPO and DPO policy answers (the pipeline's evaluation prompts)."""
    pipeline: PipelineConfig = PipelineConfig()
    """Every other setting, as the pipeline runs it."""

    def __post_init__(self):
        if not (self.ppo_betas or self.dpo_betas or self.bon_ns):
            raise ValueError("Config needs at least one PPO beta, DPO beta or best-of-n n")
        if min(self.ppo_betas, default=0) < 0 or min(self.dpo_betas, default=1) <= 0:
            raise ValueError("Config.ppo_betas must be >= 0 and dpo_betas > 0")
        if min(self.ppo_iterations, self.dpo_steps, self.n_eval) < 1:
            raise ValueError("Config.ppo_iterations, dpo_steps and n_eval must be >= 1")
        if self.bon_ns and (min(self.bon_ns) < 1 or max(self.bon_ns) > self.bon_draws):
            raise ValueError(f"Config.bon_ns must lie in [1, bon_draws={self.bon_draws}], got {self.bon_ns}")

    @classmethod
    def small(cls) -> Config:
        """The notebook's budget: two betas per method, shorter PPO and DPO, fewer prompts."""
        return cls(ppo_betas=(0.02, 0.2), ppo_iterations=40, dpo_betas=(0.3, 1.0), dpo_steps=150,
                   bon_ns=(1, 4, 16, 64), bon_draws=256, n_eval=256)


def ppo_point(cfg: Config, base: BaseModels, prompts, beta: float) -> dict:
    """Train PPO at this beta (the pipeline's other settings) and measure the final policy."""
    params, _ = train_ppo(base, dataclasses.replace(base.cfg.ppo, beta=beta, iterations=cfg.ppo_iterations))
    return measure(params, base, prompts)[0]


def dpo_point(cfg: Config, base: BaseModels, prompts, beta: float) -> dict:
    """Train DPO at this beta on the RM's labelled pairs (the pipeline's other settings) and measure it."""
    optim = dataclasses.replace(base.cfg.dpo.optim, steps=cfg.dpo_steps, warmup=min(base.cfg.dpo.optim.warmup, cfg.dpo_steps))
    params, _ = dpo.train_dpo(base.keys["dpo"], base.sft, base.pairs, base.cfg.model,
                              dataclasses.replace(base.cfg.dpo, beta=beta, optim=optim))
    return measure(params, base, prompts)[0]


def run_seed(cfg: Config, base: BaseModels) -> dict:
    """Every method's sweep for one seed's SFT model, reward model and pairs."""
    prompts = eval_prompts(base, cfg.n_eval)
    points = {"sft": measure(base.sft, base, prompts)[0]}
    points["ppo"] = {str(b): ppo_point(cfg, base, prompts, b) for b in cfg.ppo_betas}
    points["dpo"] = {str(b): dpo_point(cfg, base, prompts, b) for b in cfg.dpo_betas}
    points["best_of_n"] = {}
    if cfg.bon_ns:
        curve = best_of_n_curves(base, {"rm": base.rm}, prompts, cfg.bon_ns, cfg.bon_draws)["rm"]
        # max(k, 0): best-of-1 is SFT itself, whose estimated KL can come out a rounding error below 0
        points["best_of_n"] = {str(n): {"gold": g, "kl": max(k, 0.0), "proxy": p, "kl_bound": b,
                                        "coverage": curve["coverage"]}
                               for n, g, k, p, b in zip(curve["n"], curve["gold"], curve["kl"], curve["proxy"], curve["bound"])}
    return points


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict[int, BaseModels] | None = None) -> dict:
    """Run every seed; `bases` may hold already-trained base models by seed (a notebook passes its own)."""
    per_seed = {str(seed): run_seed(cfg, base) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    return result("frontier", cfg, per_seed, aggregate(per_seed))


def aggregate(per_seed: dict) -> dict:
    """Mean, std and range over seeds of gold and KL (and answer rate where measured) for every point; the front."""
    seeds = list(per_seed.values())
    out = {"sft": {k: seed_spread([s["sft"][k] for s in seeds]) for k in ("gold", "kl", "answer_rate")}}
    for method in METHODS:
        out[method] = {h: {k: seed_spread([s[method][h][k] for s in seeds]) for k in seeds[0][method][h]
                           if k in ("gold", "kl", "answer_rate", "proxy")} for h in seeds[0][method]}
    out["pareto"] = pareto_front(out)
    return out


def pareto_front(means: dict) -> list[dict]:
    """The points no other point beats on both axes (more mean gold at no more mean KL), by increasing KL."""
    points = [{"method": m, "setting": h, "gold": v["gold"]["mean"], "kl": v["kl"]["mean"]}
              for m in METHODS for h, v in means[m].items()]
    points.append({"method": "sft", "setting": "", "gold": means["sft"]["gold"]["mean"], "kl": 0.0})
    front = [p for p in points if not any(q["gold"] >= p["gold"] and q["kl"] <= p["kl"] and
                                          (q["gold"] > p["gold"] or q["kl"] < p["kl"]) for q in points)]
    return sorted(front, key=lambda p: p["kl"])


def best_within(means: dict, method: str, kl_budget: float) -> dict | None:
    """The method's point with the most mean gold among those with mean KL <= kl_budget."""
    inside = [(v["gold"]["mean"], h, v["kl"]["mean"]) for h, v in means[method].items() if v["kl"]["mean"] <= kl_budget]
    if not inside:
        return None
    gold, h, kl = max(inside)
    return {"setting": h, "gold": gold, "kl": kl}


SETTING = {"ppo": "beta", "dpo": "beta", "best_of_n": "n"}
LABEL = {"ppo": "PPO", "dpo": "DPO", "best_of_n": "best-of-n"}


def plot(result: dict) -> plt.Figure:
    """Gold reward against exact KL to SFT; one marker per run (mean over seeds, error bars: std), a line per method."""
    means, n_seeds = result["aggregate"], len(result["seeds"])
    fig, ax = plt.subplots(figsize=(8, 4.8))
    sft = means["sft"]["gold"]
    ax.errorbar([0], [sft["mean"]], yerr=[sft["std"]], fmt="s", color="tab:blue", ms=8, label="SFT", zorder=3)
    for method in METHODS:
        pts = sorted(means[method].items(), key=lambda kv: kv[1]["kl"]["mean"])
        if not pts:
            continue
        kl = [v["kl"]["mean"] for _, v in pts]
        gold = [v["gold"]["mean"] for _, v in pts]
        ax.errorbar(kl, gold, xerr=[v["kl"]["std"] for _, v in pts], yerr=[v["gold"]["std"] for _, v in pts],
                    fmt="o-", color=COLORS[method], capsize=2, label=LABEL[method])
        for (h, _), x, y in zip(pts, kl, gold):
            ax.annotate(f"{SETTING[method]}={h}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=COLORS[method])
    ax.set_xlabel("KL(policy || SFT), nats per response (exact for PPO/DPO, finite-support estimate for best-of-n)")
    ax.set_ylabel("gold reward (mean over held-out prompts)")
    one = f"seed {next(iter(result['seeds']))}"
    spread = f"mean over {n_seeds} seeds (bars: std across seeds)" if n_seeds > 1 else one
    ax.set_title(f"Reward-KL frontier, {spread}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown: every point (mean ± std over seeds), the Pareto front, and which method reaches most gold per KL."""
    means, seeds = result["aggregate"], list(result["seeds"])
    lines = [f"## Reward-KL frontier (seeds {', '.join(seeds)})", "",
             "| method | setting | gold (mean ± std [min, max]) | KL to SFT, nats | answer rate |", "|---|---|---|---|---|"]
    sft = means["sft"]
    lines.append(f"| SFT | | {fmt(sft['gold'], signed=True)} | 0 | {sft['answer_rate']['mean']:.1%} |")
    for method in METHODS:
        for h, v in sorted(means[method].items(), key=lambda kv: kv[1]["kl"]["mean"]):
            ans = f"{v['answer_rate']['mean']:.1%}" if "answer_rate" in v else "—"
            lines.append(f"| {LABEL[method]} | {SETTING[method]}={h} | {fmt(v['gold'], signed=True)} | "
                         f"{fmt(v['kl'], 2)} | {ans} |")
    front = means["pareto"]
    lines += ["", "**Pareto front** (mean over seeds; no other point has more gold at no more KL): "
              + ", ".join(f"{LABEL.get(p['method'], 'SFT')} {SETTING.get(p['method'], '')}"
                          f"{'=' if p['setting'] else ''}{p['setting']} (KL {p['kl']:.2f}, gold {p['gold']:+.3f})"
                          for p in front) + "."]
    counts = {m: sum(p["method"] == m for p in front) for m in METHODS}
    lines.append("Points on the front by method: " + ", ".join(f"{LABEL[m]} {c}" for m, c in counts.items()) + ".")
    lines += ["", "Best mean gold within a KL budget:", ""]
    budgets = sorted({round(v["kl"]["mean"], 2) for m in METHODS for v in means[m].values()})
    for budget in [b for b in (1.0, 2.0, 4.0, 8.0) if budgets and b <= max(budgets) * 2]:
        cells = []
        for m in METHODS:
            b = best_within(means, m, budget)
            cells.append(f"{LABEL[m]} " + ("none" if b is None else
                                           f"{b['gold']:+.3f} ({SETTING[m]}={b['setting']}, KL {b['kl']:.2f})"))
        lines.append(f"- KL <= {budget:g}: " + "; ".join(cells))
    return "\n".join(lines)
