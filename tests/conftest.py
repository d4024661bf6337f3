import os
import tempfile

import jax
import pytest

# CLI commands run in-process turn on the persistent compilation cache: give each test process
# its own (not the user's ~/.cache/satjax, and no two pytest workers writing one directory)
os.environ["SATJAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="satjax-test-cache-")

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def _restore_x64():
    """CLI commands run in-process set the global precision (--x32, `satjax bench`): restore it."""
    yield
    jax.config.update("jax_enable_x64", True)
