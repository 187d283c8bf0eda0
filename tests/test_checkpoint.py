"""Checkpoints of any tree of arrays: a reward model {"lm", "head"}, labelled pairs, lists; no pickle; atomic writes.

(The bare-transformer cases -- round trip, wrong shape, another format, a pickled entry -- are in test_pipeline.py.)
"""
import json
import zipfile

import jax
import numpy as np
import pytest

from minirlhf import checkpoint, transformer
from minirlhf.tokenizer import VOCAB_SIZE

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=2, n_heads=2, d_mlp=32)


def random_transformer(seed: int = 0, cfg=TINY) -> dict:
    """Random values in every leaf, so two same-shaped parameters swapped by the loader would not compare equal."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.PRNGKey(0), cfg))
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def reward_model_and_pairs() -> dict:
    rng = np.random.default_rng(1)
    return {
        "rm": {"lm": random_transformer(1), "head": {"w": rng.normal(size=16).astype(np.float32), "b": np.float32(0.5)}},
        "pairs": {"chosen_tokens": rng.integers(0, VOCAB_SIZE, (4, 26)).astype(np.int32),
                  "chosen_valid": rng.random((4, 26)) < 0.5, "gold_chosen": rng.normal(size=4)},  # float64
        "history": [np.arange(3), np.ones((2, 2), np.float16)],  # a list comes back as a list
    }


def assert_same_tree(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want), "the tree's layout changed"
    for (where, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree_util.tree_leaves(got)):
        name = jax.tree_util.keystr(where)
        assert np.asarray(g).dtype == np.asarray(w).dtype, f"{name} came back as {np.asarray(g).dtype}, was {np.asarray(w).dtype}"
        np.testing.assert_array_equal(g, w, err_msg=f"{name} did not come back bit for bit")


def test_a_nested_tree_with_its_config_and_meta_round_trips(tmp_path):
    tree, meta = reward_model_and_pairs(), {"made_by": {"stage": "rm", "n_pairs": 4}, "metrics": {"acc": 0.75}}
    checkpoint.save(str(tmp_path / "rm.npz"), tree, TINY, meta=meta)
    got = checkpoint.read(str(tmp_path / "rm.npz"))
    assert_same_tree(got.tree, tree)
    assert got.model == TINY and got.meta == meta, "the config and the meta record must come back as saved"
    assert isinstance(got.tree["history"], list) and isinstance(got.tree["rm"]["lm"]["blocks"], list)


def test_a_tree_without_a_transformer_needs_no_config(tmp_path):
    pairs = reward_model_and_pairs()["pairs"]
    checkpoint.save(str(tmp_path / "pairs.npz"), pairs)
    tree, cfg = checkpoint.load(str(tmp_path / "pairs.npz"))
    assert cfg is None
    assert_same_tree(tree, pairs)


def test_the_transformer_inside_a_reward_model_is_checked_against_the_config(tmp_path):
    tree = reward_model_and_pairs()
    del tree["rm"]["lm"]["blocks"][1]["mlp"]
    with pytest.raises(ValueError, match=r"rm/lm/blocks/1/mlp"):
        checkpoint.save(str(tmp_path / "x.npz"), tree, TINY)  # refused already when saving
    tree = reward_model_and_pairs()
    checkpoint.save(str(tmp_path / "x.npz"), tree, TINY)
    with zipfile.ZipFile(tmp_path / "x.npz") as z:  # rewrite the file without one parameter
        kept = {n: z.read(n) for n in z.namelist() if n != "rm/lm/wpe.npy"}
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as z:
        for n, data in kept.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match=r"lacks parameter\(s\) \['rm/lm/wpe'\]"):
        checkpoint.load(str(tmp_path / "x.npz"))


def test_a_config_given_for_a_tree_without_a_transformer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no transformer"):
        checkpoint.save(str(tmp_path / "x.npz"), {"w": np.ones(3)}, TINY)


def test_nan_in_a_transformer_is_refused(tmp_path):
    tree = reward_model_and_pairs()
    checkpoint.save(str(tmp_path / "x.npz"), tree, TINY)
    arrays = dict(np.load(tmp_path / "x.npz"))
    arrays["rm/lm/ln_f/g"] = np.full_like(arrays["rm/lm/ln_f/g"], np.nan)
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(ValueError, match="rm/lm/ln_f/g contains NaN"):
        checkpoint.load(str(tmp_path / "x.npz"))


@pytest.mark.parametrize("tree, why", [({"a": {}}, "empty"), ({"0": np.ones(1), "1": np.ones(1)}, "digits"),
                                       ({"a/b": np.ones(1)}, "without '/'"), (np.ones(3), "dict or list"),
                                       ({checkpoint.CONFIG_KEY: np.ones(1)}, "reserved")])
def test_a_tree_that_would_not_come_back_the_same_is_refused(tmp_path, tree, why):
    with pytest.raises(ValueError, match=why):
        checkpoint.save(str(tmp_path / "x.npz"), tree)
    assert not (tmp_path / "x.npz").exists()


def test_a_v1_checkpoint_still_loads(tmp_path):
    """v1 files held a bare transformer and {"format": v1, "model": cfg}: that is a v2 file without meta."""
    params = random_transformer()
    record = json.dumps({"format": checkpoint.V1, "model": TINY.__dict__})
    np.savez(tmp_path / "v1.npz", **checkpoint.flatten(params), **{checkpoint.CONFIG_KEY: np.array(record)})
    got = checkpoint.read(str(tmp_path / "v1.npz"))
    assert got.model == TINY and got.meta == {}
    assert_same_tree(got.tree, params)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    checkpoint.save(str(path), {"w": np.ones(3)})
    before = path.read_bytes()

    def disk_full(f, **arrays):
        f.write(b"half")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="no space"):
        checkpoint.save(str(path), {"w": np.zeros(3)}, overwrite=True)
    assert path.read_bytes() == before, "a failed save must not touch the file it would replace"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"], "the half-written temporary file must be removed"


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(str(path), {"w": np.ones(3)})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        checkpoint.save(str(path), {"w": np.zeros(3)})
    np.testing.assert_array_equal(checkpoint.load(str(path))[0]["w"], np.ones(3))
    checkpoint.save(str(path), {"w": np.zeros(3)}, overwrite=True)
    np.testing.assert_array_equal(checkpoint.load(str(path))[0]["w"], np.zeros(3))


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "no record"])
def test_a_damaged_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "m.npz"
    checkpoint.save(str(path), reward_model_and_pairs(), TINY)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "not a zip":
        path.write_bytes(b"\x00" * 100)
    else:
        np.savez(path, w=np.ones(3))
    with pytest.raises(ValueError, match="not a readable minirlhf checkpoint|not written by minirlhf.checkpoint"):
        checkpoint.read(str(path))


def test_a_pickled_entry_is_never_unpickled(tmp_path):
    """An object array inside an otherwise valid file: np.load with allow_pickle=True would run its code."""
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    checkpoint.save(str(tmp_path / "m.npz"), reward_model_and_pairs()["pairs"])
    arrays = dict(np.load(tmp_path / "m.npz"))
    np.savez(tmp_path / "m.npz", **arrays, evil=np.array([RunsCode()], dtype=object))
    with pytest.raises(ValueError, match="not a readable minirlhf checkpoint"):
        checkpoint.read(str(tmp_path / "m.npz"))
    assert not marker.exists(), "loading a checkpoint ran code stored in it: np.load must use allow_pickle=False"
