"""Run the command line as a user does: ``python -m lib -q ...`` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m lib -q *args`` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "lib", "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
