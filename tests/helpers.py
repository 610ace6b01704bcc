"""Builders of real test inputs: scanned-style PDFs (a raster image per page), born-digital PDFs, page images."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from folioscan.pipeline.stages import Stages

PARAGRAPHS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, "
    "and nothing particular to interest me on shore, I thought I would sail about a little and see the world.",
    "Happy families are all alike; every unhappy family is unhappy in its own way. Everything was in "
    "confusion in the house of the Oblonskys. The wife had discovered that the husband was carrying on.",
]


def text_page_image(text: str, dpi: int = 150, size=(612, 792), fontsize: float = 14) -> np.ndarray:
    """A grayscale page image of `text`, rendered by MuPDF (real glyphs, like a clean scan)."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=size[0], height=size[1])
    page.insert_textbox(pymupdf.Rect(60, 60, size[0] - 60, size[1] - 60), text, fontsize=fontsize, fontname="tiro")
    pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def scanned_pdf(images: list[np.ndarray], dpi: int = 150) -> bytes:
    """A PDF whose every page is one full-page raster image, as a scanner writes it."""
    import pymupdf

    doc = pymupdf.open()
    for img in images:
        h, w = img.shape
        page = doc.new_page(width=w * 72 / dpi, height=h * 72 / dpi)
        page.insert_image(page.rect, stream=png_bytes(img))
    return doc.tobytes()


def text_pdf(texts: list[str]) -> bytes:
    """A born-digital PDF (vector text): pages that must be rendered, not extracted."""
    import pymupdf

    doc = pymupdf.open()
    for text in texts:
        page = doc.new_page(width=612, height=792)
        page.insert_textbox(pymupdf.Rect(60, 60, 552, 732), text, fontsize=14, fontname="tiro")
    return doc.tobytes()


def encrypted_pdf() -> bytes:
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    return doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="user")


