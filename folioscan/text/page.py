"""The page record the book-text functions work on: lines in reading order, boxes where the engine gave them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the cleaned page image


@dataclass
class Line:
    text: str
    box: Optional[Box] = None
    break_before: bool = False  # the engine left a blank line before it (a block or paragraph boundary)


@dataclass
class TextPage:
    lines: list[Line] = field(default_factory=list)
    confidence: Optional[float] = None
    ok: bool = True  # False for blank and failed pages: no text to read
    width: int = 0
    height: int = 0

    @property
    def has_boxes(self) -> bool:
        return bool(self.lines) and all(l.box is not None and l.box[3] > l.box[1] for l in self.lines)

    @classmethod
    def from_engine(cls, text: Optional[str], lines: Sequence = (), confidence: Optional[float] = None,
                    ok: bool = True, width: int = 0, height: int = 0) -> "TextPage":
        """From the engine's page text and its `lines` (objects or dicts with text and box; may be empty).

        Lines with boxes are used when they spell the page text; otherwise the text's own lines
        (VLM output has no boxes). Blank lines in the text mark `break_before` either way.
        """
        boxed = []
        for l in lines or ():
            t, box = (l["text"], l.get("box")) if isinstance(l, dict) else (l.text, l.box)
            t = t.strip()
            if t:
                boxed.append((t, _box(box)))
        out, blank, i = [], False, 0
        for t in (text or "").split("\n"):
            t = t.strip()
            if not t:
                blank = bool(out)
                continue
            box = None
            if i < len(boxed) and boxed[i][0] == t:
                box, i = boxed[i][1], i + 1
            out.append(Line(t, box, blank))
            blank = False
        return cls(out, confidence, ok and bool(out), width, height)


def _box(box) -> Optional[Box]:
    """A line's box, or None where the engine gave none (VLM lines carry an empty one)."""
    return tuple(map(int, box)) if box is not None and len(box) == 4 else None
