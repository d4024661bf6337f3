import os

# Each pytest-xdist worker runs on a core of its own, so XLA's CPU runtime runs one intra-op
# thread per worker: jax-ml/jax#39741 reports that one compiled CPU module returns results that
# differ at ~1e-9 across calls once the process has more than one thread, and is bit-identical
# at one. (The wrong values that failed a test once in a while in full runs had another cause,
# found later: jit ran one class's program on another class with the same fields — see
# satjax/pytree.py and tests/test_pytree.py.) Set before jax starts; subprocesses inherit it.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_worker[2:]) % len(_cores)]})

import jax  # noqa: E402
import pytest  # noqa: E402

# CLI commands run in-process would turn on JAX's persistent compilation cache inside the pytest
# workers, where two runs crashed (SIGSEGV) inside the cache's read and write of an executable:
# keep it off in-process. Tests of the cache itself start their own processes
# with a fresh directory of their own (benchmarks/startup.py drops SATJAX_NO_CACHE).
os.environ["SATJAX_NO_CACHE"] = "1"

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module. Every program a long-lived jit keeps
    holds memory mappings (measured: ~19 per compiled shape of one jitted function, freed by
    jax.clear_caches()); a worker that runs half the suite approaches the kernel's limit of
    65530 mappings per process (vm.max_map_count), and a worker died with SIGSEGV inside XLA's
    compilation late in two full runs, twice in the same test, never alone. Reproduced: with a
    process's mappings filled to 64,000 (anonymous mmaps), the next jit compilations fail with
    "LLVM compilation error: Cannot allocate memory" and SIGSEGV in the same frame
    (jax/_src/compiler.py backend_compile_and_load, jax 0.10.2)."""
    yield
    jax.clear_caches()


@pytest.fixture(autouse=True)
def _restore_x64():
    """CLI commands run in-process set the global precision (--x32, `satjax bench`): restore it."""
    yield
    jax.config.update("jax_enable_x64", True)
