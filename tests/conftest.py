import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def _restore_x64():
    """CLI commands run in-process set the global precision (--x32, `satjax bench`): restore it."""
    yield
    jax.config.update("jax_enable_x64", True)
