"""What every check shares: compare a learner's output with the reference's, and name the likely mistake.

A check is `check(fn) -> str`: it calls the learner's `fn` on a few inputs (random ones and edge cases),
compares each result with the library function's, and raises `CheckFailed` with a message in the
learner's words. When a result is wrong, each `Mistake` the check knows is tried: a mistake is the
output a function with that bug would give on the same input; if the learner's output equals it (and
the correct output does not), the mistake's hint is the message. Otherwise the message says where the
numbers first differ.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import sysconfig
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import transformer
from minirlhf.grade.checks import BY_NAME

RTOL, ATOL = 1e-4, 1e-5  # float32 agreement with the reference
MISTAKE_RTOL, MISTAKE_ATOL = 1e-3, 1e-4  # looser: mistakes are written in float64 numpy


class CheckFailed(AssertionError):
    """A check's verdict, worded for the learner."""


class Mistake(NamedTuple):
    hint: str  # what the learner probably did, and what to do instead
    output: Callable[[], Any]  # what a function with this mistake returns on the case's inputs


REGISTRY: dict[str, Callable[[Callable], str]] = {}


def check_for(name: str):
    """Register `check(fn) -> summary` as the check of exercise `name`."""
    def register(check: Callable[[Callable], str]) -> Callable[[Callable], str]:
        REGISTRY[name] = check
        return check
    return register


# The reference implementations, captured once when the checks are imported, so that swapping a
# learner's function into the library (grade.use_learner_code) never changes what is compared against.
REFERENCES: dict[str, Callable] = {
    ex.name: getattr(importlib.import_module(ex.library), ex.name) for ex in BY_NAME.values()
}
LIBRARY_FORWARD = transformer.forward


def reference(name: str) -> Callable:
    return REFERENCES[name]


# ---------------------------------------------------------------- comparing outputs


