"""Small page pictures for the report, re-rendered from the source (the dataset holds no pixels).

PDF pages with PyMuPDF, image-folder books with Pillow, read through the same Store as the job
(local or S3). A source that cannot be read or rendered gives the reason instead of a picture;
the report prints it.
"""
from __future__ import annotations

import base64
import io
from typing import Optional

from folioscan.pipeline.sources import IMAGE_EXT, image_document
from folioscan.pipeline.storage import is_s3, store_for

THUMB_WIDTH = 220  # pixels; shown at 130 CSS px, sharp on high-density screens


def _jpeg_data_uri(im) -> str:
    from PIL import Image

    if im.width > THUMB_WIDTH:
        im = im.resize((THUMB_WIDTH, max(1, round(im.height * THUMB_WIDTH / im.width))), Image.LANCZOS)
    buf = io.BytesIO()
    im.convert("L").save(buf, "JPEG", quality=60, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class Thumbnailer:
    """Keeps the last source open, since the worst pages often come from the same book."""

    def __init__(self, endpoint_url: Optional[str] = None, region: Optional[str] = None):
        self.endpoint_url, self.region = endpoint_url, region
        self.store = None
        self._uri: Optional[str] = None
        self._pdf = None
        self._frames: list = []  # image books: (member uri, frame) per page index

    def __call__(self, source_uri: str, page_index: int) -> tuple[Optional[str], Optional[str]]:
        """(data URI, None) or (None, why not)."""
        try:
            self.store = store_for(source_uri, self.endpoint_url, self.region)
            if source_uri.lower().endswith(".pdf"):
                return self._pdf_page(source_uri, page_index), None
            return self._image_page(source_uri, page_index), None
        except Exception as e:
            return None, f"source not reachable or not renderable: {type(e).__name__}: {e}"

    def _pdf_page(self, uri: str, index: int) -> str:
        import pymupdf
        from PIL import Image

        if self._uri != uri:
            self._pdf, self._uri = pymupdf.open(stream=self.store.read(uri), filetype="pdf"), uri
        page = self._pdf[index]
        zoom = min(THUMB_WIDTH / max(page.rect.width, 1), 4.0)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
        return _jpeg_data_uri(Image.frombytes("L", (pix.width, pix.height), pix.samples))

    def _image_page(self, folder: str, index: int) -> str:
        from PIL import Image

        if self._uri != folder:
            listing = folder.rstrip("/") + "/" if is_s3(folder) else folder
            members = [o for o in self.store.list(listing)
                       if o.uri.rsplit("/", 1)[0] == folder.rstrip("/") and o.uri.lower().endswith(IMAGE_EXT)]
            if not members:
                raise FileNotFoundError(f"{folder}: no page images there any more")
            self._frames = []
            for m in image_document(folder, members).members:  # the job's page order
                n = 1
                if m.uri.lower().endswith((".tif", ".tiff")):
                    n = getattr(Image.open(io.BytesIO(self.store.read(m.uri))), "n_frames", 1)
                self._frames += [(m.uri, k) for k in range(n)]
            self._uri = folder
        uri, frame = self._frames[index]
        im = Image.open(io.BytesIO(self.store.read(uri)))
        im.seek(frame)
        im.draft("L", (THUMB_WIDTH * 2, THUMB_WIDTH * 4))  # JPEG sources decode at a reduced size
        return _jpeg_data_uri(im)
