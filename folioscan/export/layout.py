"""The page structure every format writes: blocks of lines of words, boxes in the loaded scan's pixels.

Boxes are the `box_source` columns (the scan as the archive holds it), never the cleaned page's.
A line or word the engine did not locate has no box here, and the formats write none for it.
"""
from __future__ import annotations

from typing import Iterable, Optional

Box = tuple[int, int, int, int]
HYPHENS = ("-", "\u00ac", "\u2010")  # hyphen-minus, not sign (Fraktur), hyphen


def box(b) -> Optional[Box]:
    return tuple(int(v) for v in b) if b else None


def union(boxes: Iterable[Optional[Box]]) -> Optional[Box]:
    found = [b for b in boxes if b]
    if not found:
        return None
    return min(b[0] for b in found), min(b[1] for b in found), max(b[2] for b in found), max(b[3] for b in found)


def page_size(page: dict) -> Optional[tuple[int, int]]:
    return (page["source_width"], page["source_height"]) if page.get("source_width") and page.get("source_height") else None


def blocks(page: dict) -> list[list[dict]]:
    """The page's lines grouped into the engine's blocks, in reading order (engines without blocks: one)."""
    out: list[list[dict]] = []
    last = None
    for line in page.get("lines") or []:
        if not out or line.get("block") != last:
            out.append([])
            last = line.get("block")
        out[-1].append(line)
    return out


def words(line: dict) -> list[dict]:
    """The line's words with their boxes; an engine that gives no word boxes yields its tokens without boxes."""
    if line.get("words"):
        return line["words"]
    return [{"text": t, "confidence": None, "box_source": None} for t in line["text"].split()]


def hyphenated(line: dict, is_last_line: bool) -> bool:
    """The line ends in a hyphen that breaks a word across lines."""
    text = line["text"].rstrip()
    return not is_last_line and len(text) > 1 and text.endswith(HYPHENS) and text[-2].isalpha()
