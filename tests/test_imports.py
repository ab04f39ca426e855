"""Every library module imports on its own, first, in a fresh interpreter: no import
circles (lib.calibration <-> lib.index was one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in (REPO / "lib").rglob("*.py")
    if p.name != "__main__.py" and "bench" not in p.parts and "diffusion" not in p.parts
)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
