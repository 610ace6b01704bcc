"""What DeepSeek-OCR's grounding output costs over plain OCR output, in tokens and generation time.
Prints one JSON object.

    python bench/grounding_cost.py [--pages 20] [--timed 3]

No real weights or tokenizer can be downloaded here, so: the grounded transcript of each eval page is
built from its ground-truth text and the layout blocks of folioscan's own segmentation (one
`<|ref|>text<|/ref|><|det|>[[x0, y0, x1, y1]]<|/det|>` tag per block, coordinates 0..999), and
counted with the tiny random model's tokenizer, with the five grounding tags added as single special
tokens as the real tokenizer has them. The tiny tokenizer splits words and numbers far more finely
than the real one, so token counts and ratios are indicative only. Time: the tiny random
DeepSeek-OCR-2 model (real classes, random weights) generating exactly the plain and the grounded
number of tokens for the same page image, same process; it says how generation time scales with the
extra tokens, not how fast the real model is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.evalset import OLD_BOOKS, manifest  # noqa: E402


def grounded_transcript(text: str, blocks, width: int, height: int) -> str:
    """The page text cut into the layout blocks (by their share of the area), each behind its tag."""
    words = text.split()
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in blocks] or [1]
    total, out, start = sum(areas), [], 0
    for k, area in enumerate(areas):
        end = len(words) if k == len(areas) - 1 else start + round(len(words) * area / total)
        if blocks:
            x0, y0, x1, y1 = blocks[k]
            coords = [round(x0 * 999 / width), round(y0 * 999 / height), round(x1 * 999 / width), round(y1 * 999 / height)]
            out.append(f"<|ref|>text<|/ref|><|det|>[{coords}]<|/det|>")
        out.append(" ".join(words[start:end]))
        start = end
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=20, help="pages for the token counts (every k-th eval page)")
    ap.add_argument("--timed", type=int, default=3, help="pages for the generation timing")
    args = ap.parse_args()
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from folioscan.workers.engines.grounding import GROUNDING_PROMPT, TAGS
    from folioscan.workers.engines.vlm.random_init import save_random_model
    from folioscan.workers.engines.vlm.transformers_backend import PROMPTS
    from folioscan.workers.prep.geometry import analysis_copy
    from folioscan.workers.prep.segment import segment

    torch.set_num_threads(1)
    model_dir = save_random_model("deepseek-ocr-2", tempfile.mkdtemp(prefix="tiny-dsocr2-"))
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True).eval()
    counter = AutoProcessor.from_pretrained(model_dir, local_files_only=True).tokenizer
    counter.add_special_tokens({"additional_special_tokens": list(TAGS)})

    rows = manifest()
    picked = rows[:: max(1, len(rows) // args.pages)][: args.pages]
    plain_tokens, grounded_tokens, n_blocks, pages = [], [], [], []
    for r in picked:
        img = np.asarray(Image.open(os.path.join(OLD_BOOKS, "pages", f"{r['page_name']}.png")).convert("L"))
        small, scale = analysis_copy(img)
        blocks = [tuple(int(v * scale) for v in b) for b in segment(small).blocks]
        grounded = grounded_transcript(r["truth"], blocks, img.shape[1], img.shape[0])
        plain_tokens.append(len(counter(r["truth"], add_special_tokens=False)["input_ids"]))
        grounded_tokens.append(len(counter(grounded, add_special_tokens=False)["input_ids"]))
        n_blocks.append(len(blocks))
        pages.append(img)

    def prompt_len(prompt: str) -> int:
        pil = Image.fromarray(pages[0]).convert("RGB")
        return int(processor(images=[pil], text=[prompt], return_tensors="pt")["input_ids"].shape[1])

    def generate_ms(img, prompt: str, n: int) -> float:
        inputs = processor(images=[Image.fromarray(img).convert("RGB")], text=[prompt], return_tensors="pt")
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, min_new_tokens=n, max_new_tokens=n,
                           pad_token_id=processor.tokenizer.pad_token_id)
        return (time.perf_counter() - t0) * 1000

    timed = list(range(min(args.timed, len(pages))))
    generate_ms(pages[0], PROMPTS["deepseek-ocr-2"], 8)  # warm-up
    plain_ms = [generate_ms(pages[k], PROMPTS["deepseek-ocr-2"], plain_tokens[k]) for k in timed]
    grounded_ms = [generate_ms(pages[k], GROUNDING_PROMPT, grounded_tokens[k]) for k in timed]
    extra = [g - p for g, p in zip(grounded_tokens, plain_tokens)]
    print(json.dumps({
        "pages": len(picked), "blocks_per_page": round(float(np.mean(n_blocks)), 2),
        "plain_tokens_per_page": round(float(np.mean(plain_tokens)), 1),
        "grounded_tokens_per_page": round(float(np.mean(grounded_tokens)), 1),
        "extra_tokens_per_block": round(sum(extra) / max(sum(n_blocks), 1), 1),
        "output_token_ratio": round(sum(grounded_tokens) / sum(plain_tokens), 4),
        "prompt_tokens_plain": prompt_len(PROMPTS["deepseek-ocr-2"]), "prompt_tokens_grounding": prompt_len(GROUNDING_PROMPT),
        "timed_pages": len(timed), "tiny_plain_ms_per_page": round(float(np.mean(plain_ms)), 1),
        "tiny_grounded_ms_per_page": round(float(np.mean(grounded_ms)), 1),
        "tiny_time_ratio": round(sum(grounded_ms) / sum(plain_ms), 4),
        "tokenizer": "tiny random-model BPE (320 tokens) + grounding tags as special tokens: indicative only",
    }))


if __name__ == "__main__":
    main()
