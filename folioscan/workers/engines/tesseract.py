"""Tesseract 5 (LSTM) through tesserocr; language data from the `tessdata-*` wheels (see tessdata.py)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult, OcrWord
from folioscan.workers.engines.base import ImageHints, result_from_lines
from folioscan.workers.engines.tessdata import DEFAULT_VARIANT, find_tessdata


class TesseractEngine:
    name = "tesseract"

    def __init__(self, lang: str = "eng", psm: int = 3, tessdata: Optional[str] = None, variant: str = DEFAULT_VARIANT):
        import tesserocr

        self._tesserocr = tesserocr
        self.lang = lang
        folder = find_tessdata(lang, variant, tessdata)
        self.api = tesserocr.PyTessBaseAPI(path=folder, lang=lang, psm=psm, oem=tesserocr.OEM.LSTM_ONLY)
        # which data read the page is part of the engine's version: fast and standard read differently
        data = folder if (tessdata or os.environ.get("TESSDATA_PREFIX")) else variant
        self.version = f"{tesserocr.tesseract_version().split()[1]} {lang}:{data}"

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        return [self._read(img) for img in images]

    def _read(self, img: np.ndarray) -> OcrResult:
        from PIL import Image

        try:
            self.api.SetImage(Image.fromarray(img))
            self.api.Recognize()
            lines, text = self._lines()
            return result_from_lines(lines, text)
        except Exception as e:
            return OcrResult(text="", lines=[], confidence=None, error=f"tesseract: {e}")

    def _lines(self) -> tuple[list[OcrLine], str]:
        """Text lines with box and confidence, each with its words (box and confidence); the page
        text keeps a blank line between blocks. Walks word by word, opening a line at each line start."""
        RIL = self._tesserocr.RIL
        it = self.api.GetIterator()
        lines: list[OcrLine] = []
        parts: list[str] = []
        if it is None:
            return lines, ""
        it.Begin()
        line, block, paragraph = None, -1, -1
        while True:
            block += it.IsAtBeginningOf(RIL.BLOCK)
            paragraph += it.IsAtBeginningOf(RIL.PARA)
            if it.IsAtBeginningOf(RIL.TEXTLINE):
                text = _text(it, RIL.TEXTLINE)
                line = None
                if text:
                    box = it.BoundingBox(RIL.TEXTLINE) or (0, 0, 0, 0)
                    line = OcrLine(text, round(it.Confidence(RIL.TEXTLINE) / 100.0, 4), tuple(box),
                                   block=max(block, 0), paragraph=max(paragraph, 0))
                    lines.append(line)
                    parts.append(text + ("\n\n" if it.IsAtFinalElement(RIL.BLOCK, RIL.TEXTLINE) else "\n"))
            word = _text(it, RIL.WORD)
            if line is not None and word:
                box = it.BoundingBox(RIL.WORD) or (0, 0, 0, 0)
                line.words.append(OcrWord(word, round(it.Confidence(RIL.WORD) / 100.0, 4), tuple(box)))
            if not it.Next(RIL.WORD):
                break
        return lines, "".join(parts)

    def close(self) -> None:
        self.api.End()


def _text(it, level) -> str:
    try:
        return (it.GetUTF8Text(level) or "").strip()
    except RuntimeError:  # tesserocr raises "No text returned" for an element with no text (a rule, a speck)
        return ""

