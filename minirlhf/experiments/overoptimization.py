"""Reward over-optimization (Gao, Schulman & Hilton 2022): the proxy keeps rising, the gold reward turns back.

The reward model is a proxy for the ideal human, fitted to a few thousand noisy labels. Optimise it hard
enough and the policy finds responses the proxy over-rates. Gao et al. measured the gold reward gained over
the initial policy, R, as a function of the distance travelled, d = sqrt(KL(pi || pi_init)), and found

    best-of-n:  R_bon(d) = d (alpha_bon - beta_bon d)          (Gao et al. 2022, eq. 1)
    RL (PPO):   R_RL(d)  = d (alpha_RL - beta_RL log d)        (Gao et al. 2022, eq. 2)

both of which rise, peak and fall, while the proxy score keeps rising. Here the gold reward is the toy
world's ideal human (gold.py), the proxy is the pipeline's reward model, and per seed we measure:
  1. PPO with beta = 0 (no KL penalty) against the pipeline's reward model, at
     log-spaced checkpoints on held-out prompts: gold, proxy, the exact KL to SFT (evaluation.sequence_kl),
     and what the responses do (how often an answerable question is refused, answered right, ...);
  2. best-of-n for n = 1..256 from one set of SFT draws per distinct held-out prompt: the pick's gold and
     proxy by the unbiased estimator `toolkit.best_of_n_mean`, its KL by best_of_n.finite_best_of_n_kl;
  3. whether the peak moves: PPO with a KL penalty (beta > 0), and best-of-n against reward models trained
     on fewer or more labelled pairs.
Both functional forms are fitted to the gold curve by least squares (`gao_forms.fit_bon`, `fit_rl`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.gao_forms import bon_form, fit_bon, fit_rl, form_peak, rl_form
from minirlhf.experiments.monitoring import with_peak
from minirlhf.experiments.report import SEED_STYLES, fmt, per_seed_lines, result, table
from minirlhf.experiments.toolkit import best_of_n_mean  # noqa: F401 (notebook 05 reads oo.best_of_n_mean)
from minirlhf.experiments.toolkit import (best_of_n_curves, check_bon_ns, check_counts, eval_prompts, first_of_kinds,
                                          measure, question, response_text, rm_variant, seed_bases, watched_ppo)
from minirlhf.pipeline import PipelineConfig
from minirlhf.world import PROMPT_KINDS, Prompt


@dataclass(frozen=True)
class Config:
    """What to optimise against the proxy, and for how long. Config() is the CLI's run, Config.small() the notebook's."""

    ppo_runs: tuple[tuple[float, float], ...] = ((0.0, 3e-4), (0.1, 3e-4))
    """PPO runs as (beta, learning rate). The first is the over-optimization run the RL form is fitted to
    (beta = 0: no KL penalty; 3e-4 is the pipeline's lr); the others show what a KL penalty (or a smaller
    step) changes. Add (0.0, 1e-4) to see whether a smaller step delays the hack or avoids it."""
    ppo_iterations: int = 100
    """PPO iterations per run (as many as the pipeline's run; the hack shows within the first tens)."""
    n_checkpoints: int = 12
    """Log-spaced PPO iterations at which the policy is evaluated (SFT itself is the point d = 0)."""
    n_eval: int = 256
    """Held-out prompts every checkpoint answers (the same prompts and sampling key each time)."""
    bon_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    """Best-of-n's n values; all are computed from the same draws."""
    bon_draws: int = 1024
    """SFT samples per distinct held-out prompt, from which best-of-n (n <= bon_draws) is estimated."""
    rm_pairs: tuple[int, ...] = (500, 6000)
    """Extra reward models, by number of labelled pairs (the pipeline's has 2000), for best-of-n only."""
    n_shown: int = 6
    """Prompts whose responses the result keeps for reading (two of each kind)."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the reward model and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        if not self.ppo_runs or any(len(r) != 2 or r[0] < 0 or r[1] <= 0 for r in self.ppo_runs):
            raise ValueError(f"Config.ppo_runs must be a non-empty tuple of (beta >= 0, lr > 0), got {self.ppo_runs}")
        check_counts(self, "ppo_iterations", "n_checkpoints", "n_eval", "bon_draws")
        check_bon_ns(self.bon_ns, self.bon_draws)
        if any(k < 1 for k in self.rm_pairs):
            raise ValueError(f"Config.rm_pairs must be >= 1, got {self.rm_pairs}")

    @classmethod
    def small(cls) -> Config:
        """The notebook's budget: shorter PPO, n up to 128, no extra reward models."""
        return cls(ppo_iterations=60, n_checkpoints=10, bon_ns=(1, 2, 4, 8, 16, 32, 64, 128), bon_draws=512,
                   rm_pairs=())


# ---------------------------------------------------------------- PPO, measured along the way


def measure_shown(params: dict, base: BaseModels, prompts: list[Prompt], shown: list[int]) -> dict:
    """`toolkit.measure` of params, with the responses to the `shown` prompts kept for reading."""
    stats, ev = measure(params, base, prompts)
    return stats | {"samples": [(t, float(g)) for t, g in zip(response_text(ev["tokens"][shown]), ev["gold"][shown])]}


def run_name(beta: float, lr: float) -> str:
    return f"beta={beta:g} lr={lr:g}"


def ppo_curve(cfg: Config, base: BaseModels, prompts: list[Prompt], shown: list[int], beta: float, lr: float,
              start: dict) -> dict:
    """PPO at this beta and lr from SFT against the pipeline's RM, measured at `checkpoints`; `start` is SFT's measure."""
    ppo_cfg = dataclasses.replace(base.cfg.ppo, beta=beta, iterations=cfg.ppo_iterations, lr=lr)
    curve, _ = watched_ppo(base, ppo_cfg, cfg.n_checkpoints, lambda p: measure_shown(p, base, prompts, shown), start)
    return with_peak(curve)


# ---------------------------------------------------------------- one seed, many seeds


def run_seed(cfg: Config, base: BaseModels, cache=None) -> dict:
    """Everything for one seed's base models (SFT, the pipeline's RM); extra RMs come from `cache`."""
    seed = base.cfg.seed
    prompts = eval_prompts(base, cfg.n_eval)
    shown = first_of_kinds(prompts, {kind: 2 for kind in PROMPT_KINDS})[:cfg.n_shown]
    start = measure_shown(base.sft, base, prompts, shown)
    runs = {run_name(beta, lr): ppo_curve(cfg, base, prompts, shown, beta, lr, start) for beta, lr in cfg.ppo_runs}
    main = str(base.cfg.rm.n_pairs)  # the pipeline's RM, named like the others by its number of pairs
    rms, rm_accuracy = {main: base.rm}, {main: base.rm_metrics.get("accuracy_gold")}
    for k in sorted(set(cfg.rm_pairs) - {base.cfg.rm.n_pairs}):
        rm, _, metrics = rm_variant(base, dataclasses.replace(base.cfg.rm, n_pairs=k), cache)
        rms[str(k)], rm_accuracy[str(k)] = rm, metrics.get("accuracy_gold")
    curves = {name: with_peak(c) | {"rm_accuracy_gold": rm_accuracy[name]}
              for name, c in best_of_n_curves(base, rms, prompts, cfg.bon_ns, cfg.bon_draws).items()}
    main_bon, main_rl = curves[main], runs[run_name(*cfg.ppo_runs[0])]
    fits = {}
    for form, curve, fit in (("bon", main_bon, fit_bon), ("rl", main_rl, fit_rl)):
        alpha, beta = fit(np.array(curve["d"]), np.array(curve["gold"]) - curve["gold"][0])
        fits[form] = {"alpha": alpha, "beta": beta, "d_peak": form_peak(form, alpha, beta), "gold_0": curve["gold"][0]}
    return {"seed": seed, "rm_pairs": main, "prompts_shown": [question(prompts[i]) for i in shown], "ppo": runs,
            "bon": curves, "fits": fits}


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache", bases: dict[int, BaseModels] | None = None) -> dict:
    """Run every seed; `bases` may hold already-trained base models by seed (a notebook passes its own)."""
    per_seed = {str(seed): run_seed(cfg, base, cache) for seed, base in seed_bases(cfg, seeds, cache, bases)}
    return result("overoptimization", cfg, per_seed, aggregate(per_seed, cfg))


def aggregate(per_seed: dict, cfg: Config) -> dict:
    """Across seeds: each curve's peak, its fall, the proxy at the end, and the fitted peaks (mean, std, range)."""
    out = {}
    curves = {f"ppo {run_name(*r)}": [s["ppo"][run_name(*r)] for s in per_seed.values()] for r in cfg.ppo_runs}
    curves |= {f"bon {k} pairs": [s["bon"][k] for s in per_seed.values()] for k in next(iter(per_seed.values()))["bon"]}
    for name, runs in curves.items():
        peaks = [r["peak"] for r in runs]
        out[name] = {k: seed_spread([p[k] for p in peaks]) for k in ("d_peak", "kl_peak", "gold_peak", "gold_end", "drop",
                                                                "proxy_at_peak", "proxy_end")}
        out[name]["gold_falls"] = sum(p["drop"] > 2 * p.get("drop_se", 0.0) and p["peak_inside"] for p in peaks)
        out[name]["proxy_rises"] = sum(p["proxy_end"] > p["proxy_at_peak"] for p in peaks)
        out[name]["seeds"] = len(peaks)
    for form in ("bon", "rl"):
        fits = [s["fits"][form] for s in per_seed.values()]
        out[f"fit {form}"] = {k: seed_spread([f[k] for f in fits]) for k in ("alpha", "beta", "d_peak")}
    return out


# ---------------------------------------------------------------- plot and summary

HACK_FIGURES = ("gold", "proxy", "kl", "refuses_answerable", "right_answerable", "definitely", "answer_rate", "words")


def plot(result: dict) -> plt.Figure:
    """Gold (top) and proxy (bottom) against d = sqrt(KL): best-of-n and PPO, fits dashed; RM size and beta compared."""
    seeds = list(result["seeds"].values())
    main, runs = seeds[0]["rm_pairs"], list(seeds[0]["ppo"])
    rm_names = sorted(seeds[0]["bon"], key=int)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for s, r in enumerate(seeds):
        label = f"seed {r['seed']}"
        for col, (form, curve, fit_fn) in enumerate((("bon", r["bon"][main], bon_form),
                                                     ("rl", r["ppo"][runs[0]], rl_form))):
            d, fit = np.array(curve["d"]), r["fits"][form]
            ax = axes[0, col]
            ax.plot(d, curve["gold"], "o" + SEED_STYLES[s % 4], color=colors[s], ms=4, label=f"{label}: gold")
            grid = np.linspace(0, d.max(), 100)
            ax.plot(grid, fit["gold_0"] + fit_fn(grid, fit["alpha"], fit["beta"]), color=colors[s], lw=2.5, alpha=0.35,
                    label=f"{label}: fit, alpha {fit['alpha']:.2f} beta {fit['beta']:.2f}")
            axes[1, col].plot(d, curve["proxy"], "o" + SEED_STYLES[s % 4], color=colors[s], ms=4, label=label)
    for k, name in enumerate(rm_names):  # best-of-n against reward models of several sizes
        per_seed_lines(axes[0, 2], [r["bon"][name] for r in seeds], "d", "gold", f"best-of-n, RM on {name} pairs",
                       color=colors[k + 3])
    for k, name in enumerate(runs[1:]):  # PPO with a KL penalty (or a smaller lr)
        for row, y in enumerate(("gold", "proxy")):
            per_seed_lines(axes[row, 1], [r["ppo"][name] for r in seeds], "d", y, f"PPO {name}", "s", color=colors[k + 6])
    for k, name in enumerate(rm_names):
        axes[1, 2].plot(seeds[0]["bon"][name]["n"], seeds[0]["bon"][name]["gold"], "o-", color=colors[k + 3],
                        label=f"RM on {name} pairs (seed {seeds[0]['seed']})")
    axes[1, 2].set_xscale("log", base=2)
    sizes = "a weaker or stronger RM" if len(rm_names) > 1 else "one RM (Config.rm_pairs adds more)"
    titles = [f"best-of-n (RM on {main} pairs)", f"PPO, {runs[0]} (circles) and other runs (squares)",
              f"best-of-n: {sizes}"]
    for col in range(3):
        axes[0, col].set_title(titles[col], fontsize=10)
        axes[0, col].set_ylabel("gold reward (mean, [-1, 1])")
        axes[0, col].legend(fontsize=6)
    for col in range(2):
        axes[0, col].set_xlabel("d = sqrt(KL to SFT), sqrt(nats)")
        axes[1, col].set_ylabel("proxy: RM score (SFT: mean 0, std 1)")
        axes[1, col].set_xlabel("d = sqrt(KL to SFT), sqrt(nats)")
        axes[1, col].legend(fontsize=6)
    axes[0, 2].set_xlabel("d = sqrt(KL to SFT), sqrt(nats)")
    axes[1, 2].set_xlabel("n (best of n)")
    axes[1, 2].set_ylabel("gold reward (mean)")
    axes[1, 2].legend(fontsize=6)
    fig.suptitle("Reward over-optimization: the proxy climbs, the gold reward peaks and falls "
                 "(Gao et al. 2022 forms fitted, thick faint lines)", fontsize=11)
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown: per-seed peaks, the claim checked across seeds, the fits, and samples past the peak."""
    seeds, agg = list(result["seeds"].values()), result["aggregate"]
    n = len(seeds)
    lines = [f"## Reward over-optimization ({n} seed{'s' if n > 1 else ''}: {', '.join(str(s['seed']) for s in seeds)})", "",
             ("Gold = the ideal human, proxy = the reward model; d = sqrt(exact KL to SFT). Per curve: where gold "
              "peaks, what it ends at, and the proxy at the gold peak vs at the end."), ""]
    rows = []
    for r in seeds:
        named = [(f"PPO {name}", c) for name, c in r["ppo"].items()]
        named += [(f"best-of-n, RM {k} pairs" + ("" if c["rm_accuracy_gold"] is None else
                                                  f" (acc. {c['rm_accuracy_gold']:.3f})"), c)
                  for k, c in sorted(r["bon"].items(), key=lambda kv: int(kv[0]))]
        for name, c in named:
            p = c["peak"]
            rows.append([name, str(r["seed"]), f"{p['d_peak']:.2f} (KL {p['kl_peak']:.2f})",
                         f"{c['gold'][0]:+.3f} -> {p['gold_peak']:+.3f} -> {p['gold_end']:+.3f} (d {p['d_end']:.2f})",
                         f"{p['proxy_at_peak']:+.2f} -> {p['proxy_end']:+.2f}"])
    lines += table(["curve", "seed", "d at gold peak", "gold: SFT -> peak -> end", "proxy: at peak -> end"], rows)
    lines += ["", ("**Across seeds** (mean ± std [min, max]); 'gold falls' counts seeds whose gold peaks inside the "
                   "curve and ends lower by more than 2 standard errors (PPO) or at all (best-of-n, computed from the "
                   "same draws):"), ""]
    for name, a in agg.items():
        if name.startswith("fit"):
            continue
        lines.append(f"- {name}: peak at d = {fmt(a['d_peak'], 2)}, gold at peak {fmt(a['gold_peak'], 2)}, at the end "
                     f"{fmt(a['gold_end'], 2)}; gold falls in {a['gold_falls']}/{a['seeds']} seeds, the proxy ends above its "
                     f"value at the gold peak in {a['proxy_rises']}/{a['seeds']}.")
    lines += ["", "**Fits** (least squares on gold gained over SFT):", ""]
    for form, eq in (("bon", "R_bon(d) = d(alpha - beta d)"), ("rl", "R_RL(d) = d(alpha - beta log d)")):
        f = agg[f"fit {form}"]
        per = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(f["alpha"]["values"], f["beta"]["values"]))
        lines.append(f"- {eq}: alpha/beta per seed {per}; fitted peak d* = "
                     + ", ".join(f"{x:.2f}" for x in f["d_peak"]["values"]))
    first = seeds[0]
    rl = first["ppo"][next(iter(first["ppo"]))]
    i_peak = int(np.argmax(rl["gold"]))
    lines += ["", (f"**What the hack looks like** (seed {first['seed']}, PPO {next(iter(first['ppo']))}): at the gold "
                   f"peak (iteration {rl['iteration'][i_peak]}) vs the end (iteration {rl['iteration'][-1]}):"), "",
              *table(["", "SFT", "gold peak", "end"],
                     [[k, *(f"{rl[k][i]:.3f}" for i in (0, i_peak, -1))] for k in HACK_FIGURES]), "",
              *table(["prompt", "SFT", "at the gold peak", "at the end"],
                     [[prompt, *(f"{rl['samples'][i][j][0]} ({rl['samples'][i][j][1]:+.1f})" for i in (0, i_peak, -1))]
                      for j, prompt in enumerate(first["prompts_shown"])])]
    return "\n".join(lines)
