"""The one progress-callback type shared by the library, the CLI and the app.

Long operations accept ``progress: ProgressCallback | None``. They call it as
``progress(done, total, message)`` where ``done`` and ``total`` count work items
(images, vectors, steps). ``total`` may be 0 when unknown. The CLI renders it with
tqdm (:func:`tqdm_progress`), the app with ``st.progress``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressCallback(Protocol):
    """Called as ``progress(done, total, message)``; must be cheap and never raise."""

    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def null_progress(done: int, total: int, message: str = "") -> None:
    """A progress callback that does nothing."""


def report(progress: ProgressCallback | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, message)


class Cancelled(Exception):
    """Raised by a progress callback to stop a long operation; nothing is written."""


@contextmanager
def tqdm_progress(desc: str, unit: str = "img") -> Iterator[ProgressCallback]:
    """A progress callback drawing a tqdm bar on stderr; closes the bar on exit."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, leave=True)

    started = False

    def callback(done: int, total: int, message: str = "") -> None:
        nonlocal started
        if not started:
            # work resumed part-way (a training run at step 3000) counts its rate and ETA
            # from where it started, not from zero
            started = True
            bar.reset(total=total or None)
            bar.initial = bar.n = bar.last_print_n = done
        elif done < bar.n:
            # a new phase (calibrating after embedding) counts from zero with its own rate
            bar.reset(total=total or None)
        if total and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield callback
    finally:
        bar.close()
