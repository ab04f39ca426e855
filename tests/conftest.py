"""Shared pytest fixtures. Keep each fixture small and named for what it makes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

WriteImage = Callable[..., Path]


@pytest.fixture
def write_image(tmp_path: Path) -> WriteImage:
    """Factory: ``write_image("a/b.png", mode="RGB", size=(8, 8), colour=(255, 0, 0))``.

    Writes a real image of one colour under ``tmp_path`` (parents created), in the format
    its suffix names; extra keyword arguments go to ``Image.save``. Returns the path.
    """

    def write(
        relative: str,
        *,
        mode: str = "RGB",
        size: tuple[int, int] = (8, 8),
        colour: Any = (255, 0, 0),
        **save_kwargs: Any,
    ) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, colour).save(path, **save_kwargs)
        return path

    return write
