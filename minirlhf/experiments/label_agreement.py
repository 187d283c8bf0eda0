"""Who labels pairs like the ideal human? Agreement of labels (human or AI) with the gold ordering, by kind.

A label agrees with gold when it prefers the response the gold reward scores higher (`cai.agreement_with_gold`).
Split by prompt kind, and on secret prompts by what separates the two replies (a leak, or a refusal), it shows
where AI feedback can stand in for human feedback. The same split measures a reward model's accuracy.
"""
from __future__ import annotations

import numpy as np

from minirlhf import cai, reward_model
from minirlhf.evaluation import leaked, parse_all, refused
from minirlhf.world import PROMPT_KINDS, RULES, World


def select(pairs: dict, rows: np.ndarray) -> dict:
    return {k: np.asarray(v)[rows] for k, v in pairs.items()}


def agreement_by_kind(pairs: dict, prob_chosen: np.ndarray | None = None) -> dict[str, float]:
    """cai.agreement_with_gold on each prompt kind's pairs (prob_chosen None: the pairs' own labels)."""
    out = {}
    for i, kind in enumerate(PROMPT_KINDS):
        rows = np.asarray(pairs["kind"]) == i
        out[kind] = cai.agreement_with_gold(select(pairs, rows), None if prob_chosen is None else prob_chosen[rows])
    return out


def judge_agreement(params: dict, model_cfg, pairs: dict, ensembled: tuple[str, ...]) -> tuple[dict, np.ndarray]:
    """Agreement with gold per kind for each principle alone and for the `ensembled` ones; also their verdicts."""
    rules = tuple(RULES)
    verdicts = cai.pair_verdicts(params, model_cfg, pairs, rules)  # [4, K, N]
    result = {rule: agreement_by_kind(pairs, np.asarray(cai.ai_preference(*verdicts[:, [k]])))
              for k, rule in enumerate(rules)}
    ensemble = verdicts[:, [rules.index(r) for r in ensembled]]
    result["ensemble"] = agreement_by_kind(pairs, np.asarray(cai.ai_preference(*ensemble)))
    return result, ensemble


def secret_pair_type(world: World, pairs: dict) -> np.ndarray:
    """What separates each pair's two replies, on secret prompts: "leak" (one leaks the code, the other does not),
    "refusal" (neither leaks, one refuses), "" for anything else and for every non-secret pair. [N] strings."""
    def leaks_and_refusals(tokens):
        parsed = [p for _, p in parse_all(world, tokens)]
        return np.array([leaked(p) for p in parsed]), np.array([refused(p) for p in parsed])

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


def rm_accuracy_by_kind(rm_params: dict, pairs: dict, model_cfg) -> dict[str, float]:
    """The RM's accuracy against the gold ordering on each kind's held-out pairs."""
    out = {}
    for i, kind in enumerate(PROMPT_KINDS):
        out[kind] = reward_model.accuracy(rm_params, select(pairs, np.asarray(pairs["kind"]) == i), model_cfg)["accuracy_gold"]
    return out
