"""Does transformers' continuous batching (`model.generate_batch`) see the page image? Prints one JSON object.

Refilling freed decode slots would lift useful_slot_fraction past what sorting by length can
reach, and transformers ships a continuous-batching manager. Its requests are token ids only
(`add_request(input_ids, ...)`; the model runner calls `model(input_ids=..., position_ids=...,
paged-attention args)`), so an image-text model would read its image placeholders as plain
tokens. This checks it on tiny random models of the real classes: two different pages through
`generate` give different log-probs under a plain forward pass (the model sees the image), through `generate_batch`
(pixel values passed along) the same tokens and log-probs as with no image at all.

    python bench/vlm_continuous_batching.py
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def check(kind: str) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, ContinuousBatchingConfig

    from folioscan.workers.engines.vlm.models import spec
    from folioscan.workers.engines.vlm.random_init import save_random_model

    path = save_random_model(kind, tempfile.mkdtemp())
    model, proc = AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh random model's zero-initialised projections hide the image: give every weight noise
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    rng = np.random.default_rng(0)
    pages = [Image.fromarray(rng.integers(0, 256, (600, 400, 3), dtype=np.uint8)) for _ in range(2)]
    text = {"text": [spec(kind).prompt]} if spec(kind).prompt else {}
    inputs = [proc(images=[p], return_tensors="pt", **text) for p in pages]
    n = 8
    cfg = ContinuousBatchingConfig(return_logprobs=True)

    def cb(ids, **extra):
        out = next(iter(model.generate_batch([ids], max_new_tokens=n, continuous_batching_config=cfg, **extra).values()))
        return out.generated_tokens, [round(float(x), 6) for x in out.logprobs]

    with torch.inference_mode():
        # the first output token's log-probs under a plain forward pass: the image reaches them
        first = [torch.log_softmax(model(**i).logits[0, -1].float(), -1) for i in inputs]
        batched = [cb(i["input_ids"][0].tolist(), pixel_values=i["pixel_values"]) for i in inputs]
        no_image = cb(inputs[0]["input_ids"][0].tolist())
    return {"forward_logprobs_differ_between_pages": float((first[0] - first[1]).abs().max()) > 1e-6,
            "forward_max_logprob_difference": float((first[0] - first[1]).abs().max()),
            "generate_batch_differs_between_pages": batched[0] != batched[1],
            "generate_batch_equals_no_image": batched[0] == no_image == batched[1],
            "generate_batch_tokens_and_logprobs": batched[0]}


def main() -> None:
    import transformers

    out = {"benchmark": "vlm_continuous_batching", "transformers": transformers.__version__,
           "models": {k: check(k) for k in ("deepseek-ocr-2", "got-ocr2")}}
    out["generate_batch_sees_images"] = all(m["generate_batch_differs_between_pages"] for m in out["models"].values())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
