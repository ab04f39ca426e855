"""Peak memory and time of hostile uploads, against an ordinary image measured in the same run.

Each input is loaded in a fresh Python process that reports its own peak resident memory
(VmHWM: Pillow's and numpy's C allocations included, which tracemalloc misses; getrusage's
ru_maxrss would keep the parent's high-water mark across fork). Inputs:

  baseline      an ordinary 1024 x 1024 RGB PNG of noise
  wide16.png    8000 x 9900 16-bit grey PNG of zeros, 154 KB (79.2 MP)
  tall_float    8 x 7,733,256 32-bit float TIFF of zeros, one deflate strip, 241 KB (61.9 MP)
  tall_strips   the same in strips of 8192 rows
  webp, jpeg2000, progressive.jpg   4000 x 4000 photos-like noise: checks the estimate
  padded.zip    1000 PNGs zero-padded to 1 MiB each, 1.2 MB (the reviewer's zip bomb)
  liar.zip      one bzip2 entry of 64 MiB of zeros declaring 1 KiB

Each is run with the code in the working tree ("now") and, unless --no-head, with
``git show HEAD:lib/images.py`` / ``lib/uploads.py`` ("HEAD"). The figures to quote are the
ratios to the baseline: absolute times on a shared 2-core machine are noise. ``estimate``
is :func:`lib.images.decode_memory` (MiB), which the measured growth over the
interpreter's own memory should not exceed.

    .venv/bin/python benchmarks/untrusted_inputs.py [--no-head]   # about 2 minutes
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.images import decode_memory
from tests.hostile import (
    LOAD_SETUP,
    TALL_FLOAT_SIZE,
    WIDE_16_BIT_SIZE,
    MiB,
    lying_bzip2_zip,
    measure_in_child,
    padded_png_zip,
    zero_float_tiff,
    zero_png16,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "untrusted_inputs.json"

HEAD_SETUP = """
import importlib.util
spec = importlib.util.spec_from_file_location("head_module", __PATH__)
head = importlib.util.module_from_spec(spec)
sys.modules["head_module"] = head
spec.loader.exec_module(head)
"""

HEAD_LOAD_SETUP = (
    HEAD_SETUP
    + """
def load(path, **kwargs):
    try:
        image = head.load_image(path, **kwargs).image
    except head.ImageLoadError as exc:
        return "refused: " + exc.reason
    return f"loaded {image.mode} {image.size[0]}x{image.size[1]}"
"""
)

EXTRACT_SETUP = """
import io, os, tempfile
from pathlib import Path
from lib.uploads import extract_zip as now_extract

def extract(zip_path, extract_zip):
    root = Path(tempfile.mkdtemp(prefix="replica-bench-zip-"))
    try:
        result = extract_zip(zip_path, "upload.zip", root=root)
        outcome = "extracted " + str(result.images) + " image(s)"
    except Exception as exc:
        outcome = "refused (" + type(exc).__name__ + "): " + str(exc)[:90]
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    import shutil; shutil.rmtree(root)
    return outcome + f"; {written / 1e6:,.0f} MB written"
