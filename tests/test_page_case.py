"""Reports and cases in the app (AppTest): the Search page makes a report and adds findings
to the session's case; the Case page lists them, saves notes, opens cases by name only and
exports the whole case."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.evidence import CaseStore, make_finding
from lib.index import open_index
from tests.evidence_helpers import small_index

SEARCH = "../pages/search.py"
CASE = "../pages/case.py"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return small_index(tmp_path_factory.mktemp("case_page"))


@pytest.fixture
def cases(tmp_path: Path, planted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose cases live under tmp_path/cases, uploads under tmp_path/uploads; the
    app reads images in tmp_path and in the folder the planted index was built from."""
    root = tmp_path / "cases"
    config = tmp_path / "replica.toml"
    config.write_text(
        f'index_root = "{tmp_path / "indexes"}"\ncase_root = "{root}"\n'
        f'image_roots = ["{tmp_path}", "{planted[0].parent}"]\n'
        f'upload_root = "{tmp_path / "uploads"}"\n'
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    return root


def _button(at: AppTest, label: str, n: int = 0) -> object:
    found = [b for b in at.button if b.label == label]
    assert len(found) > n, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[n]


def test_search_page_makes_a_report_and_adds_to_the_case(
    planted: tuple[Path, Path], cases: Path
) -> None:
    index, _ = planted
    at = AppTest.from_file(SEARCH, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    at.button(key="search_demo").click().run()
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert "Download report (PDF)" not in labels
    _button(at, "Make a report").click().run()  # type: ignore[attr-defined]
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert "Download report (PDF)" in labels and "Download report (HTML)" in labels
    _button(at, "Add to case").click().run()  # type: ignore[attr-defined]
    # the pair view adds the chosen pair (the second match)
    at.selectbox(key="search_pair").set_value(1).run()
    _button(at, "Add to case", 1).click().run()  # type: ignore[attr-defined]
    assert not at.exception and not at.error
    name = at.session_state["case_name"]
    assert any(name in s.value for s in at.success)
    case = CaseStore(cases).load(name)
    assert len(case.findings) == 2
    assert case.findings[0].match.rank == 1 and case.findings[1].match.rank == 2
    assert "/" not in "".join(s.value for s in at.success), "no server path shown"


def test_each_session_starts_its_own_case(planted: tuple[Path, Path], cases: Path) -> None:
    first = AppTest.from_file(CASE, default_timeout=60)
    first.run()
    second = AppTest.from_file(CASE, default_timeout=60)
    second.run()
    assert first.session_state["case_name"] != second.session_state["case_name"]
    assert "This case is empty" in first.info[0].value


def test_case_page_lists_notes_and_exports(planted: tuple[Path, Path], cases: Path) -> None:
    index_dir, query = planted
    index = open_index(index_dir)
    store = CaseStore(cases)
    for match_id in (None, 0):
        finding = make_finding(
            index, query.name, query.read_bytes(), match_id=match_id, top_k=24, pictures=False
        )
        store.add_finding("shared-case", finding)
    at = AppTest.from_file(CASE, default_timeout=120)
    at.run()
    at.text_input(key="case_open_name").input("no-such-case")
    at.button(key="case_open").click().run()
    assert "There is no case called" in at.warning[0].value
    at.text_input(key="case_open_name").input("shared-case")
    at.button(key="case_open").click().run()
    assert not at.exception
    assert at.session_state["case_name"] == "shared-case"
    assert len(at.dataframe) == 1
    notes = at.text_area
    assert len(notes) == 2
    notes[1].input("the pose is different").run()
    _button(at, "Save note", 1).click().run()  # type: ignore[attr-defined]
    assert store.load("shared-case").findings[1].note == "the pose is different"
    at.button(key="case_prepare").click().run()
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download case (PDF)", "Download case (HTML)"]
    _button(at, "Remove from case", 0).click().run()  # type: ignore[attr-defined]
    assert len(store.load("shared-case").findings) == 1
    assert "Download case (PDF)" not in [b.label for b in at.get("download_button")]


def _batch(folder: Path, seeds: tuple[int, ...]) -> Path:
    from tests.synthetic import scene

    folder.mkdir(parents=True)
    for seed in seeds:
        scene(seed).rotate(2, fillcolor=(255, 255, 255)).save(folder / f"gen_{seed:04d}.png")
    return folder


def test_generate_page_adds_its_batch_to_the_case(
    planted: tuple[Path, Path], cases: Path, tmp_path: Path
) -> None:
    index, _ = planted
    batch = _batch(tmp_path / "uploads" / "generated-case", (2, 9))
    at = AppTest.from_file("../pages/generate.py", default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.session_state["last_generated_batch"] = str(batch)
    at.session_state["last_generated_target"] = {"index": str(index), "image_size": None}
    at.run()
    at.button(key="generate_to_case").click().run()
    assert not at.exception and not at.error
    case = CaseStore(cases).load(at.session_state["case_name"])
    assert sorted(f.match.id for f in case.findings) == [2, 9]
    assert all(f.query.path.endswith(".png") for f in case.findings)


def test_distributions_page_reports_a_scan_and_adds_it(
    planted: tuple[Path, Path], cases: Path, tmp_path: Path
) -> None:
    index, _ = planted
    batch = _batch(tmp_path / "uploads" / "generated-scan", (4, 11, 17))
    at = AppTest.from_file("../pages/distributions.py", default_timeout=240)
    at.session_state["index_path"] = str(index)
    at.session_state["last_generated_batch"] = str(batch)
    at.session_state["dist_reference"] = ""
    at.session_state["measure_batch_now"] = True
    at.run()
    assert not at.exception
    _button(at, "Make a report of this scan").click().run()  # type: ignore[attr-defined]
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert "Download scan report (PDF)" in labels
    _button(at, "Add this scan to the case").click().run()  # type: ignore[attr-defined]
    case = CaseStore(cases).load(at.session_state["case_name"])
    (scan,) = case.scans
    assert scan.generated["n"] == 3 and {f.match.id for f in scan.findings} == {4, 11, 17}


def test_a_reload_reopens_the_case_named_in_the_address(
    planted: tuple[Path, Path], cases: Path
) -> None:
    """Reloading the Case page used to start a new, empty case under a new name: the case
    name now lives in the address (?case=NAME), and a new session opened on it reopens it."""
    index, query = planted
    first = AppTest.from_file(CASE, default_timeout=180).run()
    name = first.session_state["case_name"]
    address = first.query_params["case"]
    assert (address[0] if isinstance(address, list) else address) == name
    finding = make_finding(open_index(index), query.name, query.read_bytes(), pictures=False)
    CaseStore(cases).add_finding(name, finding)

    reloaded = AppTest.from_file(CASE, default_timeout=180)
    reloaded.query_params["case"] = name
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.session_state["case_name"] == name
    assert any(name in m.value for m in reloaded.markdown)
    assert not any("This case is empty" in i.value for i in reloaded.info)

    hostile = AppTest.from_file(CASE, default_timeout=180)
    hostile.query_params["case"] = "../../etc"
    hostile.run()
    assert not hostile.exception and hostile.session_state["case_name"] != "../../etc"
