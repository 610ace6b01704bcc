"""Where each pixel of the cleaned page came from: the chain of transforms the cleaning steps applied.

Every step that moves pixels (crop, spread split, orientation, deskew, scaling, dewarping)
appends one transform to `PrepInfo.transforms`, mapping coordinates of the image it was handed
to the image it produced. `to_source` runs the chain backwards, so a box the engine found on
the cleaned page lands on the page image as loaded (the scan the archive holds); the load
stage's `PageWork.pdf_transform` then takes it on to PDF points.

Coordinates are continuous pixel-edge coordinates: (0, 0) is the top-left corner of the top-left
pixel, (w, h) the bottom-right corner of the image, so box corners map exactly. A transform is
plain data (tuples of numbers, no callables): it pickles for Ray and round-trips through JSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import numpy as np

Matrix = tuple[float, float, float, float, float, float]  # row-major 2x3: x' = a x + b y + tx; y' = c x + d y + ty


@dataclass(frozen=True)
class Affine:
    """An affine step (crop, split, quarter turn, deskew rotation, scaling): input (x, y) -> output."""

    step: str
    matrix: Matrix
    size: tuple[int, int]  # width, height of the output image

    def forward(self, pts: np.ndarray) -> np.ndarray:
        a, b, tx, c, d, ty = self.matrix
        return np.stack([a * pts[:, 0] + b * pts[:, 1] + tx, c * pts[:, 0] + d * pts[:, 1] + ty], axis=1)

    def inverse(self, pts: np.ndarray) -> np.ndarray:
        return Affine(self.step, invert(self.matrix), self.size).forward(pts)


@dataclass(frozen=True)
class Grid:
    """A non-affine step (dewarping): a coarse inverse map. For the output-image points on the grid
    `xs` x `ys`, `src_x`/`src_y` (row-major, len(ys) rows of len(xs)) hold where they came from in
    the input image; points between nodes are interpolated bilinearly."""

    step: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    src_x: tuple[float, ...]
    src_y: tuple[float, ...]
    size: tuple[int, int]

    @classmethod
    def from_maps(cls, step: str, map_x: np.ndarray, map_y: np.ndarray, every: int = 32) -> "Grid":
        """From the full-resolution maps handed to cv2.remap (output pixel -> input pixel index)."""
        h, w = map_x.shape
        rows = np.unique(np.r_[np.arange(0, h, every), h - 1])
        cols = np.unique(np.r_[np.arange(0, w, every), w - 1])
        sub = np.ix_(rows, cols)
        return cls(step, tuple(float(c) + 0.5 for c in cols), tuple(float(r) + 0.5 for r in rows),
                   tuple((map_x[sub].astype(np.float64) + 0.5).ravel().tolist()),
                   tuple((map_y[sub].astype(np.float64) + 0.5).ravel().tolist()), (int(w), int(h)))

    def inverse(self, pts: np.ndarray) -> np.ndarray:
        xs, ys = np.asarray(self.xs), np.asarray(self.ys)
        gx = np.asarray(self.src_x).reshape(len(ys), len(xs))
        gy = np.asarray(self.src_y).reshape(len(ys), len(xs))
        i = np.clip(np.searchsorted(xs, pts[:, 0]) - 1, 0, max(len(xs) - 2, 0))
        j = np.clip(np.searchsorted(ys, pts[:, 1]) - 1, 0, max(len(ys) - 2, 0))
        i1, j1 = np.minimum(i + 1, len(xs) - 1), np.minimum(j + 1, len(ys) - 1)
        fx = np.where(i1 > i, (pts[:, 0] - xs[i]) / np.maximum(xs[i1] - xs[i], 1e-9), 0.0)
        fy = np.where(j1 > j, (pts[:, 1] - ys[j]) / np.maximum(ys[j1] - ys[j], 1e-9), 0.0)

        def lerp(g):
            top = g[j, i] * (1 - fx) + g[j, i1] * fx
            bottom = g[j1, i] * (1 - fx) + g[j1, i1] * fx
            return top * (1 - fy) + bottom * fy

        return np.stack([lerp(gx), lerp(gy)], axis=1)


Transform = Union[Affine, Grid]


def invert(m: Sequence[float]) -> Matrix:
    a, b, tx, c, d, ty = m
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return (ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty))


def compose(first: Sequence[float], then: Sequence[float]) -> Matrix:
    """The matrix of applying `first`, then `then`."""
    a1, b1, t1, c1, d1, u1 = first
    a2, b2, t2, c2, d2, u2 = then
    return (a2 * a1 + b2 * c1, a2 * b1 + b2 * d1, a2 * t1 + b2 * u1 + t2,
            c2 * a1 + d2 * c1, c2 * b1 + d2 * d1, c2 * t1 + d2 * u1 + u2)


# --- the transforms of the cleaning steps -------------------------------------------------------

def crop(step: str, x0: float, y0: float, x1: float, y1: float) -> Affine:
    """Keeping the region [x0, x1) x [y0, y1): the crop step, and each half of a split spread."""
    return Affine(step, (1.0, 0.0, -float(x0), 0.0, 1.0, -float(y0)), (int(x1 - x0), int(y1 - y0)))


def quarter_turn(step: str, clockwise: int, width: int, height: int) -> Affine:
    """`geometry.rot90(image, clockwise)` of a width x height image."""
    turn = clockwise % 360
    w, h = float(width), float(height)
    m = {0: (1, 0, 0, 0, 1, 0), 90: (0, -1, h, 1, 0, 0), 180: (-1, 0, w, 0, -1, h), 270: (0, 1, 0, -1, 0, w)}[turn]
    size = (width, height) if turn in (0, 180) else (height, width)
    return Affine(step, tuple(float(v) for v in m), size)


def rotation(step: str, angle: float, width: int, height: int) -> Affine:
    """`geometry.rotate(image, angle)`: counter-clockwise about the centre, same size. Built from
    OpenCV's own matrix (which works on pixel indices) shifted to edge coordinates."""
    import cv2

    m = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    return from_index_matrix(step, m, (width, height))


