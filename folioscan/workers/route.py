"""Routing a page between two engines (docs/routing.md; options: pipeline/config.py `RouteOptions`).

Two halves, on the two pools of OCR workers:

- `route_reason`, on the first engine's worker, once its reading is finished (confidence
  calibrated): why the page goes on to the second engine, or None. A routed page keeps its cleaned
  image (`work.image`) so the second pool can read it; every other page drops it there.
- `settle`, on the second engine's worker: the reverse guard. The second reading is kept unless it
  failed, loops, hit its token cap, or has far fewer characters than segmentation estimated; then
  the page falls back to the first reading, with the reason, unless the first is worse by the same
  measure (failed, empty, or shorter still: `falls_back`). The result carries both readings
  (`PageResult.readings`) and the text of the one not kept.

The book-level lexicon share is known only at the book's end, long after its pages have left the
workers, so the lexicon flag here is a fixed per-page floor (`lexicon_below`).
"""
from __future__ import annotations

import copy
import time
from typing import Optional

from folioscan.records import BoxRead, PageResult, PageWork, Reading
from folioscan.text.lexicon import words
from folioscan.text.signals import lexicon_fraction, repetition_score

MIN_WORDS_FOR_LEXICON = 20  # fewer words say too little of a page's share in the word list
# the n-gram repetition score on fewer words reads rhetoric as a loop ("it was the best of times, it was
# the worst of times" scores 0.71 on its first 100 characters); the engine's own loop flag still counts
MIN_WORDS_FOR_REPETITION = 40


def _repeats(text: str, above: float) -> Optional[float]:
    """The text's repetition score when it is over `above` on a text long enough to tell, else None."""
    if len(words(text)) < MIN_WORDS_FOR_REPETITION:
        return None
    rep = repetition_score(text)
    return rep if rep > above else None


def route_reason(r: PageResult, route, lang: Optional[str] = "en") -> Optional[str]:
    """Why the first engine's result `r` goes to the second engine; None when it stays. Only pages
    the first engine read (or failed on) with their image still at hand can be routed."""
    if route is None or route.then is None or r.work.image is None or r.work.error:
        return None
    if r.status == "error":
        return "error" if route.errors else None
    if r.status != "ok" or r.ocr is None:
        return None
    text = r.ocr.text or ""
    if not text.strip():
        return "empty" if route.empty else None
    if r.ocr.confidence is not None and r.ocr.confidence < route.below:
        return f"confidence {r.ocr.confidence:.3g} < {route.below:g}"
    if route.repetition_above is not None:
        if any(a.repetition for a in r.ocr.attempts if a.accepted):  # the engine's own loop check (VLMs)
            return "repetition"
        if (rep := _repeats(text, route.repetition_above)) is not None:
            return f"repetition {rep:.2f}"
    if route.lexicon_below is not None and lang and len(words(text)) >= MIN_WORDS_FOR_LEXICON:
        lex = lexicon_fraction(text, lang)
        if lex is not None and lex < route.lexicon_below:
            return f"lexicon {lex:.2f} < {route.lexicon_below:g}"
    return None


def second_work(first: PageResult, box_read: Optional[BoxRead] = None) -> PageWork:
    """The page as the second engine gets it: a copy of the first's work (its own cleaning record,
    so a turn the second stage makes does not touch the first reading's boxes), with the image;
    the first result lets go of the image."""
    work = copy.copy(first.work)
    work.prep = copy.deepcopy(first.work.prep)
    work.box_read = box_read
    first.work.image = None
    return work


def fallback_reason(second: PageResult, route) -> Optional[str]:
    """The reverse guard: why the second reading is not kept; None when it is."""
    if second.status != "ok" or second.ocr is None:
        return f"error: {second.error}" if second.error else f"status {second.status}"
    ocr = second.ocr
    accepted = next((a for a in ocr.attempts if a.accepted), ocr.attempts[-1] if ocr.attempts else None)
    if accepted is not None and accepted.repetition:
        return "repetition"
    if route.repetition_above is not None and (rep := _repeats(ocr.text or "", route.repetition_above)) is not None:
        return f"repetition {rep:.2f}"
    if accepted is not None and accepted.hit_token_cap:
        return "token-cap"
    chars, est = len((ocr.text or "").strip()), second.work.prep.est_chars
    if est > 0 and chars < route.min_chars_share * est:
        return f"short: {chars} chars of ~{est} estimated"
    if est <= 0 and not chars:
        return "empty"
    return None


def _chars(r: PageResult) -> int:
    return len((r.ocr.text or "").strip()) if r.status == "ok" and r.ocr is not None else 0


def falls_back(first: PageResult, second: PageResult, why: Optional[str]) -> bool:
    """Whether the guard's finding `why` sends the page back to the first reading: only to one that
    is better by the finding's own measure. A first reading that failed or read nothing is never
    preferred to a second with text (the row would keep no text at all), and `short` never falls
    back to a first reading with fewer characters still."""
    if why is None:
        return False
    if second.status != "ok" or not _chars(second):
        return True
    if first.status != "ok" or not _chars(first):
        return False
    return not why.startswith("short:") or _chars(first) > _chars(second)


def _reading(r: PageResult, chosen: bool, reason: Optional[str] = None) -> Reading:
    ocr = r.ocr
    return Reading(r.engine, r.engine_version, r.status, ocr.confidence if ocr else None,
                   ocr.confidence_raw if ocr else None, len((ocr.text or "").strip()) if ocr else 0, chosen, reason)


def settle(first: PageResult, second: PageResult, route) -> PageResult:
    """The page's final result: the second reading, or the first when the guard says so (and the
    first is better by its measure: `falls_back`); both readings recorded, with the guard's finding
    on the second even when it was kept, the OCR time of both counted."""
    why = fallback_reason(second, route)
    keep, other = (first, second) if falls_back(first, second, why) else (second, first)
    keep.route_reason = first.route_reason
    keep.readings = [_reading(first, keep is first), _reading(second, keep is second, why)]
    keep.unchosen_text = other.ocr.text if other.ocr is not None and other.status == "ok" else None
    keep.ocr_ms = first.ocr_ms + second.ocr_ms
    keep.work.attempts_made = max(first.work.attempts_made, second.work.attempts_made)
    keep.work.image = keep.work.box_read = None
    if keep is first:
        keep.completed_at = time.time()  # final now, not when the first engine read it
    return keep
