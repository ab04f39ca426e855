"""App settings: where indexes live and which server folders may be indexed.

Read from ``replica.toml`` at the repository root when present, or from the file the
``REPLICA_CONFIG`` environment variable names (then it must exist; tests use it to point
the app at temporary folders):

    index_root = "/srv/replica/indexes"         # where the Indexes page builds and lists
    index_dirs = ["/srv/more-indexes/photos"]   # extra index folders to list
    image_roots = ["/srv/datasets"]             # folders the Indexes page may build from
    upload_root = "/srv/replica/uploads"        # where uploaded zips are extracted
    case_root = "/srv/replica/cases"            # where cases are stored (one folder each)
    map_fit_points = 50000                      # Map page: UMAP fitted on at most this many
    map_points = 20000                          # Map page: points drawn (density for all)

Defaults: indexes under ``data/indexes/``; image roots ``data/`` and the Debian datasets;
uploads under ``data/uploads/``; cases under ``data/cases/``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lib.defaults import DATA_DIR, INDEX_ROOT

CONFIG_FILE = DATA_DIR.parent / "replica.toml"
CONFIG_ENV = "REPLICA_CONFIG"
"""Environment variable naming a config file to read instead of :data:`CONFIG_FILE`."""
UPLOAD_ROOT = DATA_DIR / "uploads"
"""Uploaded zips are extracted under here (one folder per upload)."""
CASE_ROOT = DATA_DIR / "cases"
"""Cases (:mod:`lib.evidence.case`) are stored under here, one folder per case."""


@dataclass(frozen=True)
class AppConfig:
    """Index locations and the folders users may build indexes from."""

    index_root: Path = INDEX_ROOT
    index_dirs: tuple[Path, ...] = ()
    image_roots: tuple[Path, ...] = field(
        default_factory=lambda: (DATA_DIR, Path("/usr/share/tuxpaint/stamps"))
    )
    upload_root: Path = UPLOAD_ROOT
    case_root: Path = CASE_ROOT
    map_fit_points: int = 50_000
    """The Map page fits UMAP on at most this many images and places the rest on it."""
    map_points: int = 20_000
    """The Map page draws at most this many points; a density image shows all of them."""

    def allowed_image_dir(self, folder: str | os.PathLike[str]) -> Path:
        """``folder`` resolved, if it lies inside a configured image root (or uploads). A
        relative folder is read from the app's folder (``data/openmoji/heldout``), so pages
        can show and accept paths without the server's own layout.

        Raises:
            PermissionError: outside every root (no arbitrary server paths).
            FileNotFoundError: not an existing folder.
        """
        path = Path(folder).expanduser()
        if not path.is_absolute():
            path = DATA_DIR.parent / path
        path = path.resolve()
        roots = [r.resolve() for r in (*self.image_roots, self.upload_root)]
        if not any(path == r or r in path.parents for r in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise PermissionError(f"{path} is outside the allowed folders ({allowed})")
        if not path.is_dir():
            raise FileNotFoundError(f"folder not found: {path}")
        return path


def load_config(path: Path | None = None) -> AppConfig:
    """The app config from ``path``, else from ``$REPLICA_CONFIG``, else from
    :data:`CONFIG_FILE`; the defaults when that file does not exist.

    Raises:
        FileNotFoundError: ``$REPLICA_CONFIG`` names a file that does not exist.
    """
    if path is None:
        override = os.environ.get(CONFIG_ENV)
        if override and not Path(override).is_file():
            raise FileNotFoundError(f"{CONFIG_ENV}={override}: no such config file")
        path = Path(override) if override else CONFIG_FILE
    if not path.is_file():
        return AppConfig()
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults = AppConfig()
    return AppConfig(
        index_root=Path(data.get("index_root", defaults.index_root)),
        index_dirs=tuple(Path(p) for p in data.get("index_dirs", [])),
        image_roots=tuple(Path(p) for p in data.get("image_roots", defaults.image_roots)),
        upload_root=Path(data.get("upload_root", defaults.upload_root)),
        case_root=Path(data.get("case_root", defaults.case_root)),
        map_fit_points=int(data.get("map_fit_points", defaults.map_fit_points)),
        map_points=int(data.get("map_points", defaults.map_points)),
    )


def available_indexes(config: AppConfig) -> list[Path]:
    """Every index under the index root plus the configured extra index folders."""
    from lib.index import is_index, list_indexes

    found = list_indexes(config.index_root)
    found += [p.resolve() for p in config.index_dirs if is_index(p)]
    return list(dict.fromkeys(found))
