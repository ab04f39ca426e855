"""Wall time and peak memory of one command, and the peers' own venv, for benchmarks/peers.py.

The command is started by a small launcher (this file run as a script, stdlib only, about
10 MiB): a child forked straight from the benchmark would carry the benchmark's own resident
set into its ``ru_maxrss`` (Linux keeps the high-water mark of the pre-exec copy). Peak
memory is then taken two ways:

- ``max_rss_mb``: ``ru_maxrss`` from the launcher's ``os.wait4`` on the command: the peak
  resident set of the largest single process of its tree (Linux folds reaped descendants
  into it as a maximum, not a sum). This is the figure the ratios use;
- ``tree_pss_mb``: the largest sum of proportional set sizes (``/proc/PID/smaps_rollup``)
  over the command and all its descendants, sampled every :data:`SAMPLE_S` seconds: it
  counts worker pools (imagededup and cleanvision hash in ``multiprocessing`` workers)
  without counting shared pages twice, but can miss a peak shorter than the interval.

    m = measure(["python", "-c", "print(1)"], Path("/tmp/log.txt"))
    m.wall_s, m.max_rss_mb, m.tree_pss_mb
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SAMPLE_S = 0.1
PEER_PACKAGES = (
    "imagededup==0.3.3.post2",
    "imagehash==4.3.2",
    "cleanvision==0.3.7",
    "fastdup==2.54",
    # imagededup imports torch and torchvision even for its hashes; torchvision's wheel
    # needs the CUDA build of torch (the CPU wheel lacks libc10_cuda), so the pair is pinned
    "torch==2.14.1",
    "torchvision==0.29.1",
)
"""What the peers' venv holds, pinned (fastdup pins numpy 1.26: a venv of their own)."""
PEER_ENV = {"SENTRY_OPT_OUT": "1", "FASTDUP_PRODUCTION": "1"}
"""fastdup: no telemetry, no update check (both need the internet)."""


@dataclass(frozen=True)
class Measured:
    """One run of a command: ``wall_s`` seconds, memory in MiB, its exit status."""

    wall_s: float
    max_rss_mb: float
    tree_pss_mb: float
    returncode: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _tree_pss_kb(root: int) -> int:
    """Sum of Pss (KiB) over the descendants of ``root`` (not ``root`` itself)."""
    children, todo, total = _children(), list(_children().get(root, [])), 0
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def measure(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> Measured:
    """Run ``cmd`` through the launcher with stdout and stderr to ``log``; kill its process
    group after ``timeout_s`` (returncode -9 then)."""
    peak = [0]
    done = threading.Event()
    report = log.with_suffix(".measured.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", __file__, str(report), *cmd]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            launcher, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                peak[0] = max(peak[0], _tree_pss_kb(proc.pid))

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.killpg(proc.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, daemon=True)
        timer = threading.Timer(timeout_s, kill)
        sampler.start()
        timer.start()
        proc.wait()
        done.set()
        timer.cancel()
        sampler.join()
    if not report.is_file():
        return Measured(timeout_s, 0.0, peak[0] / 1024, proc.returncode or -9)
    child = json.loads(report.read_text())
    return Measured(child["wall_s"], child["max_rss_kb"] / 1024, peak[0] / 1024, child["rc"])


def _launch(report: str, cmd: list[str]) -> int:
    """The launcher: run ``cmd``, write its wall time, ``ru_maxrss`` and exit status."""
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    Path(report).write_text(json.dumps({"wall_s": wall, "max_rss_kb": usage.ru_maxrss, "rc": rc}))
    return rc


def ensure_venv(venv: Path, log: Path) -> Path:
    """The peers' venv at ``venv`` (``python3.11 -m venv`` and a pip install of
    :data:`PEER_PACKAGES` from the configured index), made once; returns its python.

    Raises:
        RuntimeError: the venv or the install failed (the log says why).
    """
    python = venv / "bin" / "python"
    marker = venv / "peers-packages.txt"
    wanted = "\n".join(PEER_PACKAGES)
    if marker.is_file() and marker.read_text() == wanted:
        return python
    with open(log, "ab") as out:
        steps = [
            ["python3.11", "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"{' '.join(step[:4])} ... failed: see {log}")
    marker.write_text(wanted)
    return python


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1], sys.argv[2:]))
