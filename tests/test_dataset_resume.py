"""Crashes and processes, as a user meets them: `funcattr attribute` killed with SIGKILL at
exact points of its writes and at a random moment, then run again; 2 processes under torchrun
(gloo) against 1; a killed 2-process run finished by 1 process. Every finished store must be
bitwise equal to one uninterrupted single-process run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("zarr")

import funcattr as fa  # noqa: E402

# smoothgrad draws noise: it checks that each batch is seeded the same whoever computes it
ARGS = ["attribute", "--data", "zoo:shapes:24", "--method", "smoothgrad", "--batch-size", "2", "--metrics", "pointing"]
BATCHES = 12

# `funcattr attribute ARGS`, killed by SIGKILL at the K-th file rename when DIE_AT_RENAME=K:
# zarr writes every file to a temporary name and renames it, so this lands a kill between the
# files of a batch, before a commit record, or while the store is being created.
JOB = """
import os, pathlib, signal, sys
k = int(os.environ.get("DIE_AT_RENAME", "0"))
if k:
    real, count = pathlib.Path.replace, [0]
    def replace(self, target):
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, target)
    pathlib.Path.replace = replace
from funcattr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env(**more):
    return dict(os.environ, MPLBACKEND="Agg", **more)


def cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "funcattr", *args], capture_output=True, text=True, timeout=timeout, env=env(), **kw)


def torchrun(n, *args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m", "funcattr", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), **kw)


def assert_same(path, ref):
    a, b = fa.open_store(path), fa.open_store(ref)
    assert a.complete and b.complete
    assert torch.equal(a.attributions[:], b.attributions[:])
    for name in ("indices", "targets", "predictions"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        assert torch.equal(a.metrics[k], b.metrics[k]), k
    assert a.manifest["settings"] == b.manifest["settings"]
    assert not [f for _, _, fs in os.walk(path) for f in fs if f.endswith(".partial")]


def committed(path) -> int:
    try:
        return len(os.listdir(os.path.join(path, "indices", "c")))
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    r = cli(*ARGS, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_kill_9_at_writes_then_resume(reference, tmp_path):
    """Killed while the arrays are created (rename 2: the group exists, no array yet), the
    resumed run killed between the files of batch 0 (rename 9: its maps half-renamed), the next
    one just before batch 1's commit record (rename 16), then the same command finishes."""
    out = str(tmp_path / "s.zarr")
    job = tmp_path / "job.py"
    job.write_text(JOB)
    for k in (2, 9, 16):
        r = subprocess.run([sys.executable, str(job), *ARGS, "--out", out], capture_output=True, text=True, timeout=300, env=env(DIE_AT_RENAME=str(k)))
        assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
        assert committed(out) < BATCHES
    assert [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".partial")]  # a write cut short
    r = cli(*ARGS, "--out", out)  # the same command again resumes
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same(out, reference)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a torchrun launcher and the workers it started (they run in their own sessions)."""
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                        kids.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    for pid in kids + [proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)


def test_two_processes_give_the_same_store_as_one(reference, tmp_path):
    out = str(tmp_path / "two.zarr")
    p = torchrun(2, *ARGS, "--out", out)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    assert stdout.count("wrote ") == 1  # rank 0 reports, once
    assert fa.open_store(out).manifest["processes"] == 2
    assert_same(out, reference)


def test_killed_two_process_run_is_finished_by_one(reference, tmp_path):
    out = str(tmp_path / "two.zarr")
    args = ARGS
    p = torchrun(2, *args, "--out", out)
    deadline = time.monotonic() + 240
    while committed(out) < 2 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    _kill_tree(p)
    n = committed(out)
    assert 2 <= n < BATCHES, n
    r = cli(*args, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same(out, reference)
