"""Randomly initialised models of the real classes, saved like a downloaded checkpoint.

For tests (tiny) and throughput benchmarks (full-size architecture) where no weights can be
downloaded. Their output is noise: never report it as OCR accuracy.
"""
from __future__ import annotations

import os

from folioscan.workers.engines.vlm.models import MODELS, spec

CORPUS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little money.",
    "CHAPTER I. The page, the line, the word; 1, 2, 3. OCR system user assistant",
]

FULL_VOCAB = {k: s.vocab_size for k, s in MODELS.items()}  # the LM head's size matters to throughput and memory


def train_tokenizer(kind: str, vocab_size: int = 320):
    """A byte-level BPE trained offline on a few sentences, with the published special tokens,
    so bos/eos/pad are the real checkpoint's (GOT-OCR2: eos and pad are <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    s = spec(kind)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", *s.specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 10, trainer)
    if kind == "deepseek-ocr-2":
        bos, eos, pad, image = s.specials
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token=pad, bos_token=bos,
                                       eos_token=eos, extra_special_tokens={"image_token": image})
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def _classes(kind: str):
    import importlib

    import transformers

    s = spec(kind)
    module, name = s.image_processor.split(":")
    image_processor = getattr(importlib.import_module(f"transformers.models.{module}"), name)
    return (getattr(transformers, s.config_class), getattr(transformers, s.model_class),
            getattr(transformers, s.processor_class), image_processor)


def _deepseek(tok, full: bool, v: int, positions: int):
    Config, Model, Processor, ImageProcessor = _classes("deepseek-ocr-2")
    if full:  # the published architecture (SAM-B + Qwen2-0.5B encoder + DeepSeek-3B-MoE decoder)
        vision, text = {}, dict(vocab_size=v, hidden_size=1280, intermediate_size=6848, num_hidden_layers=12,
                                num_attention_heads=10, num_key_value_heads=10, n_routed_experts=64, num_experts_per_tok=6,
                                moe_intermediate_size=896, n_shared_experts=2, mlp_layer_types=["dense"] + ["sparse"] * 11,
                                max_position_embeddings=positions)
        vision = dict(encoder_config=dict(vocab_size=v, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                          num_attention_heads=14, num_key_value_heads=2))
    else:
        vision = dict(sam_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, output_channels=16,
                                      global_attn_indexes=[1], downsample_channels=[24, 32], window_size=8),
                      encoder_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                          num_key_value_heads=1, vocab_size=len(tok)))
        text = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                    n_shared_experts=1, mlp_layer_types=["dense", "sparse"], max_position_embeddings=positions)
    text.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = Config(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(spec("deepseek-ocr-2").image_token))
    return Model(cfg), Processor(image_processor=ImageProcessor(), tokenizer=tok)


def _got(tok, full: bool, v: int, positions: int):
    Config, Model, Processor, ImageProcessor = _classes("got-ocr2")
    if full:  # SAM-B vision tower + Qwen2-0.5B decoder
        vision, text = {}, dict(vocab_size=v, hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                                num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=positions)
    else:
        vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, output_channels=16,
                      global_attn_indexes=[1], window_size=8, mlp_dim=64)
        text = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, max_position_embeddings=positions)
    text.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = Config(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(spec("got-ocr2").image_token))
    proc = Processor(image_processor=ImageProcessor(size={"height": 1024, "width": 1024}), tokenizer=tok)
    return Model(cfg), proc


def build_random_model(kind: str, full: bool = False, seed: int = 0, vocab_size: int = 320,
                       lm_vocab: int | None = None, max_positions: int | None = None, device: str = "cpu",
                       dtype=None):
    """(model, processor) built in memory, directly on `device` in `dtype` (default: bf16 when
    full, fp32 when tiny): a full-size model is never materialised in fp32 on the CPU first.
    `full`: the published architecture; otherwise a tiny one. `lm_vocab`: rows of the language
    model's embedding and head (default: the published vocabulary when full, the tokenizer's size
    when tiny); a tiny model with the published vocabulary has the real per-step logits size.
    `max_positions`: the language model's context (default: the published one)."""
    import torch

    torch.manual_seed(seed)
    tok = train_tokenizer(kind, vocab_size)
    v = max(len(tok), lm_vocab or (FULL_VOCAB[kind] if full else 0))
    positions = max_positions or spec(kind).context_length
    dtype = dtype or (torch.bfloat16 if full else torch.float32)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in this dtype...
    try:
        with torch.device(device):  # ...and on this device
            model, processor = (_deepseek if kind == "deepseek-ocr-2" else _got)(tok, full, v, positions)
    finally:
        torch.set_default_dtype(default)
    return model.eval(), processor


def save_random_model(kind: str, path: str, full: bool = False, seed: int = 0, vocab_size: int = 320,
                      lm_vocab: int | None = None, max_positions: int | None = None) -> str:
    """A random model (build_random_model) saved like a downloaded checkpoint; returns `path`."""
    model, processor = build_random_model(kind, full, seed, vocab_size, lm_vocab, max_positions)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