"""


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(cells.repeat(8, 0).repeat(8, 1))


def write_inputs(folder: Path) -> dict[str, Path]:
    """The image inputs of the module docstring, written under ``folder``."""
    out: dict[str, Path] = {}

    def save(name: str, data: bytes) -> None:
        out[name] = folder / name
        out[name].write_bytes(data)

    def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        return buffer.getvalue()

    save("baseline.png", encoded(_noise(1024, 1024, 0), "PNG"))
    save("wide16.png", zero_png16(*WIDE_16_BIT_SIZE))
    save("tall_float.tif", zero_float_tiff(*TALL_FLOAT_SIZE))
    save("tall_strips.tif", zero_float_tiff(*TALL_FLOAT_SIZE, rows_per_strip=8192))
    photo = _noise(4000, 4000, 1)
    save("photo.webp", encoded(photo, "WEBP", quality=80))
    save("photo.jp2", encoded(photo, "JPEG2000"))
    save("progressive.jpg", encoded(photo, "JPEG", quality=90, progressive=True))
    return out


def head_file(relative: str, folder: Path) -> Path | None:
    """``git show HEAD:<relative>`` written into ``folder`` (read-only use of git)."""
    done = subprocess.run(
        ["git", "show", f"HEAD:{relative}"], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    path = folder / Path(relative).name.replace(".py", "_head.py")
    path.write_text(done.stdout, encoding="utf-8")
    return path


def measure_images(inputs: dict[str, Path], head_images: Path | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, path in inputs.items():
        with Image.open(path) as img:
            estimate = decode_memory(img) / MiB
        row: dict[str, object] = {"input": name, "bytes": path.stat().st_size}
        row["estimate_mib"] = round(estimate, 1)
        row["now"] = measure_in_child(f"load({str(path)!r})", LOAD_SETUP)
        if head_images is not None:
            setup = HEAD_LOAD_SETUP.replace("__PATH__", repr(str(head_images)))
            row["head"] = measure_in_child(f"load({str(path)!r})", setup)
        rows.append(row)
        print(f"  {name}: done", flush=True)
    return rows


def measure_zips(folder: Path, head_uploads: Path | None) -> list[dict[str, object]]:
    zips = {
        "padded.zip (1000 x 1 MiB)": padded_png_zip(1000),
        "liar.zip (bzip2, 64 MiB as 1 KiB)": lying_bzip2_zip(64 * MiB),
    }
    rows: list[dict[str, object]] = []
    for name, data in zips.items():
        path = folder / name.split()[0]
        path.write_bytes(data)
        row: dict[str, object] = {"input": name, "bytes": len(data)}
        row["now"] = measure_in_child(f"extract({str(path)!r}, now_extract)", EXTRACT_SETUP)
        if head_uploads is not None:
            setup = EXTRACT_SETUP + HEAD_SETUP.replace("__PATH__", repr(str(head_uploads)))
            row["head"] = measure_in_child(f"extract({str(path)!r}, head.extract_zip)", setup)
        rows.append(row)
        print(f"  {name}: done", flush=True)
    return rows


def print_table(rows: list[dict[str, object]], baseline: dict[str, float]) -> None:
    print(
        f"{'input':<34} {'size':>9} {'est MiB':>8}  {'code':<4} {'peak MB':>8} {'x base':>7} "
        f"{'seconds':>8} {'x base':>7}  outcome"
    )
    for row in rows:
        for code in ("now", "head"):
            result = row.get(code)
            if not isinstance(result, dict):
                continue
            peak, seconds = float(result["peak_mb"]), float(result["seconds"])
            print(
                f"{row['input']!s:<34} {int(str(row['bytes'])):>9,} "
                f"{row.get('estimate_mib', '')!s:>8}  {code:<4} {peak:>8.0f} "
                f"{peak / baseline['peak_mb']:>7.1f} {seconds:>8.2f} "
                f"{seconds / baseline['seconds']:>7.1f}  {str(result['outcome'])[:100]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-head", action="store_true", help="skip the HEAD code's runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replica-untrusted-") as tmp:
        folder = Path(tmp)
        head_images = None if args.no_head else head_file("lib/images.py", folder)
        head_uploads = None if args.no_head else head_file("lib/uploads.py", folder)
        print("writing the inputs...", flush=True)
        inputs = write_inputs(folder)
        print("loading images in child processes...", flush=True)
        image_rows = measure_images(inputs, head_images)
        print("extracting zips in child processes...", flush=True)
        zip_rows = measure_zips(folder, head_uploads)
    now_baseline = image_rows[0]["now"]
    assert isinstance(now_baseline, dict)
    baseline = {k: float(now_baseline[k]) for k in ("peak_mb", "seconds")}
    print(
        f"\nbaseline: {image_rows[0]['input']} loads in {baseline['seconds']:.3f} s with a "
        f"peak of {baseline['peak_mb']:.0f} MB (the interpreter and imports included)\n"
    )
    print_table(image_rows + zip_rows, baseline)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"baseline": baseline, "images": image_rows, "zips": zip_rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