def from_index_matrix(step: str, m: np.ndarray, size: tuple[int, int]) -> Affine:
    """An OpenCV 2x3 matrix in pixel-index coordinates (as given to cv2.warpAffine) as an Affine."""
    (a, b, tx), (c, d, ty) = np.asarray(m, dtype=np.float64)
    tx, ty = tx + 0.5 - 0.5 * (a + b), ty + 0.5 - 0.5 * (c + d)
    return Affine(step, (float(a), float(b), float(tx), float(c), float(d), float(ty)), (int(size[0]), int(size[1])))


def scaling(step: str, width: int, height: int, new_width: int, new_height: int) -> Affine:
    """`cv2.resize` of a width x height image to new_width x new_height."""
    return Affine(step, (new_width / width, 0.0, 0.0, 0.0, new_height / height, 0.0), (int(new_width), int(new_height)))


# --- mapping back ----------------------------------------------------------------------------

def to_source(transforms: Sequence[Transform], points) -> np.ndarray:
    """Points (N x 2, cleaned-page coordinates) -> coordinates in the page image as loaded."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for t in reversed(transforms):
        pts = t.inverse(pts)
    return pts


def box_points(box: Sequence[float], samples: int = 3) -> np.ndarray:
    """Points along the edge of a box: its corners, plus edge midpoints for non-affine chains."""
    x0, y0, x1, y1 = (float(v) for v in box)
    t = np.linspace(0.0, 1.0, samples)
    xs, ys = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    return np.concatenate([np.stack([xs, np.full_like(xs, y0)], 1), np.stack([xs, np.full_like(xs, y1)], 1),
                           np.stack([np.full_like(ys, x0), ys], 1), np.stack([np.full_like(ys, x1), ys], 1)])


def box_to_source(transforms: Sequence[Transform], box: Sequence[float],
                  bounds: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """The axis-aligned box, in the loaded page image, that encloses the mapped box (a deskewed
    line comes back as the upright rectangle around its tilted outline), clipped to `bounds` (w, h)."""
    if not transforms:
        return tuple(int(round(v)) for v in box)
    affine_only = all(isinstance(t, Affine) for t in transforms)
    pts = to_source(transforms, box_points(box, 2 if affine_only else 5))
    x0, y0 = np.floor(pts.min(axis=0))
    x1, y1 = np.ceil(pts.max(axis=0))
    if bounds is not None:
        x0, x1 = np.clip([x0, x1], 0, bounds[0])
        y0, y1 = np.clip([y0, y1], 0, bounds[1])
    return int(x0), int(y0), int(x1), int(y1)


def apply_matrix(m: Sequence[float], box: Sequence[float]) -> tuple[float, float, float, float]:
    """A box through a 2x3 matrix (e.g. `PageWork.pdf_transform`), as its enclosing box."""
    pts = Affine("", tuple(m), (0, 0)).forward(box_points(box, 2))
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


# --- serialisation -------------------------------------------------------------------------

def to_dicts(transforms: Iterable[Transform]) -> list[dict]:
    out = []
    for t in transforms:
        d = {"kind": "affine" if isinstance(t, Affine) else "grid", **t.__dict__}
        out.append({k: list(v) if isinstance(v, tuple) else v for k, v in d.items()})
    return out


def from_dicts(items: Iterable[dict]) -> list[Transform]:
    out: list[Transform] = []
    for d in items:
        d = dict(d)
        kind = d.pop("kind")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        out.append(Affine(**d) if kind == "affine" else Grid(**d))
    return out


def to_json(transforms: Sequence[Transform]) -> str:
    return json.dumps(to_dicts(transforms), separators=(",", ":"))


def from_json(text: str | None) -> list[Transform]:
    return from_dicts(json.loads(text)) if text else []
