"""Word boxes for a text-only engine's pages (`boxes: tesseract` in the VLM and truth engine options).

Two halves, in the two stages a page passes through:

- `read_boxes`, in the page stage (load + clean, on CPU workers): Tesseract reads the cleaned page
  and the read rides on the page to the OCR worker. There, and not in the VLM's actor, because the
  actor holds a GPU and one CPU: Tesseract (about a second a page on one core) inside it would
  hold the accelerator's pages back, while the page stage already runs on every CPU the cluster
  has (the Ray executor gives its loaders a whole core each and more of them when boxes are on with a GPU engine).
- `place_words`, in the OCR stage, once the engine has read the page: the engine's lines are
  aligned to Tesseract's words (engines/align.py, a few milliseconds) and replaced by the aligned
  lines, whose words carry Tesseract's boxes. The page text stays the engine's own.

A page the OCR stage turned by 180 degrees after the box read (its low-confidence re-read) is read
by Tesseract again there, in the turned orientation. If Tesseract fails on a page, the page keeps
the engine's text without boxes and says so (`box_alignment.error`, a warning in the log, and the
run summary's `pages_boxes_failed`): never a silent page without boxes.
"""
from __future__ import annotations

import logging
import time
from folioscan.failures import describe
from folioscan.records import BoxAlignment, BoxRead, OcrLine, OcrResult, OcrWord, PageWork
from folioscan.workers.engines import align

log = logging.getLogger(__name__)

_engines: dict[str, object] = {}  # per process: one Tesseract per set of options, built on first use


def wanted(options) -> bool:
    return getattr(options, "boxes", "none") == "tesseract"


def _engine(options):
    from folioscan.workers.engines.registry import build_engine

    key = options.boxes_tesseract.model_dump_json()
    if key not in _engines:
        _engines[key] = build_engine(options.boxes_tesseract)
    return _engines[key]


def read_boxes(work: PageWork, options) -> None:
    """Tesseract's read of the cleaned page, kept on the page (`work.box_read`); a failure is kept
    too, as the read's error."""
    if not wanted(options) or work.error or work.image is None or work.prep.is_blank:
        return
    t0 = time.perf_counter()
    engine_name = "tesseract"
    try:
        engine = _engine(options)
        engine_name = f"tesseract {engine.version}"
        [result] = engine.predict_batch([work.image])
    except Exception as e:
        result = OcrResult("", [], None, error=f"tesseract: {describe(e)}")
    work.box_read = BoxRead(result, engine_name, (time.perf_counter() - t0) * 1000, work.prep.orientation)


def place_words(work: PageWork, ocr: OcrResult, options) -> None:
    """Replace the engine's unlocated lines by the same words on Tesseract's boxes, and record how
    many words got a word box, a line box, none (`ocr.box_alignment`)."""
    if not wanted(options) or ocr.error:
        return
    read = work.box_read
    if read is None or read.orientation != work.prep.orientation:  # turned since (or never read): read now
        read_boxes(work, options)
        read = work.box_read
    work.box_read = None  # not shipped any further
    vlm_lines = [l.text for l in ocr.lines] if ocr.lines else [t for t in ocr.text.split("\n") if t.strip()]
    n_words = sum(len(t.split()) for t in vlm_lines)
    error = (read.result.error if read else "no box read") if read is None or read.result.error else None
    t0 = time.perf_counter()
    if not error:
        try:
            tess_lines = read.result.lines
            result = align.align(vlm_lines, align.tess_words(tess_lines))
            confidences = [l.confidence for l in ocr.lines] if ocr.lines else [ocr.confidence or 0.0] * len(vlm_lines)
            lines = _ocr_lines(result, confidences, tess_lines)
        except Exception as e:
            error = f"align: {describe(e)}"
    if error:
        log.warning("%s page_index %d: no word boxes: %s", work.source_uri, work.page_index, error)
        ocr.box_alignment = BoxAlignment(read.engine if read else "tesseract", none=n_words, error=error,
                                         tesseract_ms=read.ms if read else 0.0)
        return
    ocr.lines = lines
    counts = result.counts()
    ocr.box_alignment = BoxAlignment(read.engine, counts[align.WORD], counts[align.LINE], counts[align.NONE],
                                     tesseract_ms=read.ms, align_ms=(time.perf_counter() - t0) * 1000)


def _ocr_lines(result: align.Alignment, confidences: list[float], tess_lines: list[OcrLine]) -> list[OcrLine]:
    """The aligned lines as the records hold them: a word without its own box has box (); a line's
    block and paragraph are those of the Tesseract line it lies on (else the line before's)."""
    out: list[OcrLine] = []
    block, paragraph = 0, 0
    for line in result.lines:
        if line.tess_line is not None:
            block, paragraph = tess_lines[line.tess_line].block, tess_lines[line.tess_line].paragraph
        conf = confidences[line.vlm_line] if line.vlm_line < len(confidences) else 0.0
        words = [OcrWord(text, conf, box or ()) for text, box in line.words]
        out.append(OcrLine(line.text, conf, line.box or (), words, block=block, paragraph=paragraph))
    return out

