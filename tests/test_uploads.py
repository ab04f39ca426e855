"""Uploaded zips: images and captions are extracted into a fresh folder; traversal,
symlinks, hidden and macOS files are skipped and reported; bombs (one big entry, many
small ones, a lying bzip2 header), empty zips and non-zips are refused with a clear
message and leave nothing behind; a session's allowance and the disk's reserve are kept.
Loose uploads go once into a private folder, and old ones are swept at the next upload."""

from __future__ import annotations

import io
import os
import stat
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from lib.progress import Cancelled
from lib.uploads import (
    EmptyUpload,
    UnsafeArchive,
    UploadLedger,
    UploadLimitExceeded,
    _Budget,
    _extract_member,
    discard_on_failure,
    extract_zip,
    format_bytes,
    on_disk,
    remove_upload,
    save_uploads,
    session_ledger,
    slugify,
    sweep_temp_uploads,
    temp_upload_root,
)
from tests.hostile import MiB, lying_bzip2_zip, padded_png_zip
from tests.synthetic import scene


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    scene(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_images_and_captions_are_extracted_and_junk_is_reported(tmp_path: Path) -> None:
    data = make_zip(
        {
            "photos/a.png": png_bytes(1),
            "photos/a.txt": b"a red circle",
            "photos/sub/B.JPG": png_bytes(2),  # suffix case does not matter
            "../evil.png": png_bytes(3),
            "/etc/evil.png": png_bytes(4),
            "C:\\evil.png": png_bytes(5),
            "photos/..\\..\\evil.png": png_bytes(6),
            "__MACOSX/photos/._a.png": b"resource fork",
            "photos/.hidden.png": png_bytes(7),
            "photos/readme.md": b"# notes",
            "photos/script.sh": b"rm -rf /",
        }
    )
    root = tmp_path / "uploads"
    result = extract_zip(io.BytesIO(data), "My Photos!.zip", root=root)

    assert result.folder.parent == root and result.folder.name.startswith("my-photos-")
    assert result.images == 2 and result.captions == 1
    kept = sorted(p.relative_to(result.folder).as_posix() for p in result.folder.rglob("*.*"))
    assert kept == ["photos/a.png", "photos/a.txt", "photos/sub/B.JPG"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert "outside the upload folder" in reasons["../evil.png"]
    assert "absolute" in reasons["/etc/evil.png"]
    assert "absolute" in reasons["C:\\evil.png"]
    assert "outside the upload folder" in reasons["photos/..\\..\\evil.png"]
    assert "__MACOSX" in reasons["__MACOSX/photos/._a.png"]
    assert reasons["photos/.hidden.png"] == "hidden file"
    assert "not an image" in reasons["photos/readme.md"]
    assert len(reasons) == 8
    assert not (tmp_path / "evil.png").exists() and not Path("/etc/evil.png").exists()
    assert leftovers(root) == [result.folder.name], "no partial folder is left"


def test_symlink_entries_are_skipped(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", png_bytes(1))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    result = extract_zip(io.BytesIO(buffer.getvalue()), "links.zip", root=tmp_path)
    assert [s.reason for s in result.skipped] == ["symbolic link"]
    assert not (result.folder / "link.png").exists()


def test_a_path_on_disk_works_too(tmp_path: Path) -> None:
    path = tmp_path / "set.zip"
    path.write_bytes(make_zip({"x.png": png_bytes(1)}))
    result = extract_zip(path, path.name, root=tmp_path / "uploads")
    assert (result.folder / "x.png").read_bytes() == png_bytes(1)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", png_bytes(1)])
def test_a_non_zip_is_refused_with_a_clear_message(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a readable zip file.*upload a \.zip"):
        extract_zip(io.BytesIO(content), "photos.zip", root=tmp_path)
    assert leftovers(tmp_path) == []


def test_an_empty_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyUpload, match="holds no files"):
        extract_zip(io.BytesIO(make_zip({})), "empty.zip", root=tmp_path)
    assert leftovers(tmp_path) == []


def test_a_zip_without_images_says_what_it_held(tmp_path: Path) -> None:
    data = make_zip({"notes.md": b"x", "../a.png": png_bytes(1)})
    with pytest.raises(EmptyUpload, match="holds no image files") as info:
        extract_zip(io.BytesIO(data), "docs.zip", root=tmp_path)
    assert {s.path for s in info.value.skipped} == {"notes.md", "../a.png"}
    assert leftovers(tmp_path) == []


def test_zip_bombs_are_refused_before_writing(tmp_path: Path) -> None:
    zeros = make_zip({"bomb.bmp": bytes(8 * 1024 * 1024)})  # 8 MiB of zeros: ratio ~1000
    with pytest.raises(UnsafeArchive, match="zip bomb"):
        extract_zip(io.BytesIO(zeros), "bomb.zip", root=tmp_path)
    many = make_zip({f"{i}.png": b"x" for i in range(11)}, zipfile.ZIP_STORED)
    with pytest.raises(UnsafeArchive, match="11 entries"):
        extract_zip(io.BytesIO(many), "many.zip", root=tmp_path, max_files=10)
    big = make_zip({"a.png": png_bytes(1), "b.png": png_bytes(2)})
    with pytest.raises(UnsafeArchive, match="add up to more than"):
        extract_zip(io.BytesIO(big), "big.zip", root=tmp_path, max_total_bytes=len(png_bytes(1)))
    assert leftovers(tmp_path) == []


def test_a_lying_size_header_is_caught(tmp_path: Path) -> None:
    data = bytearray(make_zip({"a.png": png_bytes(1)}, zipfile.ZIP_STORED))
    real = len(png_bytes(1))
    # shrink the declared size in both headers; the stored bytes stay the same
    for header, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(header) + offset
        data[at : at + 4] = (real // 2).to_bytes(4, "little")
    with pytest.raises(ValueError):
        extract_zip(io.BytesIO(bytes(data)), "liar.zip", root=tmp_path)
    assert leftovers(tmp_path) == []


def test_cancelling_mid_extraction_leaves_no_partial_folder(tmp_path: Path) -> None:
    data = make_zip({f"{i}.png": png_bytes(i) for i in range(5)})

    def cancel_at_third(done: int, total: int, message: str = "") -> None:
        if done == 3:
            raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        extract_zip(io.BytesIO(data), "set.zip", root=tmp_path, progress=cancel_at_third)
    assert leftovers(tmp_path) == []


def test_discard_on_failure_removes_the_upload_only_on_error(tmp_path: Path) -> None:
    data = make_zip({"a.png": png_bytes(1)})
    kept = extract_zip(io.BytesIO(data), "a.zip", root=tmp_path).folder
    with discard_on_failure(kept, tmp_path):
        pass
    assert kept.is_dir()
    with pytest.raises(KeyboardInterrupt), discard_on_failure(kept, tmp_path):
        raise KeyboardInterrupt
    assert not kept.exists()


def test_remove_upload_refuses_folders_outside_the_root(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(PermissionError):
        remove_upload(other, tmp_path / "uploads")
    assert other.is_dir()


def test_slugify() -> None:
    assert slugify("My Photos (2024).ZIP") == "my-photos-2024"
    assert slugify("../../x.zip") == "x"
    assert slugify("???.zip") == "upload"


# --- limits: zip bombs, lying headers, the session's allowance, the disk -----------------


def test_many_one_mib_entries_of_zeros_are_refused_before_writing(tmp_path: Path) -> None:
    data = padded_png_zip(40)  # 40 x 1 MiB in ~48 KB: each entry passes the per-entry check
    assert len(data) < 100_000
    with pytest.raises(UnsafeArchive, match="zip bomb") as info:
        extract_zip(io.BytesIO(data), "padded.zip", root=tmp_path)
    assert "40 MiB" in str(info.value)  # says what it would have expanded to
    assert leftovers(tmp_path) == []


def test_a_lying_bzip2_header_is_never_decompressed(tmp_path: Path) -> None:
    # 64 MiB of zeros declared as 1 KiB: zipfile would inflate the whole entry in one read
    data = lying_bzip2_zip(64 * MiB, declared_bytes=1024)
    tracemalloc.start()
    try:
        with pytest.raises(EmptyUpload) as info:
            extract_zip(io.BytesIO(data), "liar.zip", root=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB allocated"
    [skipped] = info.value.skipped
    assert "method 12" in skipped.reason and "deflate" in skipped.reason
    assert leftovers(tmp_path) == []


def test_extraction_never_writes_more_than_the_declared_total(tmp_path: Path) -> None:
    data = make_zip({"a.png": png_bytes(1), "b.png": png_bytes(2)})
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.infolist()[1]
    budget = _Budget(left=info.file_size - 10)  # the archive declared less than b.png holds
    with pytest.raises(UnsafeArchive, match="expands past the sizes the zip declares"):
        _extract_member(archive, info, tmp_path / "b.png", budget)


def test_the_session_allowance_is_shared_by_its_uploads(tmp_path: Path) -> None:
    zip_one = make_zip({"a.png": png_bytes(1)})
    zip_two = make_zip({"b.png": png_bytes(2)})
    one_upload = on_disk(len(png_bytes(1)))  # a file is charged at least a disk block
    ledger = UploadLedger(limit_bytes=one_upload + 100)
    first = extract_zip(io.BytesIO(zip_one), "one.zip", root=tmp_path, ledger=ledger)
    assert ledger.used() == one_upload
    with pytest.raises(UploadLimitExceeded) as info:
        extract_zip(io.BytesIO(zip_two), "two.zip", root=tmp_path, ledger=ledger)
    message = str(info.value)
    assert "upload_session_bytes" in message and "ask the administrator" in message
    assert format_bytes(ledger.limit_bytes) in message
    assert leftovers(tmp_path) == [first.folder.name]
    remove_upload(first.folder, tmp_path)  # a deleted upload no longer counts
    assert ledger.used() == 0
    extract_zip(io.BytesIO(zip_two), "two.zip", root=tmp_path, ledger=ledger)


def test_uploads_keep_the_disk_reserve_free(tmp_path: Path) -> None:
    data = make_zip({"a.png": png_bytes(1)})
    with pytest.raises(UploadLimitExceeded, match="upload_min_free_bytes"):
        extract_zip(io.BytesIO(data), "a.zip", root=tmp_path, min_free_bytes=2**62)
    assert leftovers(tmp_path) == []


def test_session_ledger_lives_in_the_session_state() -> None:
    state: dict[str, object] = {}
    ledger = session_ledger(state, 1000)
    assert session_ledger(state, 2000) is ledger and ledger.limit_bytes == 2000
    assert format_bytes(1536 * MiB) == "1.5 GiB" and format_bytes(320 * MiB) == "320 MiB"


# --- loose uploads (the Distributions page) ---------------------------------------------


def test_loose_uploads_are_saved_once_and_charged_once(tmp_path: Path) -> None:
    files = [("dir/../cat.png", png_bytes(1)), ("dog\0.png", png_bytes(2))]
    ledger = UploadLedger()
    folder = save_uploads(files, root=tmp_path / "sets", ledger=ledger)
    assert sorted(p.name for p in folder.iterdir()) == ["0000_cat.png", "0001_dog.png"]
    assert save_uploads(files, root=tmp_path / "sets", ledger=ledger) == folder
    assert ledger.used() == len(png_bytes(1)) + len(png_bytes(2))
    assert stat.S_IMODE((tmp_path / "sets").stat().st_mode) == 0o700
    with pytest.raises(UploadLimitExceeded, match="upload_session_bytes"):
        save_uploads([("x.png", png_bytes(3))], root=tmp_path / "sets", ledger=UploadLedger(10))


def test_old_upload_sets_are_swept_at_the_next_upload_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "sets"
    root.mkdir(mode=0o700)
    old, staging, fresh = "set-" + "a" * 16, "set-" + "b" * 16 + ".0f0f0f", "set-" + "c" * 16
    others = ["notes", "set-" + "d" * 15, "set-" + "E" * 16]  # not our names: never touched
    for name in [old, staging, fresh, *others]:
        (root / name).mkdir()
        (root / name / "0000_x.png").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"x")
    (root / ("set-" + "f" * 16)).symlink_to(outside)  # a link with our name: never followed
    day_ago = time.time() - 30 * 3600
    for path in [root / old, root / staging, outside, *(root / n for n in others)]:
        os.utime(path, (day_ago, day_ago))
    os.utime(root / ("set-" + "f" * 16), (day_ago, day_ago), follow_symlinks=False)

    save_uploads([("y.png", png_bytes(1))], root=root, max_age_hours=24)

    left = sorted(p.name for p in root.iterdir())
    assert old not in left and staging not in left
    assert {fresh, *others, "set-" + "f" * 16} <= set(left)
    assert (outside / "keep.png").exists()


def test_the_default_loose_upload_folder_is_private_and_sweeps_the_old_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    legacy = tmp_path / ("replica-upload-" + "1" * 16)  # where earlier versions wrote
    legacy.mkdir()
    unrelated = tmp_path / "replica-upload-mine"
    unrelated.mkdir()
    for path in (legacy, unrelated):
        os.utime(path, (time.time() - 48 * 3600,) * 2)
    folder = save_uploads([("a.png", png_bytes(1))])
    assert folder.parent == temp_upload_root() == tmp_path / f"replica-uploads-{os.getuid()}"
    assert not legacy.exists() and unrelated.exists()
    assert sweep_temp_uploads(folder.parent, 0, now=time.time() + 1) == [folder]
