"""DeepSeek-OCR grounding: located blocks from the model's own tags, never invented boxes.

With the grounding prompt the model writes each layout region as
`<|ref|>kind<|/ref|><|det|>[[x0, y0, x1, y1]]<|/det|>` followed by the region's text, the box
normalised to 0..999 of the image it was shown. `parse` turns that into blocks with pixel boxes;
text the model wrote outside any tag is kept without a box. The tags are special tokens, so the
text must be decoded with them kept (`skip_special_tokens=False`).

Opt-in (`GROUNDING_PROMPT` in place of "Free OCR."): it costs output tokens, measured by
`bench/grounding_cost.py`. Wiring it into the VLM engine is left to that engine's module.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

from folioscan.records import OcrLine

GROUNDING_PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
TAGS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>")
SCALE = 999  # the model's coordinate range
_TAG = re.compile(r"<\|ref\|>(.*?)<\|/ref\|>\s*<\|det\|>(.*?)<\|/det\|>", re.S)


@dataclass
class GroundedBlock:
    kind: str  # the model's region type: text, title, table, image, ...
    text: str
    box: Optional[tuple[int, int, int, int]]  # pixels of the image the model read; None when not grounded


def _box(det: str, width: int, height: int) -> Optional[tuple[int, int, int, int]]:
    try:
        boxes = json.loads(det)
    except ValueError:
        return None  # a malformed tag: the text is kept, no box is made up
    boxes = [b for b in boxes if isinstance(b, list) and len(b) == 4]
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    sx, sy = width / SCALE, height / SCALE
    return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)


def parse(decoded: str, width: int, height: int) -> list[GroundedBlock]:
    blocks: list[GroundedBlock] = []
    tags = list(_TAG.finditer(decoded))
    head = decoded[: tags[0].start()] if tags else decoded
    if head.strip():
        blocks.append(GroundedBlock("text", head.strip(), None))
    for k, m in enumerate(tags):
        end = tags[k + 1].start() if k + 1 < len(tags) else len(decoded)
        text = decoded[m.end():end].strip()
        if text or m.group(1) not in ("text", "title"):
            blocks.append(GroundedBlock(m.group(1).strip(), text, _box(m.group(2), width, height)))
    return blocks


def plain_text(blocks: list[GroundedBlock]) -> str:
    return "\n\n".join(b.text for b in blocks if b.text)


def to_lines(blocks: list[GroundedBlock], confidence: float) -> list[OcrLine]:
    """One OcrLine per text block, boxed by the model's region (the model locates blocks, not lines);
    its lines stay joined in the text. A block without a box gets none."""
    return [OcrLine(b.text, confidence, b.box or (), block=i) for i, b in enumerate(blocks) if b.text]