def multipage_tiff(images: list[np.ndarray]) -> bytes:
    from PIL import Image

    frames = [Image.fromarray(i) for i in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw", dpi=(150, 150))
    return buf.getvalue()


def normalized(text: str) -> str:
    return " ".join(text.replace("-\n", "").split())


def cer(predicted: str, truth: str) -> float:
    from rapidfuzz.distance import Levenshtein

    truth = normalized(truth)
    return Levenshtein.distance(normalized(predicted), truth) / max(len(truth), 1)


def thread_share() -> int:
    """Threads for one test process's thread pools (torch's): under pytest-xdist its share of the
    cores, else every core. Two pools of every core on two cores thrash (each waits for threads the
    other process holds descheduled)."""
    import os

    return max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def pythonpath_with_repo(pythonpath: str | None) -> str:
    """A PYTHONPATH that finds this checkout's `folioscan` (and `tests`) first: for subprocesses and Ray nodes."""
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.pathsep.join(filter(None, [repo, pythonpath]))


def three_page_books(folder, page_images, n: int = 10) -> None:
    """n scanned 3-page PDF books in `folder`, each starting at another of the page images."""
    folder.mkdir()
    for i in range(n):
        (folder / f"book{i:02d}.pdf").write_bytes(scanned_pdf([page_images[(i + k) % 3] for k in range(3)]))


def committed_parts(out) -> int:
    """Shards a run has committed so far (documents parts)."""
    import os

    d = os.path.join(out, "documents")
    return len(os.listdir(d)) if os.path.isdir(d) else 0


def assert_every_page_once(out, books: int = 10, pages: int = 3) -> None:
    """Every book ok and every page of it exactly once in a plain read of the output."""
    import pyarrow.parquet as pq

    docs = pq.read_table(f"{out}/documents").to_pandas()
    rows = pq.read_table(f"{out}/pages").to_pandas()
    assert len(docs) == books and docs.doc_id.is_unique and (docs.status == "ok").all()
    assert len(rows) == books * pages and not rows.duplicated(["doc_id", "page_index"]).any()
    assert sorted(rows.groupby("doc_id").page_index.apply(tuple).unique()) == [tuple(range(pages))]


@dataclass
class EngineBuiltTwice(Stages):
    """Stages whose OCR stage is built twice in every worker, the first one thrown away: an engine
    reload the run's `engine_loads` must show. Here, not in a test module, so Ray workers import it."""

    def ocr_stage(self):
        super().ocr_stage()
        return super().ocr_stage()


# --- reading a PDF back the way poppler's pdftotext does (the searchable PDF's tests and bench) -----

def pdftotext(path: str, page: int, *args: str) -> str:
    """Text of one page (1-based) by `pdftotext`, in its default reading-order mode unless `args`
    say otherwise (`-raw`: content-stream order)."""
    import subprocess

    return subprocess.run(["pdftotext", *args, "-enc", "UTF-8", "-f", str(page), "-l", str(page), path, "-"],
                          capture_output=True, text=True, check=True).stdout


def pdftotext_words(path: str, page: int) -> list[tuple[float, float, float, float, str]]:
    """`pdftotext -bbox` words of one page (1-based): (x0, y0, x1, y1, text) in points of the page as
    displayed (its rotation applied), y down."""
    import html
    import re

    out = pdftotext(path, page, "-bbox")
    return [(float(a), float(b), float(c), float(d), html.unescape(t)) for a, b, c, d, t in
            re.findall(r'<word xMin="([-\d.]+)" yMin="([-\d.]+)" xMax="([-\d.]+)" yMax="([-\d.]+)">(.*?)</word>', out)]


def words_on_ink(extracted, row: dict, to_shown) -> tuple[int, int, int]:
    """How many of the page's OCR words have an extracted word of the same text over their ink:
    (words, covered, iou). `covered`: the extracted box covers at least half of the OCR word's box;
    `iou`: the two boxes' intersection over union is at least 0.5. `to_shown` maps a box in the
    loaded image's pixels (box_source) to the page as displayed, in points."""
    by_text: dict[str, list] = {}
    for e in extracted:
        by_text.setdefault(e[4], []).append(e)
    n = covered = iou = 0
    for line in row.get("lines") or []:
        for w in line.get("words") or []:
            if not w.get("box_source") or not w["text"].strip():
                continue
            n += 1
            x0, y0, x1, y1 = to_shown(w["box_source"])
            area = max((x1 - x0) * (y1 - y0), 1e-9)
            best_cover = best_iou = 0.0
            for e in by_text.get(w["text"].strip(), ()):
                ix = max(0.0, min(x1, e[2]) - max(x0, e[0]))
                iy = max(0.0, min(y1, e[3]) - max(y0, e[1]))
                inter = ix * iy
                best_cover = max(best_cover, inter / area)
                best_iou = max(best_iou, inter / (area + (e[2] - e[0]) * (e[3] - e[1]) - inter))
            covered += best_cover >= 0.5
            iou += best_iou >= 0.5
    return n, covered, iou


# Clean pages unlike old_books' (issue 19 item 4): the page confidence must not collapse on them.
# Base-14 fonts of MuPDF (always there): serif, sans, monospace.
UNFAMILIAR_FONTS = {"serif": "tiro", "sans": "helv", "mono": "cour"}


def numbers_text(rng) -> str:
    """A register of numbers run on (entry, date, quantity, amount, ...): set out in aligned columns,
    Tesseract reads it column by column (70% CER against the rows), which no confidence can mend."""
    return " ".join(f"No. {i} {int(rng.integers(1, 29)):02d}.{int(rng.integers(1, 13)):02d}.{int(rng.integers(1850, 1910))}"
                     f" {int(rng.integers(1, 999))} {rng.integers(1, 99999) / 100:.2f} {int(rng.integers(1, 99))} {int(rng.integers(100, 9999))}" for i in range(1, 41))


def symbols_text(rng) -> str:
    """Prose full of markup and symbols: tags, ampersands, quotes, brackets, percentages."""
    parts = ['The <script> tag & the "quoted" value;', "Smith & Sons (est. 1851) paid 12% [sic];",
             "a < b and c > d, so 'x' = {y};", "#4 @ $3.50 each, 2 + 2 = 4;", "see p. 7 / note * & \"ibid.\";"]
    return " ".join(parts[int(i)] for i in rng.integers(0, len(parts), 40))


GERMAN = ("Es war einmal ein alter Müller, der hatte drei Söhne. Als er gestorben war, teilten die "
          "Söhne das Erbe unter sich: der älteste bekam die Mühle, der zweite den Esel, und der jüngste "
          "erhielt nur den Kater. Darüber war er sehr traurig und sprach zu sich selbst: mir ist es doch "
          "am allerschlimmsten ergangen. ")


def unfamiliar_page(kind: str, font: str = "serif", pt: float = 11, dpi: int = 300, seed: int = 0) -> tuple[np.ndarray, str]:
    """(page image, its text): `kind` one of prose, numbers, symbols, german."""
    rng = np.random.default_rng(seed)
    text = {"prose": " ".join(PARAGRAPHS * 3), "numbers": numbers_text(rng), "symbols": symbols_text(rng),
            "german": GERMAN * 4}[kind]
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_textbox(pymupdf.Rect(60, 60, 552, 732), text, fontsize=pt, fontname=UNFAMILIAR_FONTS[font])
    # the text that fits on the page is what is printed
    printed = page.get_text().strip()
    pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy(), printed


def picture(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A picture `h` x `w`: "photo" (smooth grey tones at three scales), "engraving" (the same tones
    as vertical hatching, an engraving's way), "drawing" (lines and circles on white)."""
    import cv2

    rng = np.random.default_rng(seed)
    tone = np.zeros((h, w))
    for s in (64, 16, 4):
        tone += cv2.resize(rng.normal(size=(max(2, h // s), max(2, w // s))), (w, h), interpolation=cv2.INTER_CUBIC) * s / 16
    tone = (tone - tone.min()) / (tone.max() - tone.min())
    if kind == "photo":
        return (40 + 200 * tone).astype(np.uint8)
    if kind == "engraving":
        return np.where(np.arange(w)[None, :] % 10 < (1 - tone) * 10, 0, 255).astype(np.uint8)
    img = np.full((h, w), 255, np.uint8)
    for _ in range(60):
        p, q = rng.integers(0, [w, h], size=2), rng.integers(0, [w, h], size=2)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 0, 2)
    for _ in range(15):
        c = rng.integers(0, [w, h], size=2)
        cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(20, min(w, h) // 4)), 0, 2)
    return img


FIGURE_LAYOUTS = {  # page size (points) and the pictures' rectangles
    "portrait": ((612, 792), [(70, 80, 542, 700)]),
    "portrait-two-stacked": ((612, 792), [(70, 80, 542, 380), (70, 410, 542, 700)]),
    "plate": ((612, 792), [(110, 120, 502, 640)]),  # framed, wide margins
    "landscape": ((792, 612), [(70, 80, 722, 510)]),
    "landscape-two-side-by-side": ((792, 612), [(70, 80, 380, 510), (412, 80, 722, 510)]),
}


def figure_page(kind: str, layout: str, seed: int = 0, dpi: int = 150) -> np.ndarray:
    """One page scanned upright: a running head, one or two large pictures (`picture`), a one-line
    caption; a "plate" has a frame round its picture."""
    import pymupdf

    (W, H), rects = FIGURE_LAYOUTS[layout]
    doc = pymupdf.open()
    page = doc.new_page(width=W, height=H)
    page.insert_textbox(pymupdf.Rect(60, 40, W - 60, 60), "THE HISTORY OF THE TOWN", fontsize=10, fontname="tiro", align=1)
    for i, r in enumerate(rects):
        r = pymupdf.Rect(*r)
        page.insert_image(r, stream=png_bytes(picture(kind, int(r.height * 3), int(r.width * 3), seed + 10 * i)))
        if layout == "plate":
            page.draw_rect(r + (-8, -8, 8, 8), color=(0, 0, 0), width=1.5)
    page.insert_textbox(pymupdf.Rect(60, H - 90, W - 60, H - 60), "Fig. 3. The reading room, seen from the gallery.",
                        fontsize=11, fontname="tiro", align=1)
    pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()


@dataclass
class SecondEngineDiesOnce(Stages):
    """Stages whose second-engine worker (routing) dies, process and all, on its first call of the
    run (`marker` is written first, so the replacement reads on): a lost second-pool actor. Here, not
    in a test module, so Ray workers import it."""

    marker: str = ""

    def then_stage(self):
        return _DiesOnce(super().then_stage(), self.marker)


class _StageWrapper:
    """A test's wrapper around an OCR stage (`self.stage`): every attribute but its call is the stage's."""

    def __getattr__(self, name):
        return getattr(self.stage, name)


class _DiesOnce(_StageWrapper):
    def __init__(self, stage, marker: str):
        self.stage, self.marker = stage, marker

    def __call__(self, works):
        import os

        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.stage(works)


@dataclass
class FirstEngineDiesAfterRouting(Stages):
    """Stages whose first-engine worker (routing) dies, process and all, on its second call of the
    run (`marker` written first, so its replacement reads on), once the second engine has started
    reading the page the first call routed (the second stage writes `marker + ".reading"` as each of
    its calls starts, and holds the page for its `delay_s`): the routed page is with the second pool
    when its object's owner dies, whatever the machine's load. Here, not in a test module, so Ray
    workers import it."""

    marker: str = ""
    wait_s: float = 120.0  # at most, for the second engine to start

    def ocr_stage(self):
        return _DiesOnSecondCall(super().ocr_stage(), self.marker, self.wait_s)

    def then_stage(self):
        return _SaysItReads(super().then_stage(), self.marker + ".reading")


class _SaysItReads(_StageWrapper):
    def __init__(self, stage, marker: str):
        self.stage, self.marker = stage, marker

    def __call__(self, *args, **kwargs):
        open(self.marker, "w").close()
        return self.stage(*args, **kwargs)


class _DiesOnSecondCall(_StageWrapper):
    def __init__(self, stage, marker: str, wait_s: float):
        self.stage, self.marker, self.wait_s, self.calls = stage, marker, wait_s, 0

    def __call__(self, works):
        import os
        import time

        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            deadline = time.monotonic() + self.wait_s
            while not os.path.exists(self.marker + ".reading") and time.monotonic() < deadline:
                time.sleep(0.05)
            os._exit(1)
        return self.stage(works)


@dataclass
class SecondEngineDiesOnPage(Stages):
    """Stages whose second-engine worker (routing) dies, process and all, on every call that holds
    page `page` of a book whose URI ends with `book`: a page that kills the second engine."""

    book: str = ""
    page: int = 0

    def then_stage(self):
        return _DiesOnPage(super().then_stage(), self.book, self.page)


class _DiesOnPage(_StageWrapper):
    def __init__(self, stage, book: str, page: int):
        self.stage, self.book, self.page = stage, book, page

    def __call__(self, works):
        import os

        if any(w.source_uri.endswith(self.book) and w.page_index == self.page for w in works):
            os._exit(1)
        return self.stage(works)


def pages_of(doc, book) -> list[dict]:
    """A book as an executor hands it back (a BookPages), as its pages rows in reading order."""
    from folioscan.pipeline.assemble import assemble_books

    rows, _ = assemble_books([doc], {doc.doc_id: book}, "run")
    return list(rows.rows())


@dataclass
class CallSizesRecorded(Stages):
    """Stages whose OCR stage appends the number of pages of each call it gets to `record` (a file, one
    line a call): what the engine was asked to read at once. Here, not in a test module, so Ray
    workers import it."""

    record: str = ""

    def ocr_stage(self):
        return _RecordsCallSizes(super().ocr_stage(), self.record)


class _RecordsCallSizes(_StageWrapper):
    def __init__(self, stage, record: str):
        self.stage, self.record = stage, record

    def __call__(self, works):
        with open(self.record, "a") as f:
            f.write(f"{len(works)}\n")
        return self.stage(works)


def drive(ex, docs) -> list:
    """Submit `docs` to executor `ex` and poll it until every book is handed back: [(doc, BookPages)]."""
    for doc in docs:
        ex.submit(doc)
    done = []
    while ex.busy():
        done += ex.poll()
    return done
