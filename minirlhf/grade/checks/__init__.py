"""The exercise manifest: which library function each exercise is, its points and where it is taught.

The library is the single source of truth. An exercise *is* a library function: `make_exercises`
copies its signature and docstring into `exercises/<stage>.py` (body: a NotImplementedError) and its
whole source into `solutions/<stage>.py`; the checks in `minirlhf/grade/checks/<stage>.py` compare a learner's
version against the library's on random and edge-case inputs.

This module imports nothing heavy (no jax), so the grader's parent process starts fast.
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Stage(NamedTuple):
    notebook: str  # where the stage is taught
    title: str  # one line, used in the generated module docstring


class Exercise(NamedTuple):
    name: str  # the function's name, in the library module and in exercises/<stage>.py
    library: str  # the module holding the reference implementation
    stage: str  # exercises/<stage>.py
    points: int
    section: str  # the notebook section that teaches it
    note: str = ""  # appended to the docstring when the library's own docstring lacks the equation


STAGES: dict[str, Stage] = {
    "transformer": Stage("notebooks/01_transformer_and_pretraining.ipynb", "Stage 1a, the transformer's layers"),
    "pretraining": Stage("notebooks/01_transformer_and_pretraining.ipynb",
                         "Stage 1b, scoring tokens and pretraining a language model"),
    "sft": Stage("notebooks/02_sft.ipynb", "Stage 2, supervised fine-tuning"),
    "reward_model": Stage("notebooks/03_reward_model.ipynb", "Stage 3, the reward model"),
    "ppo": Stage("notebooks/04_ppo.ipynb", "Stage 4, PPO"),
    "reward_hacking": Stage("notebooks/05_reward_hacking.ipynb",
                            "Stage 5, reward hacking: best-of-n's gold for every n, and where Gao et al.'s forms peak"),
    "labeler_bias": Stage("notebooks/06_labeler_bias.ipynb",
                          "Stage 6, labeler bias: what a scorer pays for an edit that keeps the answer"),
    "dpo": Stage("notebooks/07_dpo.ipynb", "Stage 7, direct preference optimization"),
    "best_of_n": Stage("notebooks/07_dpo.ipynb", "Stage 7b, best-of-n"),
    "optimum": Stage("notebooks/07_dpo.ipynb", "Stage 7c, the exact KL-regularised optimum"),
    "cai": Stage("notebooks/08_constitutional_ai.ipynb", "Stage 8, Constitutional AI: labels from the model itself"),
    "grpo_rloo": Stage("notebooks/09_beyond.ipynb", "Stage 9, critic-free policy gradients: GRPO and RLOO"),
    "rlvr": Stage("notebooks/10_verifiable_rewards.ipynb", "Stage 10, verifiable rewards: a checker and pass@k"),
}

EXERCISES: tuple[Exercise, ...] = (
    # ---- transformer
    Exercise("layer_norm", "minirlhf.transformer", "transformer", 1, "Layer norm",
             "y = g * (x - mean(x)) / sqrt(var(x) + LN_EPS) + b, mean and (biased) variance over the last axis."),
    Exercise("causal_valid", "minirlhf.transformer", "transformer", 2, "The attention mask"),
    Exercise("attention", "minirlhf.transformer", "transformer", 3, "Attention"),
    Exercise("ffn", "minirlhf.transformer", "transformer", 1, "The MLP",
             "ffn(x) = linear(gelu(linear(x, c_fc)), c_proj), with GPT-2's tanh-approximated GELU (jax.nn.gelu)."),
    # ---- pretraining
    Exercise("token_logprobs", "minirlhf.ops", "pretraining", 3, "Token log-probs and the shift"),
    Exercise("masked_mean", "minirlhf.ops", "pretraining", 1, "Masked means"),
    Exercise("lm_loss", "minirlhf.pretrain", "pretraining", 2, "The language-model loss",
             'Returns (loss, {"perplexity": exp(loss)}); the logits come from '
             "transformer.forward(params, batch['tokens'], batch['valid'], cfg)."),
    Exercise("sample_token", "minirlhf.sampling", "pretraining", 2, "Sampling a token",
             "token = argmax(logits / T + gumbel) over the top_k largest logits when sample_cfg.top_k is set; "
             "its log-prob is read from log_softmax(logits / T), the full distribution (top-k ignored)."),
    # ---- SFT
    Exercise("response_mask", "minirlhf.data", "sft", 1, "Scoring only the response"),
    # ---- reward model
    Exercise("preference_prob", "minirlhf.preferences", "reward_model", 1, "Simulated labelers",
             "p = sigmoid((score_a - score_b) / labeler.temperature), then flip noise with f = labeler.flip_prob:\n"
             "P = (1 - f) p + f (1 - p)."),
    Exercise("last_index", "minirlhf.reward_model", "reward_model", 2, "Reading the score at the last token"),
    Exercise("reward", "minirlhf.reward_model", "reward_model", 2, "Reading the score at the last token"),
    Exercise("bradley_terry", "minirlhf.reward_model", "reward_model", 2, "The Bradley-Terry loss"),
    # ---- PPO
    Exercise("kl_estimate", "minirlhf.ppo_losses", "ppo", 2, "KL estimators"),
    Exercise("kl_shaped_rewards", "minirlhf.ppo_losses", "ppo", 3, "Per-token rewards with a KL penalty"),
    Exercise("gae", "minirlhf.ppo_losses", "ppo", 4, "Generalized advantage estimation"),
    Exercise("masked_whiten", "minirlhf.ops", "ppo", 2, "Whitening the advantages"),
    Exercise("policy_loss", "minirlhf.ppo_losses", "ppo", 3, "The clipped policy loss"),
    Exercise("value_loss", "minirlhf.ppo_losses", "ppo", 2, "The clipped value loss"),
    Exercise("adaptive_kl_controller", "minirlhf.ppo_losses", "ppo", 2, "The adaptive KL controller"),
    Exercise("exact_kl", "minirlhf.ops", "ppo", 2, "Measuring KL exactly"),
    Exercise("minibatch_rows", "minirlhf.policy_gradient", "ppo", 2, "Training",
             "Returns [minibatches, batch_size / minibatches] row indices: a random order of the n_prompts "
             "groups (jax.random.permutation), split into cfg.minibatches equal parts, each group g standing for "
             "its rows g * group_size + j, j = 0 .. group_size - 1 (with group_size = 1, a shuffle of the rows)."),
    Exercise("update_epochs", "minirlhf.policy_gradient", "ppo", 3, "Training",
             "For each of cfg.ppo_epochs epochs, with its own key from jax.random.split(key, cfg.ppo_epochs): "
             "for each row set of minibatch_rows(key_epoch, cfg), one `update` step. Returns the final state "
             "and, per metric, the mean over all ppo_epochs * minibatches steps as a Python float."),
    # ---- reward hacking
    Exercise("best_of_n_mean", "minirlhf.experiments.toolkit", "reward_hacking", 2,
             "Best-of-n, for every n at once"),
    Exercise("fit_rl", "minirlhf.experiments.gao_forms", "reward_hacking", 2,
             "Gold and proxy against $\\sqrt{\\mathrm{KL}}$, with the functional forms",
             "d and gain are [k] (a curve's checkpoints, the first usually d = 0); returns (alpha, beta) as Python "
             "floats, by least squares (np.linalg.lstsq) on the features (d, -d log d), natural log, d log d = 0 at d = 0."),
    Exercise("form_peak", "minirlhf.experiments.gao_forms", "reward_hacking", 2,
             "Gold and proxy against $\\sqrt{\\mathrm{KL}}$, with the functional forms",
             "form is \"bon\" or \"rl\"; set dR/dd = 0. A form with beta <= 0 never falls: float('inf'). (The "
             "library caps the RL exponent at 50 so exp cannot overflow; the check stays below that.)"),
    # ---- labeler bias
    Exercise("edit_shifts", "minirlhf.experiments.answer_probes", "labeler_bias", 2,
             "What did the reward model learn? Edit the answer, keep the value",
             "bare: [N] answers as word lists, none with a confidence word or chatter; right: [N] bool. The edits are "
             "with_confidence(w, \"definitely\"), with_confidence(w, \"maybe\") and, for answer i, "
             "with_ramble(w, RAMBLES[i % len(RAMBLES)]). Keys \"definitely_right\", \"definitely_wrong\", "
             "\"maybe_right\", ..., \"ramble_wrong\": the mean shift (evaluation.share) over right / wrong answers."),
    # ---- DPO
    Exercise("sequence_logprobs", "minirlhf.dpo", "dpo", 2, "Sequence log-probs"),
    Exercise("preference_loss", "minirlhf.dpo", "dpo", 3, "The DPO, cDPO and IPO losses",
             "dpo:  -log sigmoid(beta h)\n"
             "cdpo: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), eps = label_smoothing\n"
             "ipo:  (h - 1 / (2 beta))^2\n"
             "One loss per pair, shape [batch]; an unknown loss_type raises ValueError."),
    # ---- best-of-n
    Exercise("kl_bound", "minirlhf.best_of_n", "best_of_n", 1, "How far can best-of-n move?"),
    Exercise("finite_best_of_n_kl", "minirlhf.best_of_n", "best_of_n", 3, "How far can best-of-n move?",
             "pi(y) = exp(logprobs), renormalised to sum to 1. With F(s) = P(score <= s) and F_-(s) = P(score < s), "
             "the best of n draws lands on score level s with probability F(s)^n - F_-(s)^n, shared among the "
             "responses with that score in proportion to pi:\n"
             "q(y) = (F(s)^n - F_-(s)^n) pi(y) / P(score = s),   KL = sum_y q(y) log(q(y) / pi(y)) over q(y) > 0."),
    # ---- the exact optimum
    Exercise("log_weights", "minirlhf.optimum", "optimum", 2, "The exact optimum: what each method leaves on the table",
             "logprobs: log pi_sft(y|x) of the k distinct responses (NumPy float64; they may hold less than all of "
             "SFT's mass), rewards: r(x, y) of each, both [k]. Returns log pi*_beta(y|x), [k] float64, whose "
             "exponentials sum to 1; beta <= 0 raises ValueError."),
    # ---- Constitutional AI
    Exercise("verdict_logprobs", "minirlhf.cai", "cai", 2, "Asking the model for a verdict",
             "tokens: judge prompts ending in \"verdict :\", LEFT-padded to a common width; logits come from "
             "transformer.forward(params, tokens, valid, cfg). Returns log p(good) and log p(bad) of the next "
             "token, [batch] each (GOOD_ID and BAD_ID are the two words' token ids)."),
    Exercise("ai_preference", "minirlhf.cai", "cai", 2, "From verdicts to a preference"),
    Exercise("best_critiqued", "minirlhf.cai", "cai", 2,
             "The experiment: SL-CAI and RLAIF against human-only RLHF",
             "tokens, valid: [N * k, T] NumPy arrays, scores: [N * k] (critique's score of each row); "
             "\"changed\" is True where the revision is not the first sample."),
    # ---- GRPO / RLOO
    Exercise("group_advantages", "minirlhf.grpo_rloo", "grpo_rloo", 2, "2. GRPO and RLOO: the group is the baseline"),
    Exercise("leave_one_out_advantages", "minirlhf.grpo_rloo", "grpo_rloo", 2,
             "2. GRPO and RLOO: the group is the baseline"),
    # ---- RLVR
    Exercise("exact_match", "minirlhf.verifiers", "rlvr", 2, "2. Three checkers, read from the tokens",
             "read_prompts gives each row's prompt kind and the token id of its right value (a op b for a sum); "
             "parse_tokens reads each reply as world.parse_response does (pass jnp.full(3, NO_WORD) as the secret: "
             "a leak is not this checker's business). A reply counts when it is formatted (EOS came, no special "
             "token after the answer) and its one-word value is the right one; returns float32 [batch]."),
    Exercise("pass_at_k", "minirlhf.evaluation", "rlvr", 2, "4. pass@k: sharpen or teach?",
             "It needs 0 <= c <= n and 1 <= k <= n (else ValueError). When fewer than k samples are wrong, every "
             "k-subset holds a right one: pass@k is 1."),
)

BY_NAME: dict[str, Exercise] = {e.name: e for e in EXERCISES}
assert len(BY_NAME) == len(EXERCISES), "two exercises share a name"
assert all(e.stage in STAGES for e in EXERCISES), "an exercise names an unknown stage"

MAX_SCORE = sum(e.points for e in EXERCISES)


def stage_exercises(stage: str) -> list[Exercise]:
    return [e for e in EXERCISES if e.stage == stage]


def notebook_pointer(ex: Exercise) -> str:
    """Where the exercise is taught, in words: 'notebooks/04_ppo.ipynb, section "GAE"'."""
    return f'{STAGES[ex.stage].notebook}, section "{plain_text(ex.section)}"'


def plain_text(heading: str) -> str:
    """A heading's LaTeX as plain text, "$\\sqrt{\\mathrm{KL}}$" -> "sqrt(KL)", for the stubs' docstrings (where a
    backslash would be read as an escape)."""
    text = re.sub(r"\\mathrm\{([^{}]*)\}", r"\1", heading)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    return text.replace("$", "").replace("\\", "")


def select(names: list[str] | None) -> list[Exercise]:
    """Exercises by exercise or stage name (None: all), in manifest order; unknown names raise KeyError."""
    if not names:
        return list(EXERCISES)
    unknown = [n for n in names if n not in BY_NAME and n not in STAGES]
    if unknown:
        raise KeyError(f"unknown exercise or stage {unknown}; exercises: {', '.join(BY_NAME)}; "
                       f"stages: {', '.join(STAGES)}")
    return [e for e in EXERCISES if e.name in names or e.stage in names]
