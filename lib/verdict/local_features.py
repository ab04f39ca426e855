"""Local features with geometric verification: which part of a query matches which part
of a training image.

A global descriptor sees a picture pasted into a new scene, or cropped, only through the
rest of the scene around it. Local features see the part itself. This module finds
SIFT keypoints (Lowe, IJCV 2004, "Distinctive image features from scale-invariant
keypoints"; OpenCV's implementation) in both pictures in grey at a fixed long side,
matches descriptors with Lowe's ratio test, and keeps the matches that one similarity
transform (rotation, uniform scale, translation; RANSAC, Fischler and Bolles 1981) maps
onto each other: the *inliers*. The query is also tried mirrored, since a mirrored copy
is still a copy.

An inlier count means nothing on its own: pictures of one style (emoji with black
outlines, product shots on white) share corners and strokes, and unrelated pairs of them
reach dozens of inliers. The verdict uses it only against a null measured on the same
collection, as it does every other score.

The boxes of the inliers in each picture say which part of the query matched which
part of the training image, as fractions (0..1) of each picture's width and height.

Example:
    >>> q = local_features(query_image)  # doctest: +SKIP
    >>> verify_pair(q, local_features(training_image)).inliers  # doctest: +SKIP
    57
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

LOCAL_SIDE = 256
"""Long side (px) at which keypoints are found."""
MAX_FEATURES = 500
"""Keypoints kept per picture (the strongest)."""
RATIO = 0.75
"""Lowe's ratio test: a match is kept when it is this much closer than the second best."""
RANSAC_PX = 4.0
"""A match is an inlier when the transform maps it within this many pixels (at LOCAL_SIDE)."""
MIN_MATCHES = 4
"""Fewer ratio-test matches than this: no transform is fitted, 0 inliers."""

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) as fractions 0..1 of a picture's width and height."""


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one picture: ``points`` (n, 2) float32 pixel positions at the size
    they were found (``size``, (width, height)); ``descriptors`` (n, 128) float32."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]
    mirrored: LocalFeatures | None = field(default=None, repr=False, compare=False)
    """The same picture mirrored left to right (queries only)."""

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class GeometricMatch:
    """The best geometric agreement between a query and a training picture.

    ``inliers``: matches that one similarity transform explains (0: none);
    ``query_box`` and ``match_box``: where those matches lie in each picture (None when
    there are fewer than :data:`MIN_MATCHES`); ``mirrored``: found with the query
    mirrored (its box is then given in the unmirrored query).
    """

    inliers: int
    query_box: Box | None = None
    match_box: Box | None = None
    mirrored: bool = False


def local_features(image: Image.Image, *, with_mirror: bool = False) -> LocalFeatures:
    """SIFT keypoints of ``image`` (any mode and size) in grey at :data:`LOCAL_SIDE`;
    ``with_mirror`` also computes them for the picture mirrored left to right."""
    import cv2

    grey = image.convert("L")
    scale = LOCAL_SIDE / max(grey.size)
    size = (max(8, round(grey.width * scale)), max(8, round(grey.height * scale)))
    grey = grey.resize(size, Image.Resampling.BILINEAR)
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)  # type: ignore[attr-defined]
    keypoints, descriptors = sift.detectAndCompute(np.asarray(grey), None)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    if descriptors is None:
        descriptors = np.zeros((0, 128), np.float32)
    mirrored = None
    if with_mirror:
        mirrored = local_features(grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return LocalFeatures(points, np.asarray(descriptors, np.float32), size, mirrored)


def verify_pair(query: LocalFeatures, candidate: LocalFeatures) -> GeometricMatch:
    """The geometric agreement of ``query`` (and its mirror, when computed) with
    ``candidate``: the orientation with more inliers."""
    best = _verify(query, candidate)
    if query.mirrored is not None:
        flipped = _verify(query.mirrored, candidate)
        if flipped.inliers > best.inliers:
            box = flipped.query_box
            unflipped = (1 - box[2], box[1], 1 - box[0], box[3]) if box else None
            best = GeometricMatch(flipped.inliers, unflipped, flipped.match_box, mirrored=True)
    return best


def _verify(query: LocalFeatures, candidate: LocalFeatures) -> GeometricMatch:
    import cv2

    if len(query) < MIN_MATCHES or len(candidate) < MIN_MATCHES:
        return GeometricMatch(0)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return GeometricMatch(0)
    src = query.points[[m.queryIdx for m in good]]
    dst = candidate.points[[m.trainIdx for m in good]]
    _, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX
    )
    if mask is None:
        return GeometricMatch(0)
    keep = mask.ravel().astype(bool)
    n = int(keep.sum())
    if n < MIN_MATCHES:
        return GeometricMatch(n)
    return GeometricMatch(n, _box(src[keep], query.size), _box(dst[keep], candidate.size))


def _box(points: np.ndarray, size: tuple[int, int]) -> Box:
    w, h = size
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (
        round(float(x0) / w, 4),
        round(float(y0) / h, 4),
        round(float(x1) / w, 4),
        round(float(y1) / h, 4),
    )


FeatureCache = dict[str, LocalFeatures | None]
"""Training pictures' features by path (None: unreadable), kept for one call."""


def verify_shortlist(
    query: Image.Image | LocalFeatures,
    paths: list[str],
    load: Callable[[str], Image.Image | None],
    cache: FeatureCache | None = None,
) -> list[GeometricMatch]:
    """Geometric verification of ``query`` against each training picture in ``paths``,
    read through ``load`` (which returns None for a picture that cannot or may not be
    read: its match has 0 inliers). ``cache`` keeps training features between calls."""
    q = query if isinstance(query, LocalFeatures) else local_features(query, with_mirror=True)
    cache = {} if cache is None else cache
    out = []
    for path in paths:
        if path not in cache:
            image = load(path)
            cache[path] = None if image is None else local_features(image)
        features = cache[path]
        out.append(GeometricMatch(0) if features is None else verify_pair(q, features))
    return out
