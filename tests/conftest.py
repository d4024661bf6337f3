import os

import jax
import pytest

# CLI commands run in-process would turn on JAX's persistent compilation cache inside the pytest
# workers, where two runs crashed (SIGSEGV) inside the cache's read and write of an executable:
# keep it off in-process. Tests of the cache itself start their own processes
# with a fresh directory of their own (benchmarks/startup.py drops SATJAX_NO_CACHE).
os.environ["SATJAX_NO_CACHE"] = "1"

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def _restore_x64():
    """CLI commands run in-process set the global precision (--x32, `satjax bench`): restore it."""
    yield
    jax.config.update("jax_enable_x64", True)
