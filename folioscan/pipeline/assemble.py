"""Turn a shard's PageResults into `pages` and `documents` rows, checking that no page is missing."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Iterable, Optional

from folioscan.failures import PERMANENT, TRANSIENT
from folioscan.records import DOCUMENT_LEVEL, OcrLine, OcrResult, PageResult, SourceDocument, page_number
from folioscan.schemas import DOCUMENTS, PAGES, Table
from folioscan.text.book import BookText, PageText, book_text
from folioscan.text.page import TextPage
from folioscan.workers.engines.base import text_weighted_mean
from folioscan.workers.prep.transform import to_json

_SIDE_ORDER = {None: 0, "left": 0, "right": 1}


def page_row(r: PageResult, run_id: str) -> dict:
    w, p, ocr = r.work, r.work.prep, r.ocr
    attempts = ocr.attempts if ocr else []
    final = next((a for a in attempts if a.accepted), attempts[-1] if attempts else None)
    text = ocr.text if ocr and r.status == "ok" else ("" if r.status == "blank" else None)
    return {
        "doc_id": w.doc_id, "source_uri": w.source_uri, "page_index": w.page_index, "side": w.side,
        "status": r.status, "error": r.error, "error_kind": _error_kind(r), "attempts_made": w.attempts_made,
        "image_origin": w.image_origin or None, "dpi": w.dpi or None,
        "source_width": w.source_width or None, "source_height": w.source_height or None,
        "width": w.width or None, "height": w.height or None,
        "pdf_transform": list(w.pdf_transform) if w.pdf_transform else None,
        "orientation": p.orientation, "orientation_confidence": p.orientation_confidence, "deskew_angle": p.deskew_angle,
        "crop_box": list(p.crop_box) if p.crop_box else None, "illumination": p.illumination,
        "ink_ratio": p.ink_ratio, "n_columns": p.n_columns, "n_lines": p.n_lines,
        "blocks": [list(b) for b in p.blocks], "text_density": p.text_density, "est_chars": p.est_chars,
        "curvature": p.curvature, "dewarped": p.dewarped, "x_height": p.x_height or None, "upscale": p.upscale,
        "transforms": to_json(p.transforms),
        "text": text,
        "confidence": ocr.confidence if ocr else None,
        "confidence_raw": ocr.confidence_raw if ocr else None,
        "confidence_min": ocr.confidence_min if ocr else None,
        "lines": [_line(l) for l in ocr.lines] if ocr else [],
        "box_level": _box_level(ocr) if ocr and r.status == "ok" else None,
        "box_alignment": ocr.box_alignment.__dict__ if ocr and ocr.box_alignment else None,
        "engine": r.engine, "engine_version": r.engine_version,
        "budget": final.budget if final else None,
        "vision_tokens": final.vision_tokens if final else None,
        "output_tokens": final.output_tokens if final else None,
        "compression_ratio": (final.output_tokens / final.vision_tokens) if final and final.vision_tokens else None,
        "attempts": [a.__dict__ for a in attempts],
        "routed": bool(r.readings), "route_reason": r.route_reason if r.readings else None,
        "readings": [x.__dict__ for x in r.readings] or None, "unchosen_text": r.unchosen_text,
        "load_ms": w.load_ms, "prep_ms": p.prep_ms, "ocr_ms": r.ocr_ms,
        "completed_at": datetime.fromtimestamp(r.completed_at, timezone.utc), "run_id": run_id,
    }


def _line(l: OcrLine) -> dict:
    # the boxes as lists, inline: a page has ~300 words and a call per box was a tenth of the driver's work per page
    return {"text": l.text, "confidence": l.confidence, "box": list(l.box) if l.box else None,
            "box_source": list(l.box_source) if l.box_source else None, "block": l.block, "paragraph": l.paragraph,
            "words": [{"text": w.text, "confidence": w.confidence, "box": list(w.box) if w.box else None,
                       "box_source": list(w.box_source) if w.box_source else None} for w in l.words]}


def _box_level(ocr: OcrResult) -> str:
    if any(w.box for l in ocr.lines for w in l.words):
        return "words"
    return "lines" if any(l.box for l in ocr.lines) else "none"


def _error_kind(r: PageResult) -> Optional[str]:
    if not r.error:
        return None
    return r.error_kind or r.work.error_kind or PERMANENT


def assemble_shard(docs: list[SourceDocument], results: Iterable[PageResult], run_id: str) -> tuple[list[dict], list[dict]]:
    """Rows for every document of the shard, in shard order, pages in reading order."""
    by_doc: dict[str, list[PageResult]] = defaultdict(list)
    for r in results:
        by_doc[r.work.doc_id].append(r)
    now = datetime.now(timezone.utc)
    page_rows, doc_rows = [], []
    for doc in docs:
        got = by_doc.pop(doc.doc_id, [])
        doc_level = next((r for r in got if r.work.page_index == DOCUMENT_LEVEL), None)
        sha = next((r.work.content_sha256 for r in got if r.work.content_sha256), None)
        doc_error, doc_kind = (doc_level.error, _error_kind(doc_level)) if doc_level else (None, None)
        pages = sorted((r for r in got if r.work.page_index != DOCUMENT_LEVEL),
                       key=lambda r: (r.work.page_index, _SIDE_ORDER.get(r.work.side, 0)))
        if doc_level is not None and doc_level.work.duplicate_of:  # its bytes were read as another book
            row = _document_row(doc, [], None, None, run_id, now)
            row["page_count"], row["content_sha256"] = doc_level.work.page_count, sha
            doc_rows.append(as_duplicate(_in_order(DOCUMENTS, row, _book_columns(_book_text([]), [])),
                                         doc_level.work.duplicate_of))
            continue
        missing = _missing_pages(pages)
        if missing and not doc_error:  # a worker died with them: worth another try
            doc_error, doc_kind = f"pages lost in processing: {[page_number(i) for i in missing[:10]]}", TRANSIENT
        book = _book_text(pages)
        page_rows.extend(_in_order(PAGES, page_row(r, run_id), _page_text_columns(t)) for r, t in zip(pages, book.pages))
        row = _document_row(doc, pages, doc_error, doc_kind, run_id, now)
        row["content_sha256"] = sha
        doc_rows.append(_in_order(DOCUMENTS, row, _book_columns(book, pages)))
    if by_doc:
        raise RuntimeError(f"results for documents outside the shard: {sorted(by_doc)[:3]}")
    return page_rows, doc_rows


_NOT_READ = ("error", "error_kind", "mean_confidence", "engine", "text", "page_spans", "page_numbers_consistent",
             "language", "language_share", "lexicon_fraction", "repetition", "ocr_quality")


def as_duplicate(row: dict, first: str) -> dict:
    """A documents row turned into a copy of book `first`: no pages and no text of its own (the first
    copy's stand for it); what was listed and read (URI, size, page count, content hash) stays."""
    row.update(status="duplicate", duplicate_of=first, pages_out=0, pages_ok=0, pages_blank=0, pages_failed=0,
               **{c: None for c in _NOT_READ})
    return row


def first_copy_gone(row: dict) -> dict:
    """A duplicate whose first copy is neither committed nor in flight: a transient error, read again next run."""
    row.update(status="error", error_kind=TRANSIENT, duplicate_of=None,
               error=f"{row['source_uri']}: the same bytes as book {row['duplicate_of']}, which is neither committed "
                     f"nor in flight any more; read again by the next run")
    return row


def document_complete(results: list[PageResult]) -> bool:
    """Every page of the book is back (or the book failed as a whole)."""
    if any(r.work.page_index == DOCUMENT_LEVEL for r in results):
        return True
    return bool(results) and not _missing_pages(results)


def _missing_pages(pages: list[PageResult]) -> list[int]:
    """Source pages with fewer (or more) rows than they were split into."""
    if not pages:
        return []
    rows: dict[int, int] = defaultdict(int)
    parts: dict[int, int] = {}
    for r in pages:
        rows[r.work.page_index] += 1
        parts[r.work.page_index] = r.work.parts
    return [i for i in range(pages[0].work.page_count) if rows.get(i, 0) != parts.get(i, 1)]


def _document_row(doc: SourceDocument, pages: list[PageResult], error: Optional[str], error_kind: Optional[str],
                  run_id: str, now) -> dict:
    ok = [r for r in pages if r.status == "ok"]
    failed = sum(1 for r in pages if r.status == "error")
    mean_conf = text_weighted_mean((r.ocr.text, r.ocr.confidence) for r in ok)
    if error and not pages:
        status = "error"
    elif error or failed:
        status = "partial" if ok else "error"
        error = error or next(r.error for r in pages if r.status == "error")
    else:
        status = "ok"
    kinds = {error_kind, *(_error_kind(r) for r in pages if r.status == "error")} - {None}
    kind = (TRANSIENT if TRANSIENT in kinds else PERMANENT) if status != "ok" else None
    engine = pages[0].engine if pages else None
    return {
        "doc_id": doc.doc_id, "source_uri": doc.uri, "kind": doc.kind,
        "fingerprint": doc.fingerprint, "metadata": doc.metadata,
        "content_sha256": None,  # set by assemble_shard from every result of the book
        "duplicate_of": None,
        "size_bytes": doc.size, "page_count": pages[0].work.page_count if pages else 0,
        "pages_out": len(pages), "pages_ok": len(ok),
        "pages_blank": sum(1 for r in pages if r.status == "blank"), "pages_failed": failed,
        "status": status, "error": error, "error_kind": kind,
        "attempts_made": 1,  # the driver counts up when it commits a retried book
        "mean_confidence": mean_conf,
        "engine": engine, "run_id": run_id, "processed_at": now,
    }


def _in_order(table: Table, *parts: dict) -> dict:
    """One row from the parts, its columns in the table's order (a column given by no part stays missing)."""
    merged = {k: v for part in parts for k, v in part.items()}
    return {**{n: merged.pop(n) for n in table.names if n in merged}, **merged}


def _book_text(pages: list[PageResult]) -> BookText:
    return book_text([TextPage.from_engine(r.ocr.text if r.ocr else None, r.ocr.lines if r.ocr else (),
                                           r.ocr.confidence if r.ocr else None, ok=r.status == "ok",
                                           width=r.work.width, height=r.work.height) for r in pages])


def _page_text_columns(t: PageText) -> dict:
    s = t.signals
    return {"header": t.header, "footer": t.footer, "printed_page_number": t.printed_page_number,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if t.body else None,
            "ocr_quality": s.ocr_quality, "matter": t.matter}


def _book_columns(book: BookText, pages: list[PageResult]) -> dict:
    s = book.signals
    return {"text": book.text if pages else None, "page_spans": book.page_spans if pages else None,
            "page_numbers_consistent": book.page_numbers_consistent,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if book.text else None,
            "ocr_quality": s.ocr_quality}
