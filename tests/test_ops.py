"""minirlhf.ops' host-side helper: one JAX key, one NumPy stream (the value tests of the shift, masked means and
exact KL are in test_references_model.py, test_references_losses.py and test_properties.py)."""
import jax
import numpy as np

from minirlhf.ops import SEED_RANGE, numpy_rng


def test_numpy_rng_follows_the_key():
    key = jax.random.PRNGKey(3)
    assert numpy_rng(key).integers(1 << 30) == numpy_rng(key).integers(1 << 30), "one key must give one stream"
    seeds = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 0, SEED_RANGE))(jax.random.split(key, 1000)))
    assert len(set(seeds.tolist())) == 1000 and seeds.max() > 2**30, (
        "numpy seeds should spread over [0, 2^31 - 1): keys must not collide onto a few streams"
    )
    first = numpy_rng(jax.random.split(key, 1000)[0]).integers(1 << 30)
    assert first == np.random.default_rng(int(seeds[0])).integers(1 << 30), "the stream is default_rng(that seed)"
