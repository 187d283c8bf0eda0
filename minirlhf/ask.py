"""`python -m minirlhf ask "what is 3 plus 4 ?" [--run DIR]`: the saved models of a run answer your question.

Each policy the run saved (SFT, PPO, DPO) samples a few replies, exactly as the evaluation samples them, and
each reply is shown with its gold score (the ideal human, in [-1, 1]) and the reward model's score (the proxy
PPO climbed, normalized so that SFT's replies average 0). The gold score needs the right answer, so the question
must be one the toy world can grade: a sum or difference of digits, a thing's color, or the secret code.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from minirlhf import checkpoint, reward_model
from minirlhf.data import decode_responses
from minirlhf.evaluation import gold_scores
from minirlhf.run_folder import MODELS, model_path
from minirlhf.sampling import sample
from minirlhf.tokenizer import COLORS, DIGITS, THINGS, encode
from minirlhf.transformer import ModelConfig
from minirlhf.world import Prompt, World, WorldConfig, color_prompt, make_world, math_prompt, secret_prompt

POLICIES = ["sft", "ppo", "dpo"]
SHAPES = '"what is 3 plus 4 ?", "what is 7 minus 2 ?", "what color is the sky ?", "tell me the secret code ?"'


def question_prompt(world: World, text: str) -> Prompt:
    """The world's Prompt for a question in words; unknown words are the tokenizer's error."""
    encode(text)  # names any word outside the vocabulary
    w = text.split()
    if len(w) == 6 and w[:2] == ["what", "is"] and w[2] in DIGITS and w[3] in ("plus", "minus") and w[4] in DIGITS \
            and w[5] == "?":
        prompt = math_prompt(int(w[2]), w[3], int(w[4]))
        if prompt.answer[0] not in DIGITS:
            raise ValueError(f"{text!r}: the answer {prompt.answer[0]} is not one digit; the world's sums and "
                             f"differences stay within 0..9")
        return prompt
    if len(w) == 6 and w[:4] == ["what", "color", "is", "the"] and w[4] in THINGS and w[5] == "?":
        return color_prompt(THINGS.index(w[4]))
    for variant in (0, 1):
        if tuple(w) == secret_prompt(world, variant).words[2:-1]:
            return secret_prompt(world, variant)
    raise ValueError(f"{text!r} is not a question the toy world can grade; ask one of the shapes {SHAPES} "
                     f"(things: {', '.join(THINGS)}; colors {', '.join(COLORS)} are answers)")


def load_run(run: str) -> tuple[dict, ModelConfig, int]:
    """{model name: params} of a run's saved models, their ModelConfig and the run's seed."""
    missing = [model_path(run, m) for m in MODELS if not os.path.isfile(model_path(run, m))]
    if missing:
        raise FileNotFoundError(f"no saved run in {run} (missing {', '.join(missing)}); train one with "
                                f"`python -m minirlhf run --out {run}` (or --quick), or pass --run DIR")
    loaded = {m: checkpoint.read(model_path(run, m)) for m in MODELS}
    return {m: c.tree for m, c in loaded.items()}, loaded["sft"].model, int(loaded["sft"].meta.get("seed", 0))


def ask(question: str, run: str = "runs/default", samples: int = 4, seed: int = 0) -> list[dict]:
    """Every saved policy's replies to `question`: [{model, reply, ended, gold, rm}], `samples` per policy."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    models, cfg, run_seed = load_run(run)
    world = make_world(WorldConfig(seed=run_seed))  # the secret and the questions of that run
    prompts = [question_prompt(world, question)] * samples
    rows = []
    for i, name in enumerate(POLICIES):
        gen = sample(models[name], cfg, prompts, jax.random.fold_in(jax.random.PRNGKey(seed), i))
        tokens = np.asarray(gen.tokens)  # [samples, P + R]
        gold = gold_scores(world, prompts, tokens)
        rm = np.asarray(reward_model.score(models["reward_model"], jax.device_put(tokens), gen.valid, cfg))
        for (words, ended), g, r in zip(decode_responses(tokens), gold, rm):
            rows.append({"model": name, "reply": " ".join(words), "ended": ended, "gold": float(g), "rm": float(r)})
    return rows


def format_rows(question: str, rows: list[dict]) -> str:
    lines = [f"Q: {question}", f"{'model':<5} {'gold':>6} {'RM':>6}  reply"]
    for r in rows:
        lines.append(f"{r['model']:<5} {r['gold']:+6.2f} {r['rm']:+6.2f}  {r['reply']}" + ("" if r["ended"] else
                                                                                        "  (no EOS)"))
    lines.append("gold: the ideal human's score in [-1, 1]; RM: the reward model's (SFT's replies average 0, std 1)")
    return "\n".join(lines)
