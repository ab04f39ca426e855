"""Indexes page: the indexes on this server with their cards; build a new one from an
allowed server folder or an uploaded zip (live progress, skipped-file report, cancel);
add images to the selected index; delete an index after typing its name."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from lib.app_config import AppConfig, available_indexes, load_config
from lib.embedders import EMBEDDERS
from lib.embedders.base import EmbedderUnavailable
from lib.embedders.registry import DEFAULT_EMBEDDER
from lib.images import SkippedFile
from lib.index import (
    BuildReport,
    IndexError_,
    NoImagesError,
    add_to_index,
    build_index,
    delete_index,
    list_indexes,
)
from lib.index.builder import staging_path
from lib.index.catalog import new_index_path, read_card
from lib.progress import ProgressCallback
from lib.uploads import (
    EmptyUpload,
    ExtractedUpload,
    discard_on_failure,
    extract_zip,
    format_bytes,
    session_ledger,
)
from lib.verdict.sensitivity import learn_after_write
from pages.common import (
    INDEX_KEY,
    PENDING_INDEX_KEY,
    display_path,
    leave_folder_mode,
    select_index,
    show_error,
    streamlit_progress,
)

# (no bare strings at module level: Streamlit's magic would print them on the page)
RUNNING_KEY = "indexes_running"  # set while a build or add runs; still set next run: stopped
RESULT_KEY = "indexes_result"  # outcome of the last build, add or delete, shown once
FOLDER, ZIP = "a folder on the server", "an uploaded zip"
EXPECTED = (ValueError, OSError, IndexError_, EmbedderUnavailable)
Work = Callable[[Path, ProgressCallback], BuildReport]


def show_result() -> None:
    """The outcome of the last action (once), or a note that a job was stopped."""
    stopped = st.session_state.pop(RUNNING_KEY, None)
    if stopped:
        st.warning(
            f"The {stopped} was stopped before it finished (Cancel or another action); "
            "nothing was written and any uploaded zip was discarded.",
            icon="⏹️",
        )
    result = st.session_state.pop(RESULT_KEY, None)
    if result:
        getattr(st, result["level"])(result["text"])
        skipped_table(result.get("skipped", []))


def skipped_table(rows: list[dict[str, str]], key: str = "indexes_skipped") -> None:
    """The files left out, as a (file, reason) table; the file relative to its folder."""
    if rows:
        st.markdown(f"**{len(rows)} file(s) left out**")
        st.dataframe(
            rows,
            hide_index=True,
            key=key,
            column_order=["file", "reason"],
            column_config={"reason": st.column_config.TextColumn(width="large")},
        )


def source_label(kind: str, upload: Any) -> str:
    """What an index records as the source of a zip's images: the zip's own name (its
    extraction folder is a server detail); "" for a folder (the folder is recorded)."""
    return str(upload.name) if kind == ZIP and upload is not None else ""


def shown_name(path: Path, config: AppConfig) -> str:
    """A skipped file as a user knows it: relative to the upload that held it (without
    the extraction folder's generated name) or to the allowed folder it lies in; else its
    own name. Never the server's layout."""
    upload_root = config.upload_root.resolve()
    if path.resolve().is_relative_to(upload_root):
        parts = path.resolve().relative_to(upload_root).parts
        return "/".join(parts[1:]) or path.name
    return display_path(path)


def skipped_rows(config: AppConfig, *groups: list[SkippedFile]) -> list[dict[str, str]]:
    """(file, reason, path) per skipped file: ``file`` relative to the allowed folder or the
    upload that held it (never the server's layout), ``path`` as recorded."""
    rows = []
    for group in groups:
        for s in group:
            row = s.to_dict()
            path = Path(row["path"])
            row["file"] = shown_name(path, config) if path.is_absolute() else row["path"]
            rows.append(row)
    return rows


def listing(config: AppConfig) -> None:
    """Every index the app can see, one row per card."""
    paths = available_indexes(config)
    st.subheader("Indexes on this server")
    if not paths:
        st.info("No index yet on this server: build one below.")
        return
    selected = st.session_state.get(PENDING_INDEX_KEY) or st.session_state.get(INDEX_KEY)
    cards = [read_card(path) for path in paths]
    rows = [
        {
            "in use": "✓" if str(p) == selected else "",
            **c.row(),
            # a folder source by its name (a zip's by the zip's name), never its server path
            "sources": ", ".join(Path(s).name if s.startswith("/") else s for s in c.sources),
        }
        for c, p in zip(cards, paths, strict=True)
    ]
    st.dataframe(
        rows,
        hide_index=True,
        key="indexes_table",
        column_order=[k for k in rows[0] if k != "path"],
    )
    damaged = [c for c in cards if c.error]
    if damaged:
        st.warning(
            "These indexes cannot be read (the others are fine); rebuild them or delete "
            "them below:\n\n" + "\n".join(f"- **{c.name}**: {c.error}" for c in damaged),
            icon=":material/warning:",
        )


def source_picker(config: AppConfig, prefix: str, upload_key: str) -> tuple[str, str, Any]:
    """Where images come from: (kind, folder text, uploaded zip or None)."""
    kind = st.radio("Images from", [FOLDER, ZIP], horizontal=True, key=f"{prefix}_source")
    if kind == FOLDER:
        roots = [config.upload_root, *config.image_roots]
        folder = st.text_input(
            "Folder on the server (searched recursively)",
            key=f"{prefix}_folder",
            placeholder=str(config.image_roots[0]) if config.image_roots else "",
        )
        st.caption(
            "Allowed folders (and anything inside them): " + ", ".join(f"`{r}`" for r in roots)
        )
        return kind, folder, None
    upload = st.file_uploader("Zip of images (and .txt captions)", type=["zip"], key=upload_key)
    st.caption(
        f"Up to {st.get_option('server.maxUploadSize')} MB per upload, expanding to at most "
        f"{format_bytes(config.upload_zip_bytes)}; {format_bytes(config.upload_session_bytes)} "
        "of uploads per session. Images and same-name .txt captions are kept; other files, "
        "hidden files and unsafe paths are skipped."
    )
    return kind, "", upload


def resolve_images(
    config: AppConfig, kind: str, folder: str, upload: Any
) -> tuple[Path, ExtractedUpload | None]:
    """The folder to index: an allowed server folder, or the upload extracted under uploads."""
    if kind == FOLDER:
        if not folder.strip():
            raise ValueError("enter a folder inside one of the allowed folders")
        return config.allowed_image_dir(folder.strip()), None
    if upload is None:
        raise ValueError("choose a .zip file to upload first")
    callback, bar = streamlit_progress("Extracting the zip")
    extracted = extract_zip(
        upload,
        upload.name,
        root=config.upload_root,
        max_total_bytes=config.upload_zip_bytes,
        ledger=session_ledger(st.session_state, config.upload_session_bytes),
        min_free_bytes=config.upload_min_free_bytes,
        progress=callback,
    )
    bar.empty()
    return extracted.folder, extracted


def hint_for(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "Pick a folder inside the allowed folders listed above, or upload a zip."
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return "Check the folder path (it is on the server, not on your computer)."
    if isinstance(exc, NoImagesError | EmptyUpload):
        return "Point at a folder or zip with .jpg, .png, .webp, .gif, .bmp or .tif images."
    if isinstance(exc, EmbedderUnavailable):
        return "Pick another embedder, or run `make setup` on the server."
    return "Fix the input and press the button again."


def run_job(
    action: str, config: AppConfig, kind: str, folder: str, upload: Any, work: Work
) -> tuple[BuildReport, ExtractedUpload | None] | None:
    """Run a build or add with a progress bar and a Cancel button; None after an error.

    Cancel (or any other click) makes Streamlit stop this run by raising inside the
    progress callback: the index write never starts, and the extracted upload is removed.
    """
    st.session_state[RUNNING_KEY] = action
    cancel = st.empty()
    cancel.button("Cancel", key=f"{action.split()[0]}_cancel", help="Stop now; nothing is written")
    extracted: ExtractedUpload | None = None
    try:
        images, extracted = resolve_images(config, kind, folder, upload)
        with discard_on_failure(extracted.folder if extracted else None, config.upload_root):
            callback, bar = streamlit_progress("Embedding images")
            report = work(images, callback)
            bar.empty()
    except EXPECTED as exc:
        st.session_state.pop(RUNNING_KEY, None)
        cancel.empty()
        show_error(f"The {action} failed", exc, hint_for(exc))
        earlier = extracted.skipped if extracted else []
        skipped_table(skipped_rows(config, earlier, getattr(exc, "skipped", [])), key="job_skipped")
        return None
    st.session_state.pop(RUNNING_KEY, None)
    cancel.empty()
    return report, extracted


def finish(
    text: str,
    path: str,
    report: BuildReport,
    extracted: ExtractedUpload | None,
    config: AppConfig,
) -> None:
    """Keep the outcome for the next run, select ``path`` (as the sidebar lists it), rerun."""
    earlier = extracted.skipped if extracted else []
    if earlier:
        text += f" {len(earlier)} file(s) in the zip were left out (see below)."
    st.session_state[RESULT_KEY] = {
        "level": "success",
        "text": text,
        "skipped": skipped_rows(config, earlier, report.skipped),
    }
    select_index(path)
    st.rerun()


def build_section(config: AppConfig) -> None:
    st.subheader("Build a new index")
    name = st.text_input(
        "Name",
        key="build_name",
        max_chars=64,
        help="Letters, digits, spaces, '-' and '_'; a new name",
    )
    kind, folder, upload = source_picker(config, "build", "zip_upload")
    names = list(EMBEDDERS)
    embedder = st.selectbox(
        "Embedder",
        names,
        index=names.index(DEFAULT_EMBEDDER),
        key="build_embedder",
        format_func=lambda n: f"{n}: {EMBEDDERS[n].config.description}",
    )
    if not st.button("Build index", key="build_button", type="primary"):
        return
    try:
        dest = new_index_path(name, config.index_root)
    except (ValueError, FileExistsError) as exc:
        show_error("Choose another name", exc)
        return

    def work(images: Path, progress: ProgressCallback) -> BuildReport:
        try:
            built = build_index(
                images,
                dest,
                embedder=embedder,
                overwrite=False,
                progress=progress,
                source=source_label(kind, upload),
            )
        except BaseException:
            # the app offers no --resume: a cancelled or failed build leaves nothing behind
            shutil.rmtree(staging_path(dest), ignore_errors=True)
            raise
        return learn_after_write(built, progress)

    done = run_job("build", config, kind, folder, upload, work)
    if done:
        text = f"Built **{dest.name}** with `{embedder}`: {done[0].summary()}. It is now selected."
        finish(text, str(dest), *done, config)


def add_section(config: AppConfig) -> None:
    st.subheader("Add images to the selected index")
    target = st.session_state.get(INDEX_KEY)
    if not target:
        st.info("Select an index in the sidebar first.")
        return
    st.caption(
        f"Adding to **{Path(target).name}**; files already in it (same content) are skipped."
    )
    kind, folder, upload = source_picker(config, "add", "add_zip_upload")
    if not st.button("Add images", key="add_button"):
        return

    def work(images: Path, progress: ProgressCallback) -> BuildReport:
        added = add_to_index(target, images, progress=progress, source=source_label(kind, upload))
        return learn_after_write(added, progress)

    done = run_job("add", config, kind, folder, upload, work)
    if done:
        text = f"Added to **{Path(target).name}**: {done[0].summary()}."
        finish(text, target, *done, config)


def delete_section(config: AppConfig) -> None:
    st.subheader("Delete an index")
    managed = [str(p) for p in list_indexes(config.index_root)]
    if not managed:
        st.caption("No index managed here to delete.")
        return
    selected = st.session_state.get(INDEX_KEY)
    target = st.selectbox(
        "Index to delete",
        managed,
        index=managed.index(selected) if selected in managed else 0,
        key="delete_target",
        format_func=lambda p: Path(p).name,
    )
    name = Path(target).name
    st.text_input(f"Type **{name}** to confirm", key="delete_confirm")
    st.button("Delete index", key="delete_button", on_click=delete_callback, args=(target,))


def delete_callback(target: str) -> None:
    """Runs before the script (so it may reset widgets): delete when the name matches."""
    name = Path(target).name
    typed = str(st.session_state.get("delete_confirm", "")).strip()
    if typed != name:
        st.session_state[RESULT_KEY] = {
            "level": "error",
            "text": f"**Not deleted.** You typed {typed!r}, not {name!r}. "
            "Type the index name exactly to confirm.",
        }
        return
    try:
        delete_index(target)
    except (IndexError_, OSError) as exc:
        st.session_state[RESULT_KEY] = {"level": "error", "text": f"**Not deleted.** {exc}"}
        return
    st.session_state["delete_confirm"] = ""
    if st.session_state.get(INDEX_KEY) == target:
        select_index("")
    st.session_state[RESULT_KEY] = {"level": "success", "text": f"Deleted index **{name}**."}


leave_folder_mode()
st.header("Indexes: build, extend and delete")
try:
    app_config = load_config()
except (OSError, ValueError) as exc:
    show_error("The app settings could not be read", exc, "Fix replica.toml or $REPLICA_CONFIG.")
    st.stop()
show_result()
listing(app_config)
build_tab, add_tab, delete_tab = st.tabs(["Build", "Add images", "Delete"])
with build_tab:
    build_section(app_config)
with add_tab:
    add_section(app_config)
with delete_tab:
    delete_section(app_config)
