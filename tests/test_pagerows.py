"""Rows made where the pages are read (pipeline/pagerows.py): a book handed over as PageParts made in
an actor, its text made from TextFacts elsewhere, gives the rows and documents row the driver made
itself from the results; the run's summary counts those rows column by column as it counted them
row by row."""
from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from folioscan.pipeline.assemble import assemble_books, assemble_shard, text_columns
from folioscan.pipeline.pagerows import PAGE_ROW, BookPages, page_part
from folioscan.pipeline.spill import Spill
from folioscan.pipeline.summary import PAGE_COLUMNS, JobSummary
from folioscan.records import (DOCUMENT_LEVEL, BoxAlignment, OcrAttempt, PageResult, PageWork, Reading, SourceDocument)
from folioscan.schemas import PAGES
from folioscan.workers.engines.synthetic import SyntheticEngine
from tests.helpers import text_page_image


def _results(doc_id: str = "d1") -> list[PageResult]:
    engine = SyntheticEngine(words=40)
    images = [text_page_image(f"page {i} of a book", dpi=20) for i in range(9)]
    out = []
    for i in range(9):
        [ocr] = engine.predict_batch([images[i]])
        h, w = images[i].shape
        side, parts = ({3: "left", 4: "right"}.get(i), 2) if i in (3, 4) else (None, 1)
        work = PageWork(doc_id, f"/src/{doc_id}.pdf", i if i < 4 else i - 1, 8, width=w, height=h, side=side, parts=parts)
        out.append(PageResult(work, "ok", ocr, "synthetic", engine.version))
    out[6].status, out[6].error, out[6].ocr = "error", "synthetic: boom", None
    out[7].status, out[7].ocr = "blank", None
    out.append(PageResult(PageWork(doc_id, f"/src/{doc_id}.pdf", DOCUMENT_LEVEL, 8, content_sha256="ab" * 32),
                          "ok", None, "", ""))
    return out


def test_a_book_handed_over_as_parts_gives_the_rows_the_driver_made_itself(tmp_path):
    """Results in three calls, out of order, made into PageParts (pickled, as an actor answers) and
    their TextFacts; the book text made from those by `text_columns` (the task's work): the pages part
    and the documents row are those `assemble_shard` makes from the results in the driver's process."""
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    results = _results()
    calls = [results[6:], results[3:6], results[:3]]
    answers, texts = [], []
    for rs in calls:
        part, text = page_part("d1", rs, "run")
        answers.append(pickle.dumps(part))
        texts.append(text)
    spill = Spill(str(tmp_path))
    try:
        book = BookPages(spill.file(PAGE_ROW.schema), "run")
        for k, blob in enumerate(answers):
            book.extend(pickle.loads(blob), ("a handle", k))
        book.columns = text_columns(t for text in texts for t in text)
        rows, docs = assemble_books([doc], {"d1": book}, "run")
        got = list(rows.rows())
        want_rows, want_docs = assemble_shard([doc], results, "run")
        assert [(r["page_index"], r["side"]) for r in got] == [(0, None), (1, None), (2, None), (3, "left"), (3, "right"),
                                                                (4, None), (5, None), (6, None), (7, None)]
        assert got == want_rows and docs == [dict(d, processed_at=docs[0]["processed_at"]) for d in want_docs]
        assert docs[0]["content_sha256"] == "ab" * 32 and docs[0]["status"] == "partial" and docs[0]["text"]
    finally:
        spill.close()


def test_a_book_whose_text_is_in_the_object_store_is_not_assembled_without_it():
    """Handles the driver cannot read (an actor's second answer) and no book text made: an error, not a
    book committed without its text."""
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    part, _ = page_part("d1", _results()[:2], "run")
    book = BookPages.in_memory("run")
    book.extend(part, ("a handle", 0))
    with pytest.raises(RuntimeError, match="must be made by its executor"):
        assemble_books([doc], {"d1": book}, "run")


