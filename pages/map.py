"""Map page: every training image as a point (UMAP of its embedding, fitted on a sample of
at most 50,000 and the rest placed on it), coloured by caption group or by how close its
nearest other image is; at most 20,000 points drawn over a density image of all of them;
your own images placed on the same map as stars (by :func:`lib.projection.place_images`);
pick a point to see the image and its nearest neighbours. A stored map that cannot be used
(damaged, or written by hand) is offered to compute again, with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from lib.app_config import load_config
from lib.images import IMAGE_SUFFIXES
from lib.index import ReplicaIndex
from lib.projection import (
    MIN_POINTS,
    OTHER_GROUP,
    PlacedImages,
    Projection,
    ProjectionError,
    caption_groups,
    density_grid,
    drawn_positions,
    find_rows,
    grid_representatives,
    map_table,
    place_images,
    project,
)
from lib.search import Match, rank_vectors
from lib.st_cache import (
    cached_embedder,
    cached_index,
    cached_map_points,
    cached_projection,
    cached_thumbnail,
    manifest_mtime,
    projection_mtime,
)
from pages.common import INDEX_KEY, current_index, file_label, show_error, streamlit_progress

# st.session_state: the picked point, an index row (>= 0) or upload -1, -2, ... (None).
SELECTED_KEY = "map_selected"
# st.session_state: {index path: Projection} for maps that could not be written to disk.
UNSTORED_KEY = "map_unstored"
# st.session_state: the names of the uploads last placed (new uploads get selected).
PLACED_KEY = "map_placed"
# Pictures on the map: the most crowded cells of a grid, and the selected point's neighbours.
PICTURE_CELLS = 14
PICTURES = 60
PICTURE_PX = 64
ZOOM = 0.12  # the view around a selected point: this share of the map's span each side
COLOURS = ["caption group", "nearest-neighbour similarity"]
GROUPS = 20
NEIGHBOURS = 6
THUMB = 150
PALETTE = [c for c in plotly.colors.qualitative.Dark24 if c != "#222A2A"]
DENSITY_BINS = 160


NO_UPLOADS = PlacedImages([], np.zeros((0, 0), np.float32), np.zeros((0, 2), np.float32), [])


@st.cache_data(show_spinner="Placing your images on the map…", max_entries=16)
def place_uploads(
    path: str, mtime: float, map_key: str, files: tuple[tuple[str, bytes], ...], _p: Projection
) -> PlacedImages:
    """Uploaded files placed on the map ``map_key`` names (:func:`lib.projection.place_images`
    with the index's cached embedder)."""
    return place_images(_p, files, cached_index(path, mtime), cached_embedder(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def map_density(map_key: str, _p: Projection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How many points of the map (all of them, drawn or not) fall in each cell of a grid:
    :func:`lib.projection.density_grid`; ``map_key`` names the map."""
    return density_grid(_p.coords, DENSITY_BINS)


def with_rows(
    points: pd.DataFrame, projection: Projection, index: ReplicaIndex, rows: list[int]
) -> pd.DataFrame:
    """``points`` plus the index rows in ``rows`` that are projected but not drawn (the
    selected image and its neighbours), grouped like the drawn points where they can be."""
    drawn = set(points["row"].tolist())
    missing = [r for r in rows if r not in drawn and projection.position(r) is not None]
    if not missing:
        return points
    positions = np.array([projection.position(r) for r in missing], dtype=np.int64)
    extra = map_table(projection, index.metadata, GROUPS, positions, index.manifest.sources)
    known = set(points["group"])
    groups = caption_groups(index.metadata.iloc[missing], index.manifest.sources)
    extra["group"] = [g if g in known else OTHER_GROUP for g in groups]
    return pd.concat([points, extra], ignore_index=True)


def compute_map(index: ReplicaIndex, fit_points: int) -> Projection | None:
    """Fit the projection with a progress bar; None (with the reason shown) on failure."""
    with st.status("Computing the map…", expanded=True) as status:
        callback, bar = streamlit_progress("Map")
        try:
            result = project(index, progress=callback, max_points=fit_points)
        except (ValueError, MemoryError, OSError) as exc:
            status.update(label="The map could not be computed", state="error")
            show_error("The map could not be computed", exc)
            return None
        bar.empty()
        status.update(label=f"Map ready: {result.n_points:,} points", state="complete")
    if result.path is None:
        st.warning("The map could not be stored beside the index; it lasts for this session.")
        st.session_state.setdefault(UNSTORED_KEY, {})[str(index.path)] = result
    return result


def select_from_chart() -> None:
    """on_select of the chart: remember the clicked point (its customdata)."""
    points = st.session_state["map_chart"].selection.points
    if points and points[0].get("customdata") is not None:
        value = points[0]["customdata"]
        st.session_state[SELECTED_KEY] = int(value[0] if isinstance(value, list) else value)


def select_from_found() -> None:
    """on_change of the find box's list: remember the picked row."""
    if st.session_state.get("map_found") is not None:
        st.session_state[SELECTED_KEY] = int(st.session_state["map_found"])


def select_from_input() -> None:
    """on_change of the id input: remember the typed row."""
    st.session_state[SELECTED_KEY] = st.session_state.get("map_point")


def map_figure(
    points: pd.DataFrame,
    colour: str,
    uploads: PlacedImages,
    selected: int | None,
    pictures: list[tuple[str, float, float, float, float]] | None = None,
    density: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> go.Figure:
    """The scatter: training points (WebGL), uploads as stars, the selected point ringed,
    labelled and zoomed to; ``pictures`` (path, x, y, size in map units, opacity) drawn as
    images under the points; ``density`` (counts [y, x], x centres, y centres) of all the
    images, drawn and not, as grey shading behind them."""
    fig = go.Figure()
    if density is not None:
        counts, xs, ys = density
        fig.add_trace(
            go.Heatmap(
                z=np.where(counts > 0, np.log1p(counts), np.nan), x=xs, y=ys,
                name="all images (density)", colorscale="Greys", showscale=False,
                opacity=0.45, hoverinfo="skip", zsmooth="best",
            )
        )  # fmt: skip
    size = 4 if len(points) > 10_000 else 7
    hover = "%{hovertext}<extra></extra>"

    def text(frame: pd.DataFrame) -> list[str]:
        return [
            f"#{r} {c or '(no caption)'}<br>{f}<br>nearest other: {n:.3f}"
            for r, c, f, n in zip(
                frame["row"], frame["caption"], frame["file"], frame["nn"], strict=True
            )
        ]

    if colour == COLOURS[0]:
        counts = points["group"].value_counts()
        order = sorted((g for g in counts.index if g != OTHER_GROUP), key=lambda g: (-counts[g], g))
        if OTHER_GROUP in set(points["group"]):
            order.append(OTHER_GROUP)
        for i, group in enumerate(order):
            part = points[points["group"] == group]
            colour_i = "#c7c7c7" if group == OTHER_GROUP else PALETTE[i % len(PALETTE)]
            fig.add_trace(
                go.Scattergl(
                    x=part["x"].to_numpy(), y=part["y"].to_numpy(), mode="markers",
                    name=f"{group} ({len(part):,})", customdata=part["row"].to_numpy(),
                    hovertext=text(part), hovertemplate=hover,
                    marker={"size": size, "color": colour_i, "opacity": 0.8},
                )
            )  # fmt: skip
    else:
        fig.add_trace(
            go.Scattergl(
                x=points["x"].to_numpy(), y=points["y"].to_numpy(), mode="markers",
                name="training images", customdata=points["row"].to_numpy(),
                hovertext=text(points), hovertemplate=hover,
                marker={
                    "size": size, "color": points["nn"].to_numpy(), "colorscale": "Viridis",
                    "cmin": float(max(0.0, points["nn"].min())), "cmax": 1.0, "opacity": 0.85,
                    "colorbar": {"title": {"text": "nearest<br>cosine"}},
                },
            )
        )  # fmt: skip
    if len(uploads.names):
        fig.add_trace(
            go.Scatter(
                x=uploads.coords[:, 0], y=uploads.coords[:, 1], mode="markers+text",
                name="your images", text=uploads.names, textposition="top center",
                customdata=-1 - np.arange(len(uploads.names)),
                hovertext=[f"your image: {n}" for n in uploads.names], hovertemplate=hover,
                marker={"symbol": "star", "size": 20, "color": "#e4002b",
                        "line": {"width": 1.5, "color": "black"}},
            )
        )  # fmt: skip
    spot_xy, label = None, ""
    if selected is not None and selected >= 0:
        spot = points[points["row"] == selected]
        if len(spot):
            spot_xy = (float(spot["x"].iloc[0]), float(spot["y"].iloc[0]))
            caption = str(spot["caption"].iloc[0]) or str(spot["file"].iloc[0])
            label = f"#{selected} {caption}"
    elif selected is not None and -1 - selected < len(uploads.names):
        which = -1 - selected
        spot_xy = (float(uploads.coords[which, 0]), float(uploads.coords[which, 1]))
        label = f"your image: {uploads.names[which]}"
    for path, x, y, side, opacity in pictures or []:
        thumb = cached_thumbnail(path, PICTURE_PX)
        if thumb is not None:  # below the points, so that the points and the ring stay visible
            fig.add_layout_image(
                source=thumb, xref="x", yref="y", x=x, y=y, sizex=side, sizey=side,
                xanchor="center", yanchor="middle", layer="below", opacity=opacity,
            )  # fmt: skip
    xaxis: dict[str, object] = {"visible": False}
    yaxis: dict[str, object] = {"visible": False, "scaleanchor": "x"}
    if spot_xy is not None:
        fig.add_trace(
            go.Scatter(
                x=[spot_xy[0]], y=[spot_xy[1]], mode="markers", name="selected",
                customdata=[selected], hoverinfo="skip",
                marker={"symbol": "circle-open", "size": 30, "color": "#e4002b",
                        "line": {"width": 4}},
            )
        )  # fmt: skip
        fig.add_annotation(
            x=spot_xy[0], y=spot_xy[1], text=f"<b>{label}</b>", showarrow=True, arrowhead=2,
            arrowwidth=2, arrowcolor="#e4002b", ax=0, ay=-60, bgcolor="white",
            bordercolor="#e4002b", borderwidth=2,
        )  # fmt: skip
        span = float(max(np.ptp(points["x"].to_numpy()), np.ptp(points["y"].to_numpy()), 1e-6))
        half = ZOOM * span
        xaxis["range"] = [spot_xy[0] - half, spot_xy[0] + half]
        yaxis["range"] = [spot_xy[1] - half, spot_xy[1] + half]
    fig.update_layout(
        height=640, margin={"l": 0, "r": 0, "t": 40, "b": 0},
        # a new selection moves the view to it; panning and zooming are kept otherwise
        uirevision=f"map-{selected}", xaxis=xaxis, yaxis=yaxis, dragmode="pan",
        # above the plot, so that it never covers the colour bar on the right
        legend={"itemsizing": "constant", "orientation": "h", "x": 0, "y": 1.0,
                "xanchor": "left", "yanchor": "bottom"},
    )  # fmt: skip
    return fig


def map_pictures(
    index: ReplicaIndex,
    points: pd.DataFrame,
    selected: int | None,
    neighbours: list[int],
) -> list[tuple[str, float, float, float, float]]:
    """(path, x, y, size, opacity) of the pictures to draw: one per crowded cell of the map
    (faint while a point is selected), and the selected point and its neighbours (smaller,
    sized for the zoomed view)."""
    coords = points[["x", "y"]].to_numpy()
    positions, side = grid_representatives(coords, PICTURE_CELLS, PICTURES)
    paths = index.metadata["path"].astype(str).to_numpy()
    rows = points["row"].to_numpy()
    focus = selected is not None
    faint = 0.3 if focus else 0.9
    out = [
        (str(paths[rows[p]]), float(coords[p, 0]), float(coords[p, 1]), side * 0.9, faint)
        for p in positions
    ]
    near = ([selected] if selected is not None and selected >= 0 else []) + neighbours
    where = {int(r): i for i, r in enumerate(rows)}
    small = ZOOM * side * PICTURE_CELLS * 0.25
    for r in near:
        if r in where:
            i = where[r]
            out.append((str(paths[r]), float(coords[i, 0]), float(coords[i, 1]), small, 1.0))
    return out


def neighbour_row(matches: list[Match]) -> None:
    """Thumbnails of matches in one row, with caption and cosine."""
    if not matches:
        st.caption("No other image in the index.")
        return
    for col, m in zip(st.columns(len(matches)), matches, strict=True):
        label = f"#{m.id} {m.caption or file_label(m.path)} · {m.score:.3f}"
        thumb = cached_thumbnail(m.path, THUMB)
        if thumb is None:
            col.caption(f"{label} (image not readable)")
        else:
            col.image(thumb, caption=label)


def neighbour_rows(index: ReplicaIndex, row: int) -> list[int]:
    """Index rows of the ``NEIGHBOURS`` nearest other images of ``row``."""
    vector = index.get_vectors(np.array([row]))
    _, ids = index.search_vectors(vector, NEIGHBOURS + 1)
    return [int(i) for i in ids[0] if int(i) != row and int(i) >= 0][:NEIGHBOURS]


def show_training_point(index: ReplicaIndex, row: int, projection: Projection) -> None:
    """The picked training image beside its nearest neighbours."""
    meta = index.row(row)
    vector = index.get_vectors(np.array([row]))
    result = rank_vectors(index, vector, [str(meta["path"])], top_k=NEIGHBOURS + 1)[0]
    matches = [m for m in result.matches if m.id != meta["id"]][:NEIGHBOURS]
    position = projection.position(row)
    left, right = st.columns([1, 4])
    with left:
        st.markdown(f"**#{meta['id']} {meta['caption'] or file_label(meta['path'])}**")
        thumb = cached_thumbnail(str(meta["path"]), THUMB + 50)
        if thumb is not None:
            st.image(thumb, caption=file_label(meta["path"]))
        if position is None:
            st.caption("Not drawn on the map (not in the random subset).")
        else:
            st.caption(f"Nearest other image: cosine {projection.nn_similarity[position]:.3f}")
    with right:
        st.markdown("**Nearest neighbours in the index**")
        neighbour_row(matches)


def show_upload(
    index: ReplicaIndex, uploads: PlacedImages, which: int, files: dict[str, bytes]
) -> None:
    """A picked upload beside its nearest training images."""
    name = uploads.names[which]
    result = rank_vectors(index, uploads.vectors[which : which + 1], [name], top_k=NEIGHBOURS)[0]
    left, right = st.columns([1, 4])
    with left:
        st.markdown(f"**Your image: {name}**")
        st.image(files[name], caption=name, width=THUMB + 50)
    with right:
        st.markdown("**Nearest training images**")
        neighbour_row(result.matches)


st.header("Map of the training set")
index = current_index()
if index is None:
    st.stop()
path = str(st.session_state[INDEX_KEY])
mtime = manifest_mtime(path)
st.caption(
    "Each point is a training image, placed by UMAP so that similar images sit together. "
    "Pick a point (click it, or type its id below) to see it and its nearest neighbours."
)

config = load_config()
projection_key = projection_mtime(path)
unusable = ""  # why the stored map cannot be used (damaged, or not written by this app)
try:
    projection = cached_projection(path, mtime, projection_key)
except ProjectionError as exc:
    projection, unusable = None, str(exc)
if projection is None:
    projection = st.session_state.get(UNSTORED_KEY, {}).get(path)
if projection is None:
    if index.count < MIN_POINTS:
        st.info(f"A map needs at least {MIN_POINTS} images; this index has {index.count}.")
        st.stop()
    fitted = min(index.count, config.map_fit_points)
    rest = f", the other {index.count - fitted:,} placed on it" if fitted < index.count else ""
    offer = st.empty()  # cleared once the map is computed: no stale "No map yet"
    with offer.container():
        if unusable:
            st.warning(
                "The map stored with this index cannot be used, so it is not shown. Compute "
                f"it again to replace it.\n\n*Why:* {unusable}",
                icon=":material/map:",
            )
        st.info(
            f"{'No usable' if unusable else 'No'} map yet for this index. Computing it places "
            f"{index.count:,} images with UMAP once (fitted on {fitted:,}{rest}; about "
            f"{max(1, round(fitted / 20_000 * 3 + (index.count - fitted) / 200_000))} min) "
            "and stores it beside the index."
        )
        label = "Compute the map again" if unusable else "Compute the map"
        compute = st.button(label, key="map_compute", type="primary")
    if not compute:
        st.stop()
    offer.empty()
    projection = compute_map(index, config.map_fit_points)
    if projection is None:
        st.stop()
    projection_key = projection_mtime(path)

if projection.subsampled:
    st.warning(
        f"Showing a random {projection.n_points:,} of the {projection.n_total:,} images "
        f"(seed {projection.info.seed}); picking by id works for every image."
    )
points = cached_map_points(path, mtime, projection_key, GROUPS, config.map_points)
if points is None:  # a map that could not be stored is not in the loader's cache
    points = map_table(
        projection,
        index.metadata,
        GROUPS,
        drawn_positions(projection, config.map_points),
        index.manifest.sources,
    )
capped = len(points) < projection.n_points
if capped:
    st.info(
        f"Drawing {len(points):,} of the {projection.n_points:,} images as points (a random "
        "sample, plus the image you pick and its neighbours); the grey shading behind them "
        "counts all of them. Picking by id works for every image.",
        icon=":material/blur_on:",
    )

controls = st.columns([2, 3])
colour = controls[0].radio("Colour by", COLOURS, horizontal=True, key="map_colour")
show_pictures = controls[0].toggle(
    "Pictures on the map",
    value=True,
    key="map_pictures",
    help="One picture per crowded area, and the selected image's neighbours (zoom in to see them).",
)
uploaded = controls[1].file_uploader(
    "Place your own images (queries, generations) on the map",
    type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES),
    accept_multiple_files=True,
    key="map_uploads",
)
files = {f.name: f.getvalue() for f in uploaded or []}
uploads = NO_UPLOADS
if files:
    try:
        map_key = f"{projection_key}:{projection.info.created}"
        uploads = place_uploads(path, mtime, map_key, tuple(files.items()), projection)
    except Exception as exc:
        show_error("Your images could not be placed on the map", exc)
    for error in uploads.errors:
        st.warning(f"Skipped {error}")

st.session_state.setdefault(SELECTED_KEY, None)
if uploads.names and st.session_state.get(PLACED_KEY) != uploads.names:
    st.session_state[SELECTED_KEY] = -1  # new uploads: select (and zoom to) the first one
st.session_state[PLACED_KEY] = list(uploads.names)
selected = st.session_state[SELECTED_KEY]
if selected is not None and selected < 0 and -1 - selected >= len(uploads.names):
    selected = st.session_state[SELECTED_KEY] = None
neighbours: list[int] = []
if selected is not None and 0 <= selected < index.count:
    neighbours = neighbour_rows(index, int(selected))
elif selected is not None and selected < 0:
    _, found = index.search_vectors(uploads.vectors[-1 - selected : -selected], NEIGHBOURS)
    neighbours = [int(i) for i in found[0] if int(i) >= 0]
if capped and selected is not None:
    points = with_rows(points, projection, index, [int(selected), *neighbours])
pictures = map_pictures(index, points, selected, neighbours) if show_pictures else []
density = None
if capped:
    density = map_density(f"{path}:{projection_key}:{projection.info.created}", projection)

st.plotly_chart(
    map_figure(points, colour, uploads, selected, pictures, density),
    key="map_chart",
    on_select=select_from_chart,
    selection_mode="points",
    width="stretch",
    config={"scrollZoom": True, "displaylogo": False},
)
fit_note = (
    f" (fitted on {projection.info.n_fit:,}, the rest placed on it)"
    if 0 < projection.info.n_fit < projection.n_points
    else ""
)
st.caption(
    f"{projection.n_points:,} images{fit_note} · UMAP, {projection.info.n_neighbors} "
    f"neighbours, seed {projection.info.seed} · colour: "
    + (
        "the collection's own folders where it has them, else the caption's first word"
        if colour == COLOURS[0]
        else "cosine to the nearest other image"
    )
)

found_text = st.text_input(
    "Find an image by file name or caption",
    key="map_find",
    placeholder="e.g. car, 1F697, penguin",
)
if found_text.strip():
    found = find_rows(index.metadata, found_text)
    if not found:
        st.caption(f"No file name or caption contains “{found_text.strip()}”.")
    else:
        labels = {
            row: f"#{row} {index.metadata['caption'].iloc[row] or ''} "
            f"({Path(str(index.metadata['path'].iloc[row])).name})"
            for row in found
        }
        st.selectbox(
            f"{len(found)} found" + (" (the first 50)" if len(found) == 50 else ""),
            found,
            index=None,
            format_func=lambda r: labels[r],
            key="map_found",
            on_change=select_from_found,
            placeholder="pick one to select it on the map",
        )
st.number_input(
    "Pick an image by id",
    min_value=0,
    max_value=index.count - 1,
    value=None,
    step=1,
    key="map_point",
    on_change=select_from_input,
    placeholder=f"0 – {index.count - 1}",
)
if selected is None:
    st.info("Click a point on the map, or type an image id, to see its nearest neighbours.")
elif selected >= 0:
    show_training_point(index, int(selected), projection)
else:
    show_upload(index, uploads, -1 - int(selected), files)
