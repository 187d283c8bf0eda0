"""The RLVR experiment end to end on untrained tiny models: every method runs, the result has the one schema, the
jittable checker agrees with the toolkit's reading of the same samples, the answer probe reads the right place, and
the plot and summary draw."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import ppo, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, encode_pairs
from minirlhf.experiments import rlvr
from minirlhf.experiments.base import BaseModels
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.tokenizer import TOKEN_ID, VOCAB_SIZE
from minirlhf.world import make_world, math_prompt, pretraining_corpus

SMALL = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16,
                                n_layers=1, n_heads=2, d_mlp=32)


@pytest.fixture(scope="module")
def base():
    lm = transformer.init_params(jax.random.PRNGKey(3), SMALL)
    rm = {"lm": lm, "head": transformer.init_scalar_head(jax.random.PRNGKey(4), SMALL)}
    pipeline = PipelineConfig(model=SMALL, ppo=ppo.PPOConfig(minibatches=2, ppo_epochs=1))
    return BaseModels(pipeline, make_world(), stage_keys(0), lm, lm, rm, {}, {})


@pytest.fixture(scope="module")
def run_and_kept(base):
    cfg = rlvr.Config(iterations=2, batch_size=8, group_size=2, n_eval=16, n_scale=16, pass_samples=4, n_shown=2,
                      pipeline=base.cfg)
    kept = {}
    return rlvr.run(cfg, seeds=(0,), cache=None, bases={0: base}, keep=kept), kept, cfg


@pytest.fixture(scope="module")
def result(run_and_kept):
    return run_and_kept[0]


def policies(seed: dict) -> dict:
    """A seed's figures for each policy (SFT and the trained ones), without the pretrained model's probe."""
    return {name: figures for name, figures in seed.items() if name != "pretrained"}


def test_every_method_is_measured_in_the_one_schema(result):
    json.dumps(result)  # plain data only
    assert set(result) == {"experiment", "config", "seeds", "aggregate"} and result["experiment"] == "rlvr"
    seed = result["seeds"]["0"]
    assert set(seed) == {"sft", "pretrained", *rlvr.METHODS}
    assert 0 <= seed["pretrained"]["knows"] <= 1
    for name, figures in policies(seed).items():
        for key in ("gold", "gold_se", "kl", "strict_pass", "lax_pass", "plus_only_pass", "games_minus",
                    "sure_train", "sure_heldout"):
            assert key in figures, f"{name} lacks {key}"
        assert len(figures["pass_at_k"]) == len(result["config"]["ks"]) == 3  # k = 1, 2, 4 from n = 4
        assert figures["pass_at_k"] == sorted(figures["pass_at_k"]), f"{name}: pass@k cannot fall as k grows"
    assert len(seed["plus_ppo"]["hack"]["common"]) <= 2 and len(seed["rm_ppo"]["gold_curve"]) == 2
    assert result["aggregate"]["rlvr_ppo"]["pass_at_k"][0]["values"] == [seed["rlvr_ppo"]["pass_at_k"][0]]


def test_kept_policies_are_the_ones_measured(run_and_kept, base):
    """run(keep=...) hands back each trained policy; measured again, each gives the gold the result reports."""
    from minirlhf.experiments.toolkit import eval_prompts, measure
    result, kept, cfg = run_and_kept
    assert set(kept) == {0} and set(kept[0]) == set(rlvr.METHODS)
    prompts = eval_prompts(base, cfg.n_eval)
    for method, params in kept[0].items():
        assert measure(params, base, prompts)[0]["gold"] == result["seeds"]["0"][method]["gold"], method
        moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(base.sft))]
        assert any(moved), f"{method}: the kept params are SFT's, not the trained policy's"


def test_the_jittable_checker_counts_what_the_toolkit_counts(result):
    for name, figures in policies(result["seeds"]["0"]).items():
        assert figures["strict_pass"] == pytest.approx(figures["per_kind"]["math"]["right"]), (
            f"{name}: exact_match and evaluation.answered_right read the same samples and must agree")


def test_plot_and_summary_draw(result, tmp_path):
    import matplotlib.pyplot as plt
    fig = rlvr.plot(result)
    fig.savefig(tmp_path / "plot.png", dpi=40)
    plt.close(fig)
    assert (tmp_path / "plot.png").stat().st_size > 1000
    text = rlvr.summary(result)
    assert "RLVR" in text and "pass@k" in text and "plus-only checker" in text


def test_answer_probs_reads_the_digit_right_after_it_is(base):
    questions = list(base.world.heldout_math[:5])
    prompts = [math_prompt(*q) for q in questions]
    batch = encode_pairs(prompts, [["it", "is", "0", "."]] * len(prompts))
    logits = transformer.forward(base.sft, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), SMALL).logits
    after_it_is = np.asarray(jax.nn.softmax(logits[:, PROMPT_WIDTH + 1], axis=-1))  # [Q, V]: the word after "it is"
    want = after_it_is[np.arange(len(prompts)), [TOKEN_ID[p.answer[0]] for p in prompts]]
    np.testing.assert_allclose(rlvr.answer_probs(base.sft, SMALL, questions), want, rtol=1e-4, err_msg=(
        "answer_probs must be the probability of the right digit as the word right after 'it is'"))


def test_the_knowledge_probe_asks_in_the_corpus_own_qa_format():
    world = make_world()
    docs = [" ".join(d) for d in pretraining_corpus(world, np.random.default_rng(0), 300)]
    quiz = rlvr.QUIZ.removeprefix("<bos> ").format(3, "plus", 4).split("3 plus 4")  # the text around the sum
    assert any(quiz[0] in d and quiz[1] in d for d in docs), (
        f"rlvr.QUIZ ({rlvr.QUIZ!r}) must ask a sum the way pretraining's Q&A pages do, or the probe measures a format "
        "the model never saw")
