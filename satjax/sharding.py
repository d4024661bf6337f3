"""Placing Monte-Carlo samples on devices with ``jax.sharding``.

Samples are independent, so the natural layout splits the sample axis over every device: a 1-D
:class:`jax.sharding.Mesh` with the axis name ``"samples"`` and arrays laid out as
``NamedSharding(mesh, P("samples"))``. Once the inputs of a jit-compiled estimator are laid out
this way, XLA's sharding propagation keeps per-sample work on the device that owns the sample and
turns means and sums over samples into all-reduces of scalars.

Estimators and samplers take ``shard``:

* ``False`` (default): nothing changes, one device as before;
* ``True``: split the samples over :func:`samples_mesh` (all devices: ``jax.devices()``, which
  under ``jax.distributed.initialize()`` means every device of every host);
* a :class:`~jax.sharding.Mesh` with a ``"samples"`` axis: split over that mesh.

With one device every ``shard`` is a no-op (same arrays, same compiled program).

**Sample counts must be divisible by the number of devices** along the ``"samples"`` axis: a
ValueError names both. No padding: padded samples would enter means, standard errors and
sorted/OT steps, silently changing the estimators. Round ``n`` up to a multiple yourself.

Random numbers: with ``jax_threefry_partitionable`` (JAX's default since 0.5) a key gives the same
numbers whether the output is sharded or not, and each device generates only its own part.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "samples"

ShardSpec = Union[bool, None, Mesh]


def samples_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh with axis ``"samples"`` over ``devices`` (default: all, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("`devices` is empty")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def resolve(shard: ShardSpec) -> Optional[Mesh]:
    """The mesh to split samples over, or None when nothing is to be sharded.

    ``False``/``None`` → None; ``True`` → :func:`samples_mesh`; a Mesh → itself (it must have a
    ``"samples"`` axis). A mesh of one device → None (sharding would be a no-op).
    """
    if shard is None or shard is False:
        return None
    if shard is True:
        mesh = samples_mesh()
    elif isinstance(shard, Mesh):
        mesh = shard
        if AXIS not in mesh.axis_names:
            raise ValueError(f"the mesh must have an axis named {AXIS!r}; got axes "
                             f"{mesh.axis_names}")
    else:
        raise TypeError(f"`shard` must be a bool or a jax.sharding.Mesh; got "
                        f"{type(shard).__name__}")
    return mesh if mesh.shape[AXIS] > 1 else None


def n_shards(mesh: Optional[Mesh]) -> int:
    """Number of pieces the sample axis is split into (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[AXIS])


def check_divisible(n: int, mesh: Optional[Mesh], what: str = "samples") -> None:
    """ValueError unless ``n`` is a multiple of the device count along ``"samples"``."""
    _check_count(n, n_shards(mesh), what)


def _check_count(n: int, k: int, what: str) -> None:
    if n % k:
        lo, hi = (n // k) * k, -(-n // k) * k
        raise ValueError(f"{n} {what} cannot be split evenly over {k} devices: use a multiple "
                         f"of {k} (e.g. {lo or hi} or {hi}); satjax does not pad samples")


def spec(ndim: int, axis: int = 0) -> PartitionSpec:
    """PartitionSpec splitting dimension ``axis`` of an ``ndim``-array over ``"samples"``."""
    return PartitionSpec(*([None] * axis + [AXIS] + [None] * (ndim - axis - 1)))


def sample_sharding(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
    """NamedSharding splitting dimension ``axis`` over the mesh's ``"samples"`` axis."""
    return NamedSharding(mesh, spec(ndim, axis))


def _leaf_sharding(x, mesh: Mesh, axis: int) -> NamedSharding:
    if np.ndim(x) <= axis:
        return NamedSharding(mesh, PartitionSpec())  # scalars etc.: replicated
    check_divisible(np.shape(x)[axis], mesh)
    return sample_sharding(mesh, np.ndim(x), axis)


def shard_samples(tree: Any, mesh: ShardSpec = True, *, axis: int = 0) -> Any:
    """``jax.device_put`` every array leaf split along ``axis`` (the sample axis) over ``mesh``.

    Leaves with fewer than ``axis + 1`` dimensions are replicated. ``mesh`` is anything
    :func:`resolve` accepts (default ``True``: all devices). With one device, or ``mesh`` False,
    the input is returned unchanged (no copy, no device_put).

    Multi-host: every process must pass the same (global) values; for data that differ per host
    use :func:`from_process_local`.

    Raises:
      ValueError: a sample axis not divisible by the device count (sizes named).
    """
    mesh = resolve(mesh)
    if mesh is None:
        return tree

    def one(x):
        s = _leaf_sharding(x, mesh, axis)
        if isinstance(x, jax.core.Tracer):  # called under an outer jit/grad
            return jax.lax.with_sharding_constraint(x, s)
        return jax.device_put(x, s)

    return jax.tree_util.tree_map(one, tree)


def from_process_local(tree: Any, mesh: ShardSpec = True) -> Any:
    """Global arrays from per-process sample blocks (multi-host input).

    Each process passes its own block of samples (leading axis); the global array concatenates
    the blocks in process order along the sample axis
    (``jax.make_array_from_process_local_data``). The local leading size must be divisible by
    the number of local devices. With a single process this equals :func:`shard_samples`.
    """
    mesh = resolve(mesh)
    if mesh is None:
        return tree

    def one(x):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("process-local samples need a leading sample axis")
        n_local = len(set(mesh.devices.flat) & set(jax.local_devices()))
        _check_count(x.shape[0], n_local, "local samples")
        return jax.make_array_from_process_local_data(sample_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map(one, tree)


def constrain(tree: Any, mesh: Optional[Mesh], *, axis: int = 0) -> Any:
    """Inside jit: ``with_sharding_constraint`` splitting ``axis`` of every leaf over ``mesh``.

    Use it on samples generated from a key inside jitted code (so each device draws only its
    own part) and on loop carries. ``mesh`` None (the unsharded path) returns ``tree`` as is,
    so the traced program is exactly the unsharded one. Leaves with fewer than ``axis + 1``
    dimensions are left alone.
    """
    if mesh is None:
        return tree

    def one(x):
        if np.ndim(x) <= axis:
            return x
        return jax.lax.with_sharding_constraint(x, sample_sharding(mesh, np.ndim(x), axis))

    return jax.tree_util.tree_map(one, tree)


def is_sharded(x, mesh: Optional[Mesh] = None) -> bool:
    """True when array ``x`` is split (not replicated) over several devices (all of ``mesh``'s)."""
    sh = getattr(x, "sharding", None)
    if sh is None or sh.is_fully_replicated:
        return False
    devs = sh.device_set
    return len(devs) > 1 and (mesh is None or devs == set(mesh.devices.flat))


__all__ = ["AXIS", "check_divisible", "constrain", "from_process_local", "is_sharded",
           "n_shards", "resolve", "sample_sharding", "samples_mesh", "shard_samples", "spec"]
