"""Shared pytest fixtures. Keep each fixture small and named for what it makes."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="session")
def test_app_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app config (``replica.toml``) as a deployment writes one: the default folders plus
    pytest's temporary folder, where the tests build their indexes from, as image roots."""
    from lib.app_config import AppConfig

    roots = [*AppConfig().image_roots, tmp_path_factory.getbasetemp()]
    path = tmp_path_factory.getbasetemp() / "replica-tests.toml"
    path.write_text(f"image_roots = {json.dumps([str(r) for r in roots])}\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def app_reads_test_folders(test_app_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with :func:`test_app_config` as ``$REPLICA_CONFIG`` unless it sets
    its own: the app (and the CLI, which adds these folders) reads images only inside its
    configured folders (:mod:`lib.allowed_paths`), and the tests' images live in pytest's
    temporary folder."""
    monkeypatch.setenv("REPLICA_CONFIG", str(test_app_config))
    # the folders "this machine indexed" are the tests' own, never the user's real list
    monkeypatch.setenv("REPLICA_TRUSTED_SOURCES", str(test_app_config.with_name("trusted.txt")))
