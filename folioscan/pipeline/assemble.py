"""Turn a shard's PageResults into `pages` and `documents` rows, checking that no page is missing."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Iterable, Optional

from folioscan.failures import PERMANENT, TRANSIENT
from folioscan.records import DOCUMENT_LEVEL, PageResult, SourceDocument
from folioscan.workers.engines.base import text_weighted_mean

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
        "orientation": p.orientation, "deskew_angle": p.deskew_angle,
        "crop_box": list(p.crop_box) if p.crop_box else None, "illumination": p.illumination,
        "ink_ratio": p.ink_ratio, "n_columns": p.n_columns, "n_lines": p.n_lines,
        "blocks": [list(b) for b in p.blocks], "text_density": p.text_density, "est_chars": p.est_chars,
        "text": text,
        "confidence": ocr.confidence if ocr else None,
        "confidence_min": ocr.confidence_min if ocr else None,
        "lines": [{"text": l.text, "confidence": l.confidence, "box": list(l.box)} for l in ocr.lines] if ocr else [],
        "engine": r.engine, "engine_version": r.engine_version,
        "budget": final.budget if final else None,
        "vision_tokens": final.vision_tokens if final else None,
        "output_tokens": final.output_tokens if final else None,
        "compression_ratio": (final.output_tokens / final.vision_tokens) if final and final.vision_tokens else None,
        "attempts": [a.__dict__ for a in attempts],
        "load_ms": w.load_ms, "prep_ms": p.prep_ms, "ocr_ms": r.ocr_ms, "run_id": run_id,
    }


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
        doc_error, doc_kind = (doc_level.error, _error_kind(doc_level)) if doc_level else (None, None)
        pages = sorted((r for r in got if r.work.page_index != DOCUMENT_LEVEL),
                       key=lambda r: (r.work.page_index, _SIDE_ORDER.get(r.work.side, 0)))
        missing = _missing_pages(pages)
        if missing and not doc_error:  # a worker died with them: worth another try
            doc_error, doc_kind = f"pages lost in processing: {missing[:10]}", TRANSIENT
        page_rows.extend(page_row(r, run_id) for r in pages)
        doc_rows.append(_document_row(doc, pages, doc_error, doc_kind, run_id, now))
    if by_doc:
        raise RuntimeError(f"results for documents outside the shard: {sorted(by_doc)[:3]}")
    return page_rows, doc_rows


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
        "fingerprint": doc.fingerprint,
        "size_bytes": doc.size, "page_count": pages[0].work.page_count if pages else 0,
        "pages_out": len(pages), "pages_ok": len(ok),
        "pages_blank": sum(1 for r in pages if r.status == "blank"), "pages_failed": failed,
        "status": status, "error": error, "error_kind": kind,
        "attempts_made": 1,  # the driver counts up when it commits a retried book
        "mean_confidence": mean_conf,
        "text": "\f".join((r.ocr.text if r.status == "ok" else "") for r in pages) if pages else None,
        "engine": engine, "run_id": run_id, "processed_at": now,
    }
