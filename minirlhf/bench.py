"""Speed check: one training step and one `generate` call, against a PyTorch eager baseline.

    python -m minirlhf.bench [--json]

Ours is the library's own training step (`training.make_step` on pretraining's loss) and `sampling.generate`.
The baseline is nanoGPT's model at the same size (pre-LN, tied embeddings, same dims): a training step with
gradient clipping and AdamW, and generation the way nanoGPT's `generate` does it, re-running the whole sequence
for every new token (no KV cache). Torch is optional; without it only our numbers are printed. The first call of
each of ours is timed apart: how long jax spent compiling it (reading it back, when the compilation cache has it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from minirlhf import keep_freed_memory
from minirlhf.compile_cache import CompileClock, describe, enable_compile_cache
from minirlhf.pretrain import lm_loss
from minirlhf.sampling import SampleConfig, generate
from minirlhf.training import OptimConfig, init_state, make_optimizer, make_step
from minirlhf.transformer import ModelConfig, init_params

BATCH, SEQ_LEN = 64, 48  # training batch
N_PROMPTS, PROMPT_WIDTH, NEW_TOKENS = 64, 16, 24  # generation
REPEATS = 20
ROUNDS = 5  # the two libraries take turns: each round times every runner once more
EOS_ID, PAD_ID = 2, 0  # the toy world's ids; random weights rarely emit EOS, so rows run to full length


def median_times_ms(runners: dict, repeats: int = REPEATS) -> dict:
    """Median wall time of each runner in milliseconds, after one warm-up call (the compile).

    One runner at a time: taking turns call by call lets one library's idle worker threads (which
    spin for a while before sleeping) slow down the other's next call.
    """
    times = {}
    for name, run in runners.items():
        run()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        times[name] = 1000 * statistics.median(samples)
    return times


def rounds_of_medians(runners: dict, rounds: int = ROUNDS, repeats: int = REPEATS) -> dict:
    """{name: [median ms of each round]}: median_times_ms over all runners, `rounds` times in turn.

    A shared machine's load drifts over seconds, so one block of our calls and a later block of torch's can
    meet different loads. A ratio taken within one round compares the two under (nearly) the same load; the
    spread of the rounds' ratios shows how much the load moved.
    """
    per_round = [median_times_ms(runners, repeats) for _ in range(rounds)]
    return {name: [times[name] for times in per_round] for name in runners}


def ratio_over_rounds(theirs_ms: list[float], ours_ms: list[float]) -> tuple[float, float, float]:
    """(median, min, max) over rounds of the round's ratio theirs / ours."""
    ratios = [theirs / ours for theirs, ours in zip(theirs_ms, ours_ms, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def compile_ms(runners: dict) -> dict:
    """Milliseconds each runner's first call spends compiling (tracing, lowering, XLA or a cache read)."""
    spent = {}
    with CompileClock() as clock:
        for name, run in runners.items():
            run()
            spent[name.removesuffix("_ms") + "_compile_ms"] = 1000 * clock.split().seconds
    return spent


def jax_runners(cfg: ModelConfig, sample_cfg: SampleConfig) -> dict:
    """Zero-argument callables that run (and wait for) one training step / one `generate` call.

    The training step is the library's own: `training.make_step` over pretraining's `lm_loss`, the step every
    stage's `fit` calls (it draws its minibatch inside the jitted step, clips the gradient, applies AdamW).
    """
    k_params, k_data, k_prompts, k_sample, k_steps = jax.random.split(jax.random.key(0), 5)
    params = init_params(k_params, cfg)
    optim_cfg = OptimConfig(steps=REPEATS + 1, batch_size=BATCH, warmup=1)
    step = make_step(lm_loss, optim_cfg, static={"cfg": cfg})  # as pretrain's fit builds it

    tokens = jax.random.randint(k_data, (BATCH, SEQ_LEN), 0, cfg.vocab_size)
    valid = jnp.ones_like(tokens, dtype=bool)
    data = {"tokens": tokens, "valid": valid, "loss_mask": valid.at[:, 0].set(False)}
    state = {"train": init_state(jax.device_put(params, may_alias=False), make_optimizer(optim_cfg)), "key": k_steps}

    def run_train():
        state["key"], key = jax.random.split(state["key"])
        state["train"], metrics = step(state["train"], data, key)
        metrics["loss"].block_until_ready()

    prompts = jax.random.randint(k_prompts, (N_PROMPTS, PROMPT_WIDTH), 3, cfg.vocab_size)
    prompt_valid = jnp.ones_like(prompts, dtype=bool)

    def run_generate():
        gen = generate(params, prompts, prompt_valid, k_sample, cfg, sample_cfg, EOS_ID, PAD_ID)
        gen.tokens.block_until_ready()

    return {"train_step_ms": run_train, "generate_ms": run_generate}


def torch_nanogpt(cfg: ModelConfig):
    """nanoGPT's GPT (Karpathy, model.py) at our size, without dropout. Built here so torch stays optional."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            D = cfg.d_model
            self.ln_1, self.ln_2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.c_attn, self.attn_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
            self.mlp = nn.Sequential(nn.Linear(D, cfg.d_mlp), nn.GELU(approximate="tanh"), nn.Linear(cfg.d_mlp, D))

        def forward(self, x):
            B, T, D = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
            q, k, v = (a.view(B, T, cfg.n_heads, D // cfg.n_heads).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # nanoGPT's "flash" path
            x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, D))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(cfg.vocab_size, cfg.d_model), nn.Embedding(cfg.max_len, cfg.d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model)

        def forward(self, idx, last_only: bool = False):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            x = self.ln_f(x[:, -1:] if last_only else x)  # nanoGPT computes only the last logits at inference
            return x @ self.wte.weight.T  # tied output embedding

    return GPT()


def torch_runners(cfg: ModelConfig, sample_cfg: SampleConfig) -> dict:
    """The same two measurements for the nanoGPT baseline, eager, on all CPU cores."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = torch_nanogpt(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ_LEN))

    def run_train():
        logits = model(tokens)  # [B, T, V]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the library's optimizer chain does
        optimizer.step()

    prompts = torch.randint(3, cfg.vocab_size, (N_PROMPTS, PROMPT_WIDTH))

    @torch.no_grad()
    def run_generate():  # nanoGPT's generate: the whole sequence again for every new token
        idx = prompts
        for _ in range(sample_cfg.max_new_tokens):
            logits = model(idx, last_only=True)[:, -1] / sample_cfg.temperature
            next_token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat([idx, next_token], dim=1)

    return {"torch_train_step_ms": run_train, "torch_generate_ms": run_generate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    cache = enable_compile_cache()  # before the first compile
    malloc_tuned = keep_freed_memory()
    cfg = ModelConfig(vocab_size=64)
    sample_cfg = SampleConfig(max_new_tokens=NEW_TOKENS)
    runners = jax_runners(cfg, sample_cfg)
    compiling = compile_ms(runners)
    try:
        import torch  # noqa: F401
    except ImportError:
        has_torch = False
    else:
        has_torch = True
        runners.update(torch_runners(cfg, sample_cfg))
    timed = rounds_of_medians(runners)
    result = {name: statistics.median(ms) for name, ms in timed.items()} | compiling
    for what, ours in (("train", "train_step_ms"), ("generate", "generate_ms")) if has_torch else ():
        median, low, high = ratio_over_rounds(timed[f"torch_{ours}"], timed[ours])
        result[f"{what}_speedup"], result[f"{what}_speedup_range"] = median, [low, high]
    result["config"] = {
        "model": vars(cfg), "train_batch": BATCH, "train_seq_len": SEQ_LEN, "prompts": N_PROMPTS,
        "prompt_width": PROMPT_WIDTH, "max_new_tokens": NEW_TOKENS, "repeats": REPEATS,
        "rounds": ROUNDS,
        "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(), "malloc_keeps_freed_memory": malloc_tuned,
        "compile_cache": str(cache) if cache else None,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"model {vars(cfg)}")
    print(f"train step: {BATCH} x {SEQ_LEN} tokens; generate: {N_PROMPTS} prompts of {PROMPT_WIDTH} + {NEW_TOKENS} new")
    print(f"{ROUNDS} rounds, each library in turn, of {REPEATS} timed calls: the median time over rounds and the "
          f"median (min-max) of the rounds' speedups; {os.cpu_count()} threads; malloc keeps freed memory: {malloc_tuned}")
    print(f"compiling the first call: train step {compiling['train_step_compile_ms']:.0f} ms, generate "
          f"{compiling['generate_compile_ms']:.0f} ms; {describe(cache)}")
    print(f"{'':<12}{'minirlhf (ms)':>15}{'torch eager (ms)':>18}{'speedup':>10}  (min-max)")
    for name, ours, theirs, speedup in (("train step", "train_step_ms", "torch_train_step_ms", "train_speedup"),
                                        ("generate", "generate_ms", "torch_generate_ms", "generate_speedup")):
        if has_torch:
            low, high = result[f"{speedup}_range"]
            print(f"{name:<12}{result[ours]:>15.2f}{result[theirs]:>18.2f}{result[speedup]:>9.2f}x  ({low:.2f}-{high:.2f})")
        else:
            print(f"{name:<12}{result[ours]:>15.2f}{'(no torch)':>18}")


if __name__ == "__main__":
    main()
