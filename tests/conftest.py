"""Shared test settings: one compilation cache for the session, and a fixed, small set of hypothesis examples."""
import atexit
import os
import shutil
import tempfile

# XLA's persistent compilation cache, fresh for each test session (so a run never reads another run's
# entries) and shared with every process the tests start: the CLI run, the grader's workers, the sharding
# child and, under `python -m pytest`, the notebooks' kernels, which compile many of the same steps.
_XLA_CACHE = tempfile.mkdtemp(prefix="minirlhf-tests-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402  (after the environment: jax reads it at import)
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)  # in case a plugin imported jax before this file
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# derandomize: the same examples on every run (a property test that fails, fails every time);
# no deadline: the first example of a jitted function includes its compile.
settings.register_profile(
    "minirlhf", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("minirlhf")

# The tests train, like the command line does: keep freed memory for reuse (see the function's docstring).
import minirlhf  # noqa: E402

minirlhf.keep_freed_memory()
