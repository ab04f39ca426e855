"""App settings: where indexes live and which server folders may be indexed.

Read from ``replica.toml`` at the repository root when present, or from the file the
``REPLICA_CONFIG`` environment variable names (then it must exist; tests use it to point
the app at temporary folders):

    index_root = "/srv/replica/indexes"         # where the Indexes page builds and lists
    index_dirs = ["/srv/more-indexes/photos"]   # extra index folders to list
    default_index = "openmoji-sscd"             # what a new visitor opens (a listed index's name)
    image_roots = ["/srv/datasets"]             # folders the Indexes page may build from
    upload_root = "/srv/replica/uploads"        # where uploaded zips are extracted
    case_root = "/srv/replica/cases"            # where cases are stored (one folder each)
    map_fit_points = 50000                      # Map page: UMAP fitted on at most this many
    map_points = 20000                          # Map page: points drawn (density for all)
    upload_zip_bytes = 1073741824               # one zip may expand to at most this (1 GiB)
    upload_session_bytes = 2147483648           # one session may upload at most this (2 GiB)
    upload_min_free_bytes = 1073741824          # uploads never leave less disk free (1 GiB)
    upload_temp_hours = 24                      # loose uploads (Distributions) kept this long

Defaults: indexes under ``data/indexes/``, a new visitor on the bundled ``openmoji-sscd``;
image roots ``data/`` and the Debian datasets; uploads under ``data/uploads/``; cases under
``data/cases/``; the upload limits of :mod:`lib.uploads` (1 GiB per zip, 2 GiB per session,
1 GiB of disk kept free, loose uploads deleted after 24 hours).
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
UPLOAD_ZIP_BYTES = 1024**3
"""Default limit on what one uploaded zip may expand to (its kept files), in bytes."""
UPLOAD_SESSION_BYTES = 2 * 1024**3
"""Default limit on the uploads, zips and loose images, one app session may store (bytes)."""
UPLOAD_MIN_FREE_BYTES = 1024**3
"""Default disk space (bytes) an upload must leave free; it is refused otherwise."""
UPLOAD_TEMP_HOURS = 24.0
"""Default age (hours) after which loose uploads (the Distributions page's) are deleted."""


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
    default_index: str = "openmoji-sscd"
    """The index a new browser session opens (a listed index's folder name), unless its
    address names another; never changed by what other visitors build."""
    """The Map page draws at most this many points; a density image shows all of them."""
    upload_zip_bytes: int = UPLOAD_ZIP_BYTES
    """One uploaded zip may expand to at most this many bytes (its kept files)."""
    upload_session_bytes: int = UPLOAD_SESSION_BYTES
    """One app session may store at most this many bytes of uploads, zips and loose images."""
    upload_min_free_bytes: int = UPLOAD_MIN_FREE_BYTES
    """An upload is refused when it would leave less than this many bytes of disk free."""
    upload_temp_hours: float = UPLOAD_TEMP_HOURS
    """Loose uploads (the Distributions page's) older than this are deleted at the next one."""

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
        default_index=str(data.get("default_index", defaults.default_index)),
        upload_zip_bytes=_positive(data, "upload_zip_bytes", defaults.upload_zip_bytes),
        upload_session_bytes=_positive(data, "upload_session_bytes", defaults.upload_session_bytes),
        upload_min_free_bytes=int(
            data.get("upload_min_free_bytes", defaults.upload_min_free_bytes)
        ),
        upload_temp_hours=float(data.get("upload_temp_hours", defaults.upload_temp_hours)),
    )


def _positive(data: dict[str, object], key: str, default: int) -> int:
    """``data[key]`` as a positive int (``default`` when absent).

    Raises:
        ValueError: not a positive whole number of bytes.
    """
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"{key} in the app config must be a positive number of bytes, got {value!r}"
        )
    return value


def available_indexes(config: AppConfig) -> list[Path]:
    """Every index under the index root plus the configured extra index folders."""
    from lib.index import is_index, list_indexes

    found = list_indexes(config.index_root)
    found += [p.resolve() for p in config.index_dirs if is_index(p)]
    return list(dict.fromkeys(found))
