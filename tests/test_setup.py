"""`make setup` installs the Debian packages the app and the tests need when they are missing,
so that `make test` on a fresh Debian machine runs every test (no skip for a missing step)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NEEDED = [
    "libcairo2",
    "dataset-fashion-mnist",
    "tuxpaint-stamps-default",
    "chromium",
    "poppler-utils",
]


def fake_debian(bin_dir: Path, installed: set[str], log: Path) -> dict[str, str]:
    """A PATH whose dpkg-query knows only ``installed``, whose apt-get logs its arguments
    and whose user is root."""
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": '#!/bin/sh\nfor last; do :; done\ncase " '
        + " ".join(sorted(installed))
        + ' " in *" $last "*) printf "install ok installed";; *) exit 1;; esac\n',
        "apt-get": f'#!/bin/sh\necho "$@" >> "{log}"\n',
        "id": "#!/bin/sh\necho 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_setup_installs_every_missing_debian_package(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    env = fake_debian(tmp_path / "bin", {"libcairo2"}, log)
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "system-libs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("update")
    installed = calls[1].split()
    assert installed[:3] == ["install", "-y", "-q"]
    assert sorted(installed[3:]) == sorted(set(NEEDED) - {"libcairo2"})


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_setup_installs_nothing_when_everything_is_there(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    env = fake_debian(tmp_path / "bin", set(NEEDED), log)
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "system-libs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not log.exists()
