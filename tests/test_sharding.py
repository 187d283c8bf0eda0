"""Data-parallel training with jax.sharding equals one device: checked in a child python with 2 CPU devices.

XLA reads --xla_force_host_platform_device_count only when jax is first imported, and this test process
has already imported it, so the 2-device run happens in a fresh process (sharding.run_in_child).
"""
import pytest

from minirlhf.experiments import sharding

TINY = sharding.Config(steps=3, batch_size=8, n_docs=32, d_model=16, n_layers=1, host_devices=2)


@pytest.fixture(scope="module")
def result():
    return sharding.run_in_child(TINY, seeds=(0,), n_devices=2, timeout=300)


def test_the_child_process_sees_two_devices_and_splits_the_batch(result):
    r = result["seeds"]["0"]
    assert r["data_parallel"]["devices"] == 2, "XLA_FLAGS should give the child process 2 CPU devices"
    assert r["one_device"]["devices"] == 1
    assert r["data_parallel"]["batch_shards"] == [[4, 40], [4, 40]], (
        f"each device should hold half of the batch's rows, got shards {r['data_parallel']['batch_shards']}")


def test_data_parallel_params_equal_one_device(result):
    r = result["seeds"]["0"]
    assert r["max_abs_param_diff"] < 1e-5, (
        f"after {TINY.steps} steps the data-parallel params differ from one device's by {r['max_abs_param_diff']:.2e}: "
        f"more than float rounding, so the gradients are not averaged over the whole batch")
    assert r["max_abs_loss_diff"] < 1e-5


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="host_devices"):
        sharding.Config(host_devices=-1)
