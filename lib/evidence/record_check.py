"""Checking a report's record (the JSON inside a PDF, HTML or JSON report) before
``verify`` uses it: a file from anyone, so every field must have the type and range its
reader needs, and nothing in it may make a check crash instead of fail.

What is checked beyond the field types of :class:`lib.evidence.finding.Finding` and
:class:`lib.evidence.scan_record.ScanRecord` (:mod:`lib.json_shape`): nesting depth,
``settings.top_k`` (1..:data:`MAX_TOP_K`) and ``settings.false_alarm_rate`` (0..1,
exclusive), the embedded query bytes (valid base64), and recorded paths (no NUL byte).

Example:
    >>> check_record({"kind": "replica-evidence", "findings": 3})
    Traceback (most recent call last):
    ...
    lib.json_shape.ShapeError: the record: findings must be a list, not an integer
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lib.evidence.document import DOCUMENT_KIND
from lib.evidence.finding import FINDING_KIND, Finding
from lib.evidence.scan_record import ScanRecord
from lib.json_shape import ShapeError, check, check_depth, describe, fields_of

MAX_TOP_K = 10_000
"""Largest ``top_k`` a record may ask ``verify`` to search for."""


def check_record(data: object, where: str = "the record") -> None:
    """Raise :class:`ShapeError` unless ``data`` is a record this version can verify: a
    report (``kind`` "replica-evidence") or a bare finding, every field checked.

    Args:
        where: the file, for messages.
    """
    check_depth(data, where)
    if not isinstance(data, dict):
        raise ShapeError(where, f"the record must be an object, not {describe(data)}")
    kind = data.get("kind")
    if kind == FINDING_KIND:
        check_finding(data, where, "")
        return
    if kind != DOCUMENT_KIND:
        raise ShapeError(where, f"it holds no Replica record (its kind is {str(kind)[:40]!r})")
    for key in ("title", "case", "created"):
        if key in data:
            check(data[key], str, where, key)
    for key, item in (("findings", check_finding), ("scans", check_scan)):
        entries = data.get(key, [])
        check(entries, list[Any], where, key)
        for i, entry in enumerate(entries):
            item(entry, where, f"{key}[{i}]")


def check_finding(data: object, where: str, field: str) -> None:
    """One finding: :class:`Finding`'s fields and the values ``verify`` computes with."""
    at = f"{field}." if field else ""
    values = fields_of(Finding, data, where, field=field)
    if not isinstance(data, dict) or data.get("kind") != FINDING_KIND:
        raise ShapeError(where, f"{field or 'the record'} is not a Replica finding (kind)")
    settings = values["settings"]
    for key, kind in (("top_k", int), ("false_alarm_rate", float)):
        if key not in settings:
            raise ShapeError(where, f"{at}settings.{key} is missing")
        check(settings[key], kind, where, f"{at}settings.{key}")
    if not 1 <= settings["top_k"] <= MAX_TOP_K:
        raise ShapeError(where, f"{at}settings.top_k must be 1..{MAX_TOP_K}")
    if not 0.0 < settings["false_alarm_rate"] < 1.0:
        raise ShapeError(where, f"{at}settings.false_alarm_rate must be between 0 and 1")
    if "regions" in settings:
        check(settings["regions"], bool | None, where, f"{at}settings.regions")
    for part, key in (("query", "path"), ("query", "name"), ("index", "path"), ("match", "path")):
        if "\0" in values[part].get(key, ""):
            raise ShapeError(where, f"{at}{part}.{key} holds a NUL byte")
    try:
        base64.b64decode(values["query"].get("data_b64", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ShapeError(where, f"{at}query.data_b64 is not base64") from None


def check_scan(data: object, where: str, field: str) -> None:
    """One scan: :class:`ScanRecord`'s fields, each of its findings as a finding."""
    if not isinstance(data, dict):
        raise ShapeError(where, f"{field} must be an object, not {describe(data)}")
    findings = data.get("findings", [])
    check(findings, list[Any], where, f"{field}.findings")
    fields_of(ScanRecord, {**data, "findings": []}, where, field=field)
    for i, finding in enumerate(findings):
        check_finding(finding, where, f"{field}.findings[{i}]")
