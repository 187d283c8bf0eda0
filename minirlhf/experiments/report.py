"""How every experiment writes its result down: one schema, one spread over seeds, one text for it, one way to draw it.

    result, plain       the one result schema {"experiment", "config", "seeds", "aggregate"}, as plain JSON types
    merge               one result from several runs of the same config on different seeds
    spread_tree, at     seeds' nested dicts -> the same tree with `seed_spread` leaves; a leaf by its path
    fmt, table          a spread as "mean ± std [min, max]"; markdown table lines
    bars, spread_line   the mean over seeds, whiskers from the min to the max, as grouped bars or as a line
    per_seed_lines      one line per seed of a curve, the seed told by the line style
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minirlhf.experiments import seed_spread


def result(name: str, cfg, per_seed: dict, aggregate: dict, **config) -> dict:
    """The one result schema: {"experiment", "config", "seeds": {seed: data}, "aggregate"}, as plain JSON types.

    config: settings to record beside cfg's own fields (the pipeline's are left out: they are the pipeline's).
    """
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "pipeline"}
    settings = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}
    return plain({"experiment": name, "config": settings | config, "seeds": per_seed, "aggregate": aggregate})


def merge(results: list[dict], aggregate) -> dict:
    """One result from results of the same config on different seeds (e.g. one process per seed), its aggregate
    made again by `aggregate(per_seed)`."""
    if len({repr(r["config"]) for r in results}) != 1:
        raise ValueError("merge needs results of the same Config; these differ in their 'config'")
    per_seed = {k: v for r in results for k, v in r["seeds"].items()}
    per_seed = {k: per_seed[k] for k in sorted(per_seed, key=int)}
    return {**results[0], "seeds": per_seed, "aggregate": aggregate(per_seed)}


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


def fmt(s: dict | None, digits: int = 3, signed: bool = False, unit: str = "") -> str:
    """A `seed_spread` as text, the one way every summary writes it: "mean ± std [min, max]" ("n/a" if missing).

    One seed has no spread to show, so it is written as its value alone (not as "± 0.000"); a figure that is the
    same on every seed at the digits shown (SFT's KL to itself) is written once, with "on every seed". `unit`
    ("%") follows the figure: "40 ± 5 [35, 45]%", "40% on every seed".
    """
    if s is None:
        return "n/a"
    sign = "+" if signed else ""
    if len(s.get("values", ())) == 1:
        return f"{s['mean']:{sign}.{digits}f}{unit}"
    low, high = (f"{s[k]:{sign}.{digits}f}" for k in ("min", "max"))
    if low == high:
        return f"{low}{unit} on every seed"
    return (f"{s['mean']:{sign}.{digits}f} ± {s['std']:.{digits}f} "
            f"[{s['min']:{sign}.{digits}f}, {s['max']:{sign}.{digits}f}]{unit}")


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


def spread_line(ax, x, spreads: list[dict], **style) -> None:
    """One `seed_spread` per x: the mean over seeds as a line, whiskers from the min to the max (as `bars` draws)."""
    mean, lo, hi = (np.array([s[k] for s in spreads]) for k in ("mean", "min", "max"))
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3, **style)


SEED_STYLES = ("-", "--", ":", "-.")  # line style of seed 0, 1, 2, 3 (then again)


def per_seed_lines(ax, curves: list[dict], x: str, y: str, label: str | None, marker: str = "o", ms: float = 3,
                   **style) -> None:
    """curve[y] against curve[x] for each seed's curve, the seed told by the line style; labelled once."""
    for s, curve in enumerate(curves):
        ax.plot(curve[x], curve[y], marker + SEED_STYLES[s % len(SEED_STYLES)], ms=ms, label=label if s == 0 else None,
                **style)
