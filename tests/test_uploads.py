"""Uploaded zips: images and captions are extracted into a fresh folder; traversal,
symlinks, hidden and macOS files are skipped and reported; bombs, empty zips and
non-zips are refused with a clear message and leave nothing behind."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from lib.progress import Cancelled
from lib.uploads import (
    EmptyUpload,
    UnsafeArchive,
    discard_on_failure,
    extract_zip,
    remove_upload,
    slugify,
)
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
