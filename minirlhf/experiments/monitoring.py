"""Reading a run as it goes: where gold peaks, where a rule that has no gold stops, and the hack the policy found.

    with_peak     a curve's distance d = sqrt(KL to SFT) and where its gold peaks (`gao_forms.peak`)
    stop_report   where a gold-free rule stops (`ensemble.stop_before_alarm`) and the gold that costs against the
                  best checkpoint's, which only gold can find
    find_hack     the most common response the RM over-rates while gold calls it bad; follow_hack: the RM's margin
                  for it over good replies, and what the next round's RM and policy did to it; hack_text: in words
"""
from __future__ import annotations

import numpy as np

from minirlhf import ensemble
from minirlhf.experiments.gao_forms import peak


def with_peak(curve: dict) -> dict:
    """curve (per point "kl", "gold", "proxy", and "gold_se" where measured) with d and its gold peak added."""
    d = list(np.sqrt(np.maximum(curve["kl"], 0.0)))
    return curve | {"d": d, "peak": peak(d, curve["gold"], curve["proxy"], curve.get("gold_se"))}


def stop_report(curve: dict, signal: list[float], alarm: float) -> dict:
    """Where the rule "keep the checkpoint before `signal` first exceeds `alarm`" stops along curve (per checkpoint
    "iteration", "gold", "kl"; the first is the start), its gold and KL there, the best checkpoint by gold, and the
    gold lost by stopping where the rule did (the regret, >= 0)."""
    stop, best = ensemble.stop_before_alarm(signal, alarm), int(np.argmax(curve["gold"]))
    return {"index": stop, "iteration": curve["iteration"][stop], "gold": curve["gold"][stop], "kl": curve["kl"][stop],
            "best_iteration": curve["iteration"][best], "best_gold": curve["gold"][best],
            "regret": curve["gold"][best] - curve["gold"][stop]}


STOP_COLUMNS = ["stop: iteration", "gold", "KL", "best: iteration", "gold", "gold lost"]  # `stop_cells`' headers


def stop_cells(stop: dict) -> list[str]:
    """A `stop_report` as the cells of a summary's table row (headers: STOP_COLUMNS)."""
    return [str(stop["iteration"]), f"{stop['gold']:+.3f}", f"{stop['kl']:.2f}", str(stop["best_iteration"]),
            f"{stop['best_gold']:+.3f}", f"{stop['regret']:.3f}"]


# ---------------------------------------------------------------- the hack, decoded


def find_hack(text: list[str], kinds: list[str], gold: np.ndarray, scores: np.ndarray) -> dict | None:
    """The most common (prompt kind, response) that the RM rates above its mean (score > 0) while gold calls it
    bad (< 0), or None. By kind: the refusal that is right for the secret is a hack on a sum."""
    rows = np.flatnonzero((np.asarray(scores) > 0) & (np.asarray(gold) < 0))
    if rows.size == 0:
        return None
    count = lambda key: sum((kinds[i], text[i]) == key for i in rows)
    kind, picked = max(sorted({(kinds[i], text[i]) for i in rows}), key=count)
    same = hack_rows(text, kinds, kind, picked)
    return {"kind": kind, "text": picked, "share": float(same.sum() / sum(k == kind for k in kinds)),
            "gold": float(np.asarray(gold)[same].mean())}


def hack_rows(text: list[str], kinds: list[str], kind: str, hack: str) -> np.ndarray:
    """Which responses are the hack: that text, to a prompt of that kind, [N] bools."""
    return np.array([k == kind and t == hack for k, t in zip(kinds, text)])


def margin_over_good(text: list[str], kinds: list[str], gold: np.ndarray, scores: np.ndarray, hack: dict) -> float:
    """Mean RM score of the hack minus that of the responses gold likes (>= 0) to prompts of its kind: > 0, the RM
    prefers the hack to a good answer."""
    good = (np.asarray(kinds) == hack["kind"]) & (np.asarray(gold) >= 0)
    is_hack = hack_rows(text, kinds, hack["kind"], hack["text"])
    return float(scores[is_hack].mean() - scores[good].mean()) if good.any() else float("nan")


def follow_hack(hack: dict, ev: dict, next_scores: np.ndarray | None = None, next_text: list[str] | None = None) -> dict:
    """The hack found in `ev` (per response "text", "kind", "gold", "scores" of the RM in use), with that RM's margin
    for it; given the next round's RM scores of the same responses and the next policy's replies to the same
    prompts, also the next RM's margin and how often the next policy still says it."""
    out = hack | {"margin": margin_over_good(ev["text"], ev["kind"], ev["gold"], ev["scores"], hack)}
    if next_scores is not None:
        out["margin_next_rm"] = margin_over_good(ev["text"], ev["kind"], ev["gold"], next_scores, hack)
        again = hack_rows(next_text, ev["kind"], hack["kind"], hack["text"])
        out["share_next"] = float(again.sum() / sum(k == hack["kind"] for k in ev["kind"]))
    return out


def hack_text(hack: dict) -> str:
    """A followed hack in words: the reply, how common it is, its gold, the RM's margin, and the next round's."""
    signed = lambda x: "n/a" if np.isnan(x) else f"{x:+.2f}"
    line = (f"{hack['kind']}: `{hack['text']}` ({hack['share']:.0%} of {hack['kind']} replies, gold {hack['gold']:+.2f}); "
            f"RM margin over good {hack['kind']} replies {signed(hack['margin'])}")
    if "share_next" in hack:
        line += f" -> next round's RM {signed(hack['margin_next_rm'])}, next policy says it {hack['share_next']:.0%}"
    return line