def describe(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    if isinstance(x, Mapping):
        return f"a dict with keys {sorted(map(str, x))}"
    return f"a {type(x).__name__} ({str(x)[:40]})"


def _index(idx: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]" if idx else ""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.generic)) and not isinstance(x, bool) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and tuple(x.shape) == ())


def compare(got: Any, want: Any, name: str = "the output", *, dtypes: bool = True, values: bool = True,
            rtol: float = RTOL, atol: float = ATOL, where: Callable[[tuple], str] | None = None) -> str | None:
    """None when `got` matches `want` (same structure, shapes, dtypes and values), else the first difference.

    `where(index)` says in words what an array's entry is ("row 1, response token 2"); without it, 2-D
    arrays name the row and column.
    """
    if isinstance(want, tuple) and hasattr(want, "_fields"):  # a NamedTuple: compare field by field
        if not isinstance(got, tuple) or len(got) != len(want):
            return f"{name} should be a {type(want).__name__}{want._fields}, got {describe(got)}"
        parts = [(f if name == "the output" else f"{name}.{f}", g, w) for f, g, w in zip(want._fields, got, want)]
    elif isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"{name} should be a tuple of {len(want)} items, got {describe(got)}"
        labels = name[1:-1].split(", ") if name.startswith("(") and name.endswith(")") else []
        if len(labels) != len(want):  # "(advantages, returns)" names the parts; otherwise number them
            labels = [f"{name}[{i}]" for i in range(len(want))]
        parts = list(zip(labels, got, want))
    elif isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{name} should be a dict with keys {sorted(want)}, got {describe(got)}"
        missing = [k for k in want if k not in got]
        if missing:
            return f"{name} lacks the key(s) {missing} (it has {sorted(map(str, got))})"
        parts = [(f'{name}["{k}"]', got[k], w) for k, w in want.items()]
    elif isinstance(want, (int, float, np.generic)) and not isinstance(want, (bool, np.bool_)):  # a plain number
        if not _is_number(got):
            return f"{name} should be a number, got {describe(got)}"
        g, w = float(np.asarray(got)), float(want)
        if values and not np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return f"{name} is {g:.6g}, expected {w:.6g}"
        return None
    else:
        return _compare_arrays(got, want, name, dtypes=dtypes, values=values, rtol=rtol, atol=atol, where=where)
    for part_name, g, w in parts:
        msg = compare(g, w, part_name, dtypes=dtypes, values=values, rtol=rtol, atol=atol, where=where)
        if msg:
            return msg
    return None


def _compare_arrays(got, want, name, *, dtypes, values, rtol, atol, where=None) -> str | None:
    want = np.asarray(want)
    if not (hasattr(got, "shape") and hasattr(got, "dtype")):
        if dtypes or not isinstance(got, (int, float, list, tuple)):
            return f"{name} should be an array of shape {want.shape} ({want.dtype}), got {describe(got)}"
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{name} has shape {got.shape}, expected {want.shape}"
    if dtypes:
        if want.dtype == bool and got.dtype != bool:
            return f"{name} should be a bool array, got dtype {got.dtype}"
        if np.issubdtype(want.dtype, np.integer) and not np.issubdtype(got.dtype, np.integer):
            return f"{name} should hold integers (indices / token ids), got dtype {got.dtype}"
        if np.issubdtype(want.dtype, np.floating) and got.dtype != want.dtype:
            hint = " (numpy or Python floats make float64: compute with jnp)" if got.dtype == np.float64 else ""
            return f"{name} has dtype {got.dtype}, expected {want.dtype}{hint}"
    if not values:
        return None
    if want.dtype == bool or np.issubdtype(want.dtype, np.integer) or got.dtype == bool:
        bad = got != want
    else:
        bad = ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    idx = tuple(np.argwhere(bad)[0]) if bad.ndim else ()
    g, w = got[idx], want[idx]
    count = f" ({int(bad.sum())} of {bad.size} entries differ)" if bad.size > 1 else ""
    at = _index(idx) + (f" ({where(idx)})" if where and len(idx) == 2 else f" (row {idx[0]}, column {idx[1]})"
                        if len(idx) == 2 else "")
    if np.issubdtype(got.dtype, np.floating) and not np.isfinite(g) and np.isfinite(w):
        return f"{name}{at} is {g} where {w:.6g} was expected{count}"
    fmt = (lambda v: f"{v}") if want.dtype == bool or np.issubdtype(want.dtype, np.integer) else (lambda v: f"{v:.6g}")
    return f"{name}{at} is {fmt(g)}, expected {fmt(w)}{count}"


def in_layout(mask: np.ndarray) -> Callable[[tuple], str]:
    """`where` for [batch, seq] arrays: names entry [b, t] by its place in row b, given the response `mask`."""
    def where(idx: tuple) -> str:
        b, t = (int(i) for i in idx)
        row = np.asarray(mask[b], bool)
        if row[t]:
            return f"row {b}, response token {int(row[:t].sum()) + 1} of {int(row.sum())}"
        if row.any() and t < np.argmax(row):
            return f"row {b}, slot {t}, before the response: the prompt or its padding"
        return f"row {b}, slot {t}, after the response: padding"
    return where


def expect(got: Any, want: Any, case: str, mistakes: list[Mistake] = (), name: str = "the output",
           where: Callable[[tuple], str] | None = None) -> None:
    """Raise CheckFailed unless got matches want; name the mistake when one of `mistakes` explains got."""
    msg = compare(got, want, name, where=where)
    if msg is None:
        return
    for mistake in mistakes:
        try:
            wrong = mistake.output()
        except Exception:  # a mistake that cannot even be computed on this case explains nothing
            continue
        loose = dict(dtypes=False, rtol=MISTAKE_RTOL, atol=MISTAKE_ATOL)
        if compare(want, wrong, name, **loose) is None:
            continue  # this case cannot tell the mistake from the right answer
        if compare(got, wrong, name, **loose) is None:
            raise CheckFailed(f"{mistake.hint}\n  ({case}: {msg})")
    raise CheckFailed(f"{case}: {msg}")


def expect_raises(fn: Callable, error: type[Exception], case: str, what: str) -> None:
    """The learner's fn must raise `error` (e.g. ValueError for an unknown option name)."""
    try:
        fn()
    except error:
        return
    except NotImplementedError:
        raise
    except Exception as e:
        raise CheckFailed(f"{case}: {what} should raise {error.__name__}, but it raised "
                          f"{type(e).__name__}: {str(e)[:200]}") from None
    raise CheckFailed(f"{case}: {what} should raise {error.__name__}, but it returned a result")


TRACE_ERRORS = (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def expect_traceable(call: Callable, arrays: tuple, caller: str = "the training step") -> None:
    """`call(*arrays)` (the learner's fn, other arguments bound) must also work on traced arrays, since the
    course calls it inside jax.jit. Traced with jax.eval_shape: nothing runs and nothing compiles, so it is cheap.
    """
    try:
        jax.eval_shape(call, *arrays)
    except NotImplementedError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        advice = ("use jnp functions instead of np / float() / int() / .item(), and jnp.where instead of a Python "
                  "`if` on array values" if isinstance(e, TRACE_ERRORS) else "see the error")
        raise CheckFailed(f"the numbers are right on concrete arrays, but the function fails under jax.jit, "
                          f"which is how {caller} calls it: {type(e).__name__}: {first}\n  Fix: {advice}.") from None


# ---------------------------------------------------------------- running one check


def run_check(name: str, fn: Callable) -> tuple[bool, str]:
    """(passed, reason) of exercise `name`'s check on `fn`; never raises (except KeyboardInterrupt)."""
    try:
        with jax.default_device(jax.devices("cpu")[0]):
            summary = REGISTRY[name](fn)
        return True, f"passed ({summary})"
    except CheckFailed as e:
        return False, str(e)
    except NotImplementedError as e:
        return False, f"NotImplementedError: {e}" if str(e) else "NotImplementedError: not implemented yet"
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the learner's code raised (SystemExit included): report it, go on
        return False, describe_exception(e)


def describe_exception(e: BaseException) -> str:
    """'raised ValueError: ... (at exercises/ppo.py:42, in gae)', pointing at the learner's own line if any."""
    if isinstance(e, SystemExit):
        return f"called sys.exit({e.code!r}); a function must return its result, not exit"
    if isinstance(e, SyntaxError):  # the file did not parse: point at the line, not at the import machinery
        line = f": `{e.text.strip()}`" if e.text and e.text.strip() else ""
        return f"{type(e).__name__}: {e.msg} (at {e.filename}:{e.lineno}{line})"
    frames = traceback.extract_tb(e.__traceback__)
    not_yours = (str(Path(__file__).resolve().parents[2]), sysconfig.get_paths()["stdlib"])  # minirlhf, Python
    own = [f for f in frames if not f.filename.startswith(not_yours) and "site-packages" not in f.filename
           and "/jax/" not in f.filename and "<" not in f.filename]
    where = f" (at {own[-1].filename}:{own[-1].lineno}, in {own[-1].name})" if own else ""
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"raised {type(e).__name__}: {text}{where}"


# ---------------------------------------------------------------- shared inputs


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def response_layout(seed: int, lengths: list[int], prompt_width: int, response_width: int, vocab: int = 13,
                    eos: int = 2, pad: int = 0):
    """(tokens, valid) in the shared layout: left-padded prompts, responses of `lengths` (EOS last) then padding.

    A length equal to response_width is a response cut off without EOS.
    """
    r = rng(seed)
    B, T = len(lengths), prompt_width + response_width
    tokens = r.integers(3, vocab, size=(B, T)).astype(np.int32)
    valid = np.zeros((B, T), bool)
    for b, length in enumerate(lengths):
        prompt_len = 1 + (b * 2) % prompt_width  # prompts of different lengths, so left padding varies
        valid[b, prompt_width - prompt_len : prompt_width + length] = True
        if length < response_width:
            tokens[b, prompt_width + length - 1] = eos
    tokens[~valid] = pad
    return tokens, valid


def mask_of(valid: np.ndarray, prompt_width: int) -> np.ndarray:
    """Real response tokens: valid and at or after the prompt."""
    return valid & (np.arange(valid.shape[1])[None, :] >= prompt_width)


# A tiny model for the checks that run one (lm_loss, reward, sequence_logprobs). All three use the same
# shapes, so the jitted forward below compiles once per grading run.
TINY = transformer.ModelConfig(vocab_size=13, max_len=14, d_model=8, n_layers=1, n_heads=2, d_mlp=16)
MODEL_BATCH = 4  # rows in every model check


@functools.cache
def tiny_params(seed: int = 0, cfg: transformer.ModelConfig = TINY) -> dict:
    """Random tiny-model parameters, drawn with numpy (jax.random would compile a kernel per shape)."""
    shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), cfg))
    r = rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(r.normal(0, 0.5, s.shape), jnp.float32), shapes)


@functools.cache
def _jitted_forward():
    return jax.jit(LIBRARY_FORWARD, static_argnames="cfg")


@contextlib.contextmanager
def fast_forward():
    """During a model check, `transformer.forward` is the library's forward, compiled once (same numbers)."""
    saved = transformer.forward
    transformer.forward = _jitted_forward()
    try:
        yield transformer.forward
    finally:
        transformer.forward = saved


def np_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_token_logprobs(logits, tokens, temperature: float = 1.0, shift: bool = True) -> np.ndarray:
    """The reference's token_logprobs in numpy, with the shift optional (for 'forgot the shift')."""
    logp = np_log_softmax(np.asarray(logits) / temperature)
    tokens = np.asarray(tokens)
    if not shift:
        return np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    picked = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    return np.pad(picked, ((0, 0), (1, 0)))
