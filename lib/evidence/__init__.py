"""Evidence an artist can send and a lawyer can check: reports, case files and verify.

identity.py     hashes and names of everything a finding rests on (files, index, model)
finding.py      one finding: the reproducible record of a query and its match, as JSON
pictures.py     the pictures a report shows (pairs, strip, difference, regions, null)
scan_record.py  a replication scan as a report section
document.py     a report document (findings and scans) written as JSON, HTML or PDF,
                and read back from any of the three
report_html.py  the self-contained HTML report
report_pdf.py   the PDF report (reportlab), with the JSON attached (pypdf)
case.py         cases: named sets of findings stored under the data folder
verify.py       re-run a report's findings and say which checks pass
cli.py          ``python -m lib report`` and ``python -m lib verify``
"""

from __future__ import annotations

from lib.evidence.case import Case, CaseStore
from lib.evidence.document import Document, read_document, write_document
from lib.evidence.finding import Finding, make_finding
from lib.evidence.verify import VerifyReport, verify_document

__all__ = [
    "Case",
    "CaseStore",
    "Document",
    "Finding",
    "VerifyReport",
    "make_finding",
    "read_document",
    "verify_document",
    "write_document",
]
