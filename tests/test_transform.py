"""The transform chain maps cleaned-page coordinates back onto the loaded scan exactly."""
import pickle

import cv2
import numpy as np
import pytest

from folioscan.records import PageWork
from folioscan.workers.prep import transform as tf
from folioscan.workers.prep.geometry import ink_mask, rot90, rotate
from folioscan.workers.prep.pipeline import PrepOptions, prepare_page
from folioscan.workers.prep.segment import segment
from tests.helpers import PARAGRAPHS, text_page_image


def _dot_image(w=400, h=300, at=(91, 57)):
    img = np.full((h, w), 255, np.uint8)
    img[at[1] - 3:at[1] + 4, at[0] - 3:at[0] + 4] = 0  # a 7x7 dot centred on pixel `at`
    return img


def _centroid(img) -> np.ndarray:
    ys, xs = np.nonzero(img < 128)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres in edge coordinates


def test_chain_of_real_image_operations_maps_a_dot_back():
    src = _dot_image()
    img, chain = src, []
    chain.append(tf.crop("crop", 20, 10, 380, 290)); img = img[10:290, 20:380]
    chain.append(tf.quarter_turn("orientation", 90, img.shape[1], img.shape[0])); img = rot90(img, 90)
    chain.append(tf.crop("spread", 30, 0, img.shape[1], 200)); img = img[:200, 30:]  # the part with the dot
    chain.append(tf.rotation("deskew", 7.0, img.shape[1], img.shape[0])); img = rotate(img, 7.0)
    chain.append(tf.scaling("upscale", img.shape[1], img.shape[0], img.shape[1] * 2, img.shape[0] * 2))
    img = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    back = tf.to_source(chain, _centroid(img)[None])[0]
    assert np.abs(back - _centroid(src)).max() < 1.0
    forward = _centroid(src)[None]
    for t in chain:
        forward = t.forward(forward)
    assert np.abs(forward[0] - _centroid(img)).max() < 1.0


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_quarter_turns_match_rot90(turn):
    src = _dot_image()
    out = rot90(src, turn)
    t = tf.quarter_turn("orientation", turn, src.shape[1], src.shape[0])
    assert t.size == (out.shape[1], out.shape[0])
    assert np.abs(t.inverse(_centroid(out)[None])[0] - _centroid(src)).max() < 0.01


def test_grid_maps_a_dewarped_dot_back():
    src = _dot_image(at=(200, 150))
    h, w = src.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xx + 12 * np.sin(yy / 40.0)  # a curled page: rows shift sideways by different amounts
    map_y = yy + 6 * np.cos(xx / 60.0)
    out = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderValue=255)
    grid = tf.Grid.from_maps("dewarp", map_x, map_y, every=16)
    back = tf.to_source([grid], _centroid(out)[None])[0]
    assert np.abs(back - _centroid(src)).max() < 1.0


def test_transforms_pickle_and_round_trip_through_json():
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    chain = [tf.crop("crop", 3, 4, 50, 40), tf.rotation("deskew", 2.0, 47, 36), tf.Grid.from_maps("dewarp", xx, yy, 16)]
    assert tf.from_json(tf.to_json(chain)) == chain
    assert pickle.loads(pickle.dumps(chain)) == chain


@pytest.fixture(scope="module")
def page():
    return text_page_image(" ".join(PARAGRAPHS * 3), dpi=150, fontsize=12)


def _assert_boxes_on_ink(source: np.ndarray, boxes: list, coverage: float = 0.9):
    """Mapped boxes are dense with ink and between them hold nearly all of the scan's ink."""
    ink = ink_mask(source)
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes:
        assert ink[y0:y1, x0:x1].mean() > 2 * ink.mean()
        covered[y0:y1, x0:x1] = True
    assert ink[covered].sum() >= coverage * ink.sum()


def _cleaned_line_boxes(part) -> list:
    return [tf.box_to_source(part.prep.transforms, box, (part.source_width, part.source_height))
            for box in segment(part.image).lines]


def test_page_turned_90_and_skewed_maps_lines_onto_the_scans_ink(page):
    scan = rotate(rot90(page, 90), 2.0)  # the scanner saw the book sideways, a little askew
    work = PageWork("d", "u", 0, 1, image=scan, source_width=scan.shape[1], source_height=scan.shape[0])
    [part] = prepare_page(work, PrepOptions())
    assert [t.step for t in part.prep.transforms] == ["orientation", "deskew"]
    boxes = _cleaned_line_boxes(part)
    assert len(boxes) >= 15
    _assert_boxes_on_ink(scan, boxes)
    assert all(y1 - y0 > x1 - x0 for x0, y0, x1, y1 in boxes)  # lines run down the sideways scan


def test_skewed_spread_maps_each_halfs_lines_onto_the_scans_ink(page):
    gap = np.full((page.shape[0], 40), 255, np.uint8)
    spread = rotate(np.hstack([page, gap, np.fliplr(np.flipud(page))[::-1, ::-1]]), -1.5)
    work = PageWork("d", "u", 0, 1, image=spread, source_width=spread.shape[1], source_height=spread.shape[0])
    left, right = prepare_page(work, PrepOptions())
    assert left.side == "left" and [t.step for t in right.prep.transforms] == ["spread-deskew", "spread"]  # straightened, then split
    lb, rb = _cleaned_line_boxes(left), _cleaned_line_boxes(right)
    mid = spread.shape[1] / 2
    assert all(b[2] <= mid + 30 for b in lb) and all(b[0] >= mid - 30 for b in rb)
    _assert_boxes_on_ink(spread, lb + rb)
