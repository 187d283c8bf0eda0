"""Shared test settings: one compilation cache for the session, and a fixed, small set of hypothesis examples."""
import atexit
import os
import shutil
import tempfile

# jax's persistent compilation cache (minirlhf/compile_cache.py), fresh for each test session, so that a run never
# reads another run's entries (a clean machine and a developer's both start empty), and shared with every process
# the tests start: the CLI runs, the grader's workers, the sharding child and, under `python -m pytest`, the
# notebooks' kernels, which compile many of the same steps. MINIRLHF_COMPILE_CACHE=off or =PATH, set by whoever
# runs the tests, is kept: the tests then compile everything, or share that folder.
_XLA_CACHE = tempfile.mkdtemp(prefix="minirlhf-tests-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("MINIRLHF_COMPILE_CACHE", _XLA_CACHE)

from minirlhf.compile_cache import enable_compile_cache  # noqa: E402  (imports jax, which compiles nothing yet)

enable_compile_cache()
from hypothesis import HealthCheck, settings  # noqa: E402

# derandomize: the same examples on every run (a property test that fails, fails every time);
# no deadline: the first example of a jitted function includes its compile.
settings.register_profile(
    "minirlhf", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("minirlhf")

# The tests train, like the command line does: keep freed memory for reuse (see the function's docstring).
import minirlhf  # noqa: E402

minirlhf.keep_freed_memory()