def test_the_spill_keeps_positions_when_dict_rows_and_record_batches_mix(tmp_path):
    """A Ray driver appends actors' record batches and, for a page it settles itself, a dict row."""
    results = _results()[:9]
    spill = Spill(str(tmp_path))
    try:
        book = BookPages(spill.file(PAGE_ROW.schema), "run")
        part, _ = page_part("d1", results[:3], "run")
        book.extend(part, None)
        book.append(results[3])
        part, _ = page_part("d1", results[4:9], "run")
        book.extend(part, None)
        assert [f.row for f in book.facts] == list(range(9))
        table = book.rows.take(list(range(8, -1, -1)), ["page_index", "side", "status"])
        assert table.column_names == ["page_index", "side", "status"]
        assert table.to_pylist() == [{"page_index": r.work.page_index, "side": r.work.side, "status": r.status}
                                     for r in reversed(results)]
    finally:
        spill.close()


def _counted_row_by_row(rows: list[dict]) -> dict:
    """What JobSummary.add counted when it read the rows as dicts (before the driver was relieved)."""
    out = dict(pages=0, failed=0, blank=0, alone=0, boxes=0, routed=0, kept=0, fallback=0, cs=0.0, cw=0.0,
               load=[0.0, 0], clean=[0.0, 0], ocr=[0.0, 0], last=None)
    for p in rows:
        for stage, ms in (("load", p["load_ms"]), ("clean", p["prep_ms"]), ("ocr", p["ocr_ms"])):
            if ms:
                out[stage][0] += ms / 1000
                out[stage][1] += 1
        out["pages"] += 1
        out["failed"] += p["status"] == "error"
        out["blank"] += p["status"] == "blank"
        out["alone"] += any(a["reason"].startswith("batch-failed:") for a in p["attempts"] or [])
        out["last"] = max(filter(None, [out["last"], p["completed_at"]]), default=None)
        out["boxes"] += bool((p.get("box_alignment") or {}).get("error"))
        if p.get("routed"):
            out["routed"] += 1
            kept = any(r["chosen"] for r in (p["readings"] or [])[1:])
            out["kept"] += kept
            out["fallback"] += not kept
        if p["confidence"] is not None:
            w = max(len(p["text"] or ""), 1)
            out["cs"] += p["confidence"] * w
            out["cw"] += w
    return out


def test_the_summary_counts_a_shard_column_by_column_as_it_did_row_by_row():
    results = _results()[:9]
    t0 = datetime(2026, 12, 5, tzinfo=timezone.utc)
    for i, r in enumerate(results):
        r.completed_at = (t0 + timedelta(seconds=10 * i)).timestamp()
        r.work.load_ms, r.work.prep.prep_ms, r.ocr_ms = (i % 3) * 5.0, (i % 2) * 7.0, 100.0 + i
    results[1].ocr.attempts = [OcrAttempt(budget="", reason="batch-failed:RuntimeError: boom"), OcrAttempt(budget="")]
    results[2].ocr.box_alignment = BoxAlignment("synthetic", error="tesseract: no boxes")
    results[5].ocr.box_alignment = BoxAlignment("synthetic", words=40)
    results[4].ocr.text = ""  # an empty page still weighs 1
    for r, kept in ((results[0], True), (results[8], False)):
        r.route_reason = "confidence"
        r.readings = [Reading("tesseract", "5", "ok", chosen=not kept), Reading("synthetic", "1", "ok", chosen=kept)]
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    rows, docs = assemble_shard([doc], results, "run")
    want = _counted_row_by_row(rows)
    summary = JobSummary("run")
    summary.start()
    table = pa.Table.from_pylist(rows, schema=PAGES.tagged_schema).select(list(PAGE_COLUMNS))
    summary.add([table.slice(0, 4), table.slice(4)], docs)
    assert (summary.pages, summary.pages_failed, summary.pages_blank) == (want["pages"], want["failed"], want["blank"]) == (9, 1, 1)
    assert summary.pages_read_alone == want["alone"] == 1 and summary.pages_boxes_failed == want["boxes"] == 1
    assert (summary.pages_routed, summary.pages_routed_kept, summary.pages_routed_fallback) == (
        want["routed"], want["kept"], want["fallback"]) == (2, 1, 1)
    assert summary.mean_confidence == pytest.approx(want["cs"] / want["cw"], rel=1e-12)
    assert summary.last_page_at == want["last"].isoformat()
    for stage in ("load", "clean", "ocr"):
        assert summary.stages[stage]["pages"] == want[stage][1] and summary.stages[stage]["seconds"] == pytest.approx(
            round(want[stage][0], 3), abs=1e-3)
