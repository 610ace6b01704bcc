import numpy as np
import pytest

from folioscan.pipeline.sources import image_document, pdf_document
from folioscan.records import DOCUMENT_LEVEL, SourceObject
from folioscan.workers.load import LoadOptions, load_pages
from tests.helpers import encrypted_pdf, multipage_tiff, png_bytes, scanned_pdf, text_pdf


def load(data: bytes, opts=LoadOptions(), name="x.pdf"):
    doc = pdf_document(SourceObject(name, len(data), "sha256:x"))
    return list(load_pages(doc, lambda uri: data, opts))


def test_scanned_page_is_extracted_at_native_resolution(page_images):
    pages = load(scanned_pdf(page_images[:2], dpi=150))
    assert [p.page_index for p in pages] == [0, 1] and all(p.page_count == 2 for p in pages)
    assert pages[0].image_origin == "embedded"
    assert pages[0].image.shape == page_images[0].shape
    assert np.array_equal(pages[0].image, page_images[0])  # lossless: the very pixels that were scanned
    assert pages[0].dpi == pytest.approx(150, abs=1)


def test_vector_page_is_rendered_at_the_configured_dpi():
    pages = load(text_pdf(["hello world"]), LoadOptions(dpi=100))
    assert pages[0].image_origin == "rendered" and pages[0].dpi == 100
    assert pages[0].image.shape == (int(792 * 100 / 72), int(612 * 100 / 72))
    assert pages[0].image.min() < 100  # the text is there


def test_pixel_cap_gives_an_error_row_not_a_crash(page_images):
    pages = load(scanned_pdf(page_images[:1]), LoadOptions(max_megapixels=0.5))
    assert pages[0].image is None and "over the cap" in pages[0].error


@pytest.mark.parametrize("data,reason", [
    (b"", "zero-byte"), (b"GIF89a nope", "not a PDF"), (encrypted_pdf(), "encrypted"),
    (b"%PDF-1.7\n garbage garbage", "corrupt PDF"),
])
def test_bad_pdfs_become_one_document_level_error(data, reason):
    [page] = load(data)
    assert page.page_index == DOCUMENT_LEVEL and page.image is None
    assert page.error.startswith("x.pdf: ") and reason in page.error


def test_truncated_pdf_is_repaired_or_reported(page_images):
    data = scanned_pdf(page_images[:2])
    pages = load(data[: len(data) // 2])
    assert pages, "a truncated PDF must give rows, never nothing"
    assert all(p.error or p.image is not None for p in pages)


def test_image_folder_with_multipage_tiff(page_images):
    files = {"b/1.png": png_bytes(page_images[0]), "b/2.tif": multipage_tiff(page_images[1:3]), "b/3.png": b""}
    doc = image_document("b", [SourceObject(k, len(v), "sha256:" + k) for k, v in files.items()])
    pages = list(load_pages(doc, files.__getitem__, LoadOptions()))
    assert [p.page_index for p in pages] == [0, 1, 2, 3] and all(p.page_count == 4 for p in pages)
    assert np.array_equal(pages[2].image, page_images[2])
    assert pages[1].dpi == pytest.approx(150, abs=1)
    assert pages[3].image is None and "zero-byte" in pages[3].error


def test_pages_lost_to_truncation_are_errors_not_blank_pages(page_images):
    data = scanned_pdf(page_images[:3])  # each page's image about a third of the file
    pages = load(data[: len(data) // 2])  # MuPDF repairs this silently
    assert [p.page_index for p in pages] == [0, 1, 2]
    assert pages[0].error is None and np.array_equal(pages[0].image, page_images[0])  # intact before the cut
    for p in pages[1:]:
        assert p.image is None and p.error_kind == "permanent" and "damaged PDF (MuPDF repaired the file)" in p.error
    intact_tail = load(data[:-64])  # only the xref table lost: every page is still whole
    assert [p.error for p in intact_tail] == [None] * 3


def _sepia(gray: np.ndarray) -> np.ndarray:
    """A colour scan: the grey page on yellowed paper (R > G > B on the paper)."""
    return np.stack([gray, (gray * 0.92).astype(np.uint8), (gray * 0.78).astype(np.uint8)], axis=-1)


def test_color_keeps_a_colour_scans_colour_at_the_same_size(page_images):
    """`color` (the images export): the same page, the same size, in colour where the scan is; a grey
    scan stays grey and is the very array the pipeline loads."""
    import pymupdf

    color = _sepia(page_images[0])
    h, w = page_images[0].shape
    doc = pymupdf.open()
    doc.new_page(width=w * 72 / 150, height=h * 72 / 150).insert_image(pymupdf.Rect(0, 0, w * 72 / 150, h * 72 / 150),
                                                                       stream=png_bytes(color))
    colour_pdf = doc.tobytes()
    [grey] = load(colour_pdf)
    [kept] = load(colour_pdf, LoadOptions(color=True))
    assert kept.image_origin == grey.image_origin == "embedded"
    assert kept.image.shape == (h, w, 3) and grey.image.shape == (h, w)
    assert np.array_equal(kept.image, color)  # lossless, the scan's own pixels
    [rendered] = load(colour_pdf, LoadOptions(color=True, prefer_embedded=False, dpi=100))
    assert rendered.image.shape[2] == 3 and rendered.image[h // 4:, :, 2].mean() < rendered.image[h // 4:, :, 0].mean() - 20
    for data in (scanned_pdf(page_images[:1]), text_pdf(["hello world"])):  # grey scan, vector page: grey
        [a], [b] = load(data), load(data, LoadOptions(color=True))
        assert b.image.ndim == 2 and np.array_equal(a.image, b.image)
    files = {"b/1.png": png_bytes(color), "b/2.png": png_bytes(page_images[1])}
    folder = image_document("b", [SourceObject(k, len(v), "sha256:" + k) for k, v in files.items()])
    first, second = load_pages(folder, files.__getitem__, LoadOptions(color=True))
    assert np.array_equal(first.image, color) and (first.source_width, first.source_height) == (w, h)
    assert np.array_equal(second.image, page_images[1])
