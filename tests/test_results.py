"""Result types: one module (lib.results) that lib.search and lib.regions both import, so
that the two never import each other; every name stays importable from lib.search."""

from __future__ import annotations

import subprocess
import sys


def test_regions_does_not_import_search() -> None:
    code = (
        "import sys, lib.regions; "
        "assert 'lib.search' not in sys.modules, sorted(m for m in sys.modules if 'lib.' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_search_keeps_its_public_names() -> None:
    import lib.regions
    import lib.results
    import lib.search

    for name in ("Match", "QueryResult", "judge", "ordered_pair"):
        assert getattr(lib.search, name) is getattr(lib.results, name)
    assert lib.regions.Match is lib.results.Match
    assert lib.regions.QueryResult is lib.results.QueryResult
    for name in lib.search.__all__:
        assert hasattr(lib.search, name)
