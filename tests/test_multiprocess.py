"""A real multi-process run: two JAX processes on this machine, one global mesh over both.

Two child processes call ``jax.distributed.initialize`` with a coordinator on a free loopback
port (``127.0.0.1``), ``num_processes=2``; each has two CPU devices
(``--xla_force_host_platform_device_count=2``), so the ``"samples"`` mesh spans four devices
in two processes and the cross-device reductions run over CPU collectives between processes
(gloo over TCP: JAX's default ``jax_cpu_collectives_implementation``, set explicitly here).
A third child, a plain single process with one device, computes the reference. Checks, in
float64:

* the entropy production w_D by Monte Carlo with ``MonteCarlo(shard=True)``: the draws are
  generated on their devices in both processes, the estimate (a replicated scalar) and the
  per-node kinetic rates equal the single-process ones to 1e-12 relative;
* the reverse probability-flow ODE with ``shard=True`` from x0 built two ways:
  ``sharding.from_process_local`` (each process passes only its half of the points) and
  ``sharding.shard_samples`` (every process passes the same global array): each process holds
  two shards of N/4 rows, its own rows, and the gathered trajectory equals the single-process
  one to 1e-12 absolute.

Gloo binds to the address of this machine's host name; the test is skipped unless that is a
loopback address, so that no traffic leaves the loopback interface.
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for the whole group of children (normally ~20-40 s on 2 cores)

CHILD = r'''
import json, sys
import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
mode, out = sys.argv[1], sys.argv[2]
dist = mode == "dist"
if dist:
    pid, port = int(sys.argv[3]), int(sys.argv[4])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")   # the default; explicit
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=120)
    assert jax.process_count() == 2, jax.process_count()
    assert jax.device_count() == 4 and jax.local_device_count() == 2, jax.devices()
else:
    pid = 0
    assert jax.process_count() == 1 and jax.device_count() == 1, jax.devices()

from jax.experimental import multihost_utils
from satjax import estimators, mixtures, reverse, schedules, thermo
from satjax import sharding as sh

KEY = jax.random.PRNGKey(0)
N_MC, N_ODE = 256, 64
q = mixtures.gmm([[-2.0, 0.0], [2.0, 1.0]], 0.5)
sched = schedules.cosine(tau=1.0)
res = {"process_index": jax.process_index(), "devices": jax.device_count(),
       "collectives": str(jax.config.jax_cpu_collectives_implementation)}

# --- entropy production by Monte Carlo, draws split over every device of both processes
est = estimators.MonteCarlo(n=N_MC, key=KEY, shard=dist)
ep = thermo.entropy_production(sched, q, estimator=est, n_time=8)
if dist:
    mesh = sh.samples_mesh()
    assert mesh.devices.size == 4
    drawn = est.prepare(sched, q, np.linspace(0.1, 0.9, 8)).draws
    assert sh.is_sharded(drawn.eps, mesh), drawn.eps.sharding
    assert not drawn.eps.is_fully_addressable           # really spans both processes
    assert [s.data.shape[0] for s in drawn.eps.addressable_shards] == [N_MC // 4] * 2
    assert ep.wD.value.is_fully_replicated
res["wD"] = float(ep.wD.value)
res["wD_stderr"] = float(ep.wD.stderr)
res["S_sys"] = float(ep.S_sys.value)
res["kinetic"] = np.asarray(ep.kinetic).tolist()

# --- reverse ODE on globally sharded points
x_full = np.random.default_rng(1).normal(size=(N_ODE, 2))   # same numbers in every process
vel = reverse.exact_velocity(sched, q)
kw = dict(t_start=0.999, n_steps=40, n_save=4, method="rk4")
if dist:
    half = N_ODE // 2
    inputs = {"local": sh.from_process_local(x_full[pid * half:(pid + 1) * half]),
              "global": sh.shard_samples(x_full)}
else:
    inputs = {"local": x_full, "global": x_full}
for name, x0 in inputs.items():
    if dist:
        assert not x0.is_fully_addressable and sh.is_sharded(x0), x0.sharding
        rows = sorted(s.index[0].start for s in x0.addressable_shards)
        assert rows == [pid * N_ODE // 2, pid * N_ODE // 2 + N_ODE // 4], rows  # own rows
    gen = reverse.reverse_ode(vel, x0, shard=dist, **kw)
    if dist:
        shards = gen.xs.addressable_shards
        assert len(shards) == 2 and all(s.data.shape[1] == N_ODE // 4 for s in shards)
        for s in shards:   # the local rows are the global rows they claim to be
            np.testing.assert_array_equal(np.asarray(s.data)[0], x_full[s.index[1]])
        xs = multihost_utils.process_allgather(gen.xs, tiled=True)
    else:
        xs = np.asarray(gen.xs)
    res["xs_" + name] = np.asarray(xs).tolist()
    res["finite_" + name] = bool(gen.finite)
res["ts"] = np.asarray(gen.ts).tolist()

with open(out, "w") as f:
    json.dump(res, f)
if dist:
    jax.distributed.shutdown()
print("CHILD OK", mode, pid)
'''


def _hostname_is_loopback() -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(socket.gethostname())).is_loopback
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _run_group(tmp_path: Path, port: int):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    jobs = {"ref": [sys.executable, str(script), "ref", str(tmp_path / "ref.json")]}
    for i in range(2):
        jobs[f"p{i}"] = [sys.executable, str(script), "dist", str(tmp_path / f"p{i}.json"),
                         str(i), str(port)]
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=ROOT, env=_env(1 if name == "ref" else 2))
             for name, cmd in jobs.items()}
    deadline = time.monotonic() + TIMEOUT
    outs = {}
    try:
        for name, p in procs.items():
            try:
                outs[name] = p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            except subprocess.TimeoutExpired:
                outs[name] = f"(timed out after {TIMEOUT} s)"
    finally:
        for p in procs.values():  # only the children started here
            if p.poll() is None:
                p.kill()
                p.wait()
    return procs, outs


@pytest.mark.skipif(not _hostname_is_loopback(),
                    reason="gloo CPU collectives bind to the host name's address, which is not "
                           "a loopback address here")
def test_two_processes_match_single_process(tmp_path):
    for attempt in range(2):  # a second try only if the free port was taken in between
        procs, outs = _run_group(tmp_path, _free_port())
        ok = all(p.returncode == 0 for p in procs.values())
        if ok or attempt or "address already in use" not in "".join(outs.values()).lower():
            break
    assert ok, "\n".join(f"--- {n} (rc {procs[n].returncode})\n{outs[n][-3000:]}" for n in procs)

    ref = json.loads((tmp_path / "ref.json").read_text())
    p0, p1 = (json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2))
    assert (p0["process_index"], p1["process_index"]) == (0, 1)
    assert p0["devices"] == p1["devices"] == 4 and ref["devices"] == 1
    assert p0["collectives"] == "gloo"

    for res in (p0, p1):
        # reductions: only the summation order differs
        for f in ("wD", "wD_stderr", "S_sys", "kinetic"):
            np.testing.assert_allclose(res[f], ref[f], rtol=1e-12, atol=0, err_msg=f)
        np.testing.assert_allclose(res["ts"], ref["ts"], rtol=0, atol=1e-15)
        for name in ("local", "global"):
            assert res["finite_" + name]
            xs, xr = np.asarray(res["xs_" + name]), np.asarray(ref["xs_" + name])
            assert xs.shape == xr.shape == (5, 64, 2)
            np.testing.assert_allclose(xs, xr, rtol=0, atol=1e-12, err_msg=name)
    assert p0["wD"] == p1["wD"]  # the replicated estimate is the same number in both processes
