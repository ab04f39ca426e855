"""Cases: named sets of findings (and scans), stored on disk under the data folder.

    data/cases/<name>/case.json   the case: name, dates, findings with notes, scans

One folder per case; every change rewrites ``case.json`` through a temporary file and a
rename (a crash leaves the old file whole), under an OS file lock on ``.lock`` in the folder
so that two sessions adding to one case both land. A case is opened only by its name: the
app never lists other people's cases.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lib.app_config import CASE_ROOT
from lib.evidence.document import Document, write_atomic
from lib.evidence.finding import Finding, FindingError, now
from lib.evidence.scan_record import ScanRecord

CASE_FILE = "case.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


class CaseError(ValueError):
    """A case name is not valid, or the case does not exist or cannot be read."""


@dataclass
class Case:
    """A named set of findings and scans (notes live on each finding)."""

    name: str
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    findings: list[Finding] = field(default_factory=list)
    scans: list[ScanRecord] = field(default_factory=list)

    def document(self) -> Document:
        """The case as a report document (summary table first)."""
        return Document(
            title=f"Replica case: {self.name}",
            findings=list(self.findings),
            scans=list(self.scans),
            case=self.name,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "created": self.created,
            "updated": self.updated,
            "findings": [f.to_dict() for f in self.findings],
            "scans": [s.to_dict() for s in self.scans],
        }


def check_name(name: str) -> str:
    """``name`` stripped, if it is a valid case name (letters, digits, space, ``_.-``; 1-64
    characters, starting with a letter or digit).

    Raises:
        CaseError: otherwise, saying what is allowed.
    """
    clean = str(name).strip()
    if not NAME_PATTERN.match(clean) or clean in (".", ".."):
        raise CaseError(
            "a case name has 1 to 64 letters, digits, spaces, '_', '.' or '-' and starts "
            "with a letter or digit"
        )
    return clean


def new_case_name() -> str:
    """A fresh name nobody else can guess: ``case-YYYYMMDD-<8 hex>``."""
    return f"case-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


class CaseStore:
    """The cases under ``root`` (default ``data/cases``; the app passes its config's
    ``case_root``)."""

    def __init__(self, root: str | Path = CASE_ROOT):
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        try:
            return (self.folder(name) / CASE_FILE).is_file()
        except CaseError:
            return False

    def load(self, name: str) -> Case:
        """The case called ``name``.

        Raises:
            CaseError: no such case, or its file is damaged.
        """
        path = self.folder(name) / CASE_FILE
        if not path.is_file():
            raise CaseError(f"there is no case called {check_name(name)!r}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Case(
                name=str(data["name"]),
                created=str(data["created"]),
                updated=str(data["updated"]),
                findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                scans=[ScanRecord.from_dict(s) for s in data.get("scans", [])],
            )
        except (OSError, ValueError, KeyError, TypeError, FindingError) as exc:
            raise CaseError(f"the case {name!r} could not be read: {exc}") from exc

    def open_or_create(self, name: str) -> Case:
        """The case called ``name``, created empty (and saved) when it does not exist."""
        with self._locked(name):
            if self.exists(name):
                return self.load(name)
            case = Case(name=check_name(name))
            self._save(case)
            return case

    def add_finding(self, name: str, finding: Finding) -> Case:
        """Append ``finding`` to the case (created if needed); returns the saved case."""
        with self._locked(name):
            case = self.load(name) if self.exists(name) else Case(name=check_name(name))
            case.findings.append(finding)
            return self._save(case)

    def add_scan(self, name: str, scan: ScanRecord) -> Case:
        """Append a scan to the case (created if needed); returns the saved case."""
        with self._locked(name):
            case = self.load(name) if self.exists(name) else Case(name=check_name(name))
            case.scans.append(scan)
            return self._save(case)

    def set_note(self, name: str, position: int, note: str) -> Case:
        """Set the note of the finding at ``position`` (0-based).

        Raises:
            CaseError: no such case or finding.
        """
        with self._locked(name):
            case = self.load(name)
            if not 0 <= position < len(case.findings):
                raise CaseError(f"the case has no finding {position + 1}")
            case.findings[position].note = str(note)
            return self._save(case)

    def remove_finding(self, name: str, position: int) -> Case:
        """Remove the finding at ``position`` (0-based); nothing when there is none."""
        with self._locked(name):
            case = self.load(name)
            if 0 <= position < len(case.findings):
                del case.findings[position]
            return self._save(case)

    def _save(self, case: Case) -> Case:
        case.updated = now()
        data = json.dumps(case.to_dict(), ensure_ascii=False).encode("utf-8")
        write_atomic(self.folder(case.name) / CASE_FILE, data)
        return case

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
