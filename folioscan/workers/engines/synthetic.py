"""A synthetic engine, for tests and benchmarks only: it reads nothing.

It returns, for every image, the result a real engine gives for a typical printed page: about
`words` words of made-up text in lines laid out over the image (a line and word box each, with
confidences), after `delay_s` seconds per call (0: at once), standing in for the time a GPU
would take. The text is deterministic per image content and `seed`, so a rerun reads the same
page the same way. With it the machinery around the engine (the driver, executors, storage) can
be measured without the engine's cost (`bench/driver.py`). Never use it for real output: what it
writes is not the page's text.
"""
from __future__ import annotations

import hashlib
import random
import time
from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult, OcrWord
from folioscan.workers.engines.base import ImageHints, result_from_lines

# common English words, so the book-text signals (language, lexicon) see a plausible page
_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more them some what out "
    "time other into could these only its about may then first any now such like our over man me even most "
    "made after also did many before must through years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work long here get both "
    "between life being under never day same another know while last might great old year off come since "
    "against go came right used take three himself few house use during without again place around however "
    "home small found thought went say part once general high upon school every country"
).split()

WORDS_PER_LINE = 10


class SyntheticEngine:
    name = "synthetic"

    def __init__(self, delay_s: float = 0.0, words: int = 300, seed: int = 0):
        self.delay_s, self.words, self.seed = delay_s, words, seed
        self.version = f"synthetic words={words} seed={seed}"

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self._page(img) for img in images]

    def _page(self, img: np.ndarray) -> OcrResult:
        # the seed of a page: its size and a sample of its pixels (hashing all of them would cost
        # what the engine is here to leave out)
        h, w = img.shape[:2]
        sample = np.ascontiguousarray(img[:: max(1, h // 64), :: max(1, w // 64)]).tobytes()
        rng = random.Random(hashlib.blake2b(sample + b"%d %d %d" % (h, w, self.seed), digest_size=8).digest())
        n_lines = max(1, -(-self.words // WORDS_PER_LINE))
        margin_x, margin_y = w // 10, h // 12
        pitch = max(1, (h - 2 * margin_y) // n_lines)
        x_height = max(1, int(pitch * 0.6))
        usable = max(1, w - 2 * margin_x)
        lines: list[OcrLine] = []
        left = self.words
        for n in range(n_lines):
            count = min(WORDS_PER_LINE, left)
            left -= count
            texts = [rng.choice(_VOCABULARY) for _ in range(count)]
            if n == 0 or rng.random() < 0.1:
                texts[0] = texts[0].capitalize()
            if left == 0 or rng.random() < 0.15:  # the page's last line, or a sentence end
                texts[-1] += "."
            chars = sum(len(t) for t in texts) + count - 1
            per_char = usable / max(chars, 1)
            y0 = margin_y + n * pitch
            x, words = margin_x, []
            for t in texts:
                width = max(1, int(len(t) * per_char))
                words.append(OcrWord(t, round(rng.uniform(0.85, 0.99), 4), (x, y0, min(x + width, w), min(y0 + x_height, h))))
                x += width + int(per_char)
            conf = round(sum(wd.confidence for wd in words) / len(words), 4)
            lines.append(OcrLine(" ".join(texts), conf, (margin_x, y0, words[-1].box[2], min(y0 + x_height, h)),
                                 words=words, block=0, paragraph=n // 8))
        return result_from_lines(lines)

    def close(self) -> None:
        pass
