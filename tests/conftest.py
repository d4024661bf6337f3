import os

# Each pytest-xdist worker runs on a core of its own, so XLA's CPU runtime runs one intra-op
# thread per worker. Under jax 0.10.2 with two multi-threaded workers on two cores, a value
# computed inside a compiled loop came out wrong once in a while in full runs (never alone, never
# reproduced in isolation; three CI runs failed one test each); jax-ml/jax#39741 reports that one
# compiled CPU module returns different results across calls once the process has more than one
# thread, and is bit-identical at one. Set before jax starts its backend; subprocesses inherit it.
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


# The longest tests (compilation-bound, 40-170 s each on 2 cores; none uses a module-scoped
# fixture) are scheduled first, and `--dist worksteal` (pyproject.toml) lets an idle worker take
# pending tests from the other: the two workers then end together instead of one idling through
# the last long test.
LONGEST_FIRST = (
    "test_table1_quick_exact_sampler_learned_and_resume", "test_eta_and_c1_objectives_in_1d",
    "test_notebook_executes", "test_reproduce_fig6_quick",
    "test_bound_grad_matches_central_differences", "test_fig8_quick_models_statistics_and_resume",
    "test_train_sample_bound_model_and_extension", "test_eta_is_the_same_for_every_schedule_in_2d",
    "test_2d_ot_path_at_defaults_runs_in_bounded_memory", "test_swiss_roll_grid_speed",
    "test_uniform_start_converges_and_its_error_covers_the_change",
    "test_readme_python_example_runs", "test_four_devices_thermo",
    "test_annotations_hold_and_are_enforced")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))  # stable


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def _restore_x64():
    """CLI commands run in-process set the global precision (--x32, `satjax bench`): restore it."""
    yield
    jax.config.update("jax_enable_x64", True)
