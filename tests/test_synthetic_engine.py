"""The synthetic engine (tests and benchmarks only): a typical page's result, made up, at once or
after a set delay; registered, configured and preflighted like the real engines."""
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.workers.engines.registry import SyntheticOptions, build_engine, engine_names, preflight
from tests.helpers import scanned_pdf


def _page(seed: int, shape=(1100, 850)) -> np.ndarray:
    img = np.full(shape, 255, np.uint8)
    rng = np.random.default_rng(seed)
    img[rng.integers(0, shape[0] - 40, 30)[:, None] + np.arange(20), 100:300] = 0
    return img


def test_a_typical_page_with_word_boxes_inside_the_image_and_confidences():
    engine = build_engine(SyntheticOptions())
    img = _page(1)
    [r] = engine.predict_batch([img])
    words = [w for line in r.lines for w in line.words]
    assert r.error is None and len(words) == 300 == len(r.text.split())
    assert r.text == "\n".join(line.text for line in r.lines)
    h, w = img.shape
    for line in r.lines:
        assert line.text == " ".join(wd.text for wd in line.words)
        x0, y0, x1, y1 = line.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for wd in line.words:
            assert x0 <= wd.box[0] < wd.box[2] <= x1 and wd.box[1] == y0 and wd.box[3] == y1
            assert 0.85 <= wd.confidence <= 0.99
    tops = [line.box[1] for line in r.lines]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)  # lines one under the other, down the page
    assert 0.85 <= r.confidence_min <= r.confidence <= 0.99


def test_deterministic_per_page_and_seed_and_sized_by_words():
    a, b = _page(1), _page(2)
    engine = build_engine(SyntheticOptions(words=120))
    first = [r.text for r in engine.predict_batch([a, b])]
    assert first == [r.text for r in build_engine(SyntheticOptions(words=120)).predict_batch([a, b])]
    assert first[0] != first[1]
    assert build_engine(SyntheticOptions(words=120, seed=1)).predict_batch([a])[0].text != first[0]
    assert len(first[0].split()) == 120


def test_delay_is_per_call():
    engine = build_engine(SyntheticOptions(delay_s=0.2))
    t0 = time.perf_counter()
    assert len(engine.predict_batch([_page(1)] * 4)) == 4
    assert 0.2 <= time.perf_counter() - t0 < 1.0


def test_configured_by_kind_preflighted_without_files_and_on_the_command_line(tmp_path, page_images):
    cfg = JobConfig(source="s", output="o", engine={"kind": "synthetic", "delay_s": 0.01, "words": 50})
    assert isinstance(cfg.engine, SyntheticOptions) and cfg.engine.words == 50
    preflight(cfg.engine)  # no model, no language data: nothing to check, nothing raised
    assert "synthetic" in engine_names()
    with pytest.raises(ValueError, match="delay_s"):
        JobConfig(source="s", output="o", engine={"kind": "synthetic", "delay_s": -1})
    with pytest.raises(ValueError, match="model"):  # unknown fields refused, as every engine's options do
        JobConfig(source="s", output="o", engine={"kind": "synthetic", "model": "x"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf(page_images[:2]))
    assert main(["run", str(src), str(tmp_path / "out"), "--executor", "local", "--engine", "synthetic", "--quiet"]) == 0
    pages = pq.read_table(tmp_path / "out" / "pages").to_pylist()
    assert [p["engine"] for p in pages] == ["synthetic"] * 2 and all(len(p["text"].split()) == 300 for p in pages)
    assert all(p["box_level"] == "words" for p in pages)


def test_a_run_writes_realistic_rows(tmp_path, page_images):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"book_{i}.pdf").write_bytes(scanned_pdf(page_images[i:i + 1]))
    summary = run_job(JobConfig(source=str(src), output=str(tmp_path / "out"), executor="local", progress=False,
                                engine=SyntheticOptions()))
    assert summary.status == "finished" and summary.documents == 3 and summary.pages == 3
    docs = pq.read_table(tmp_path / "out" / "documents").to_pylist()
    assert all(d["status"] == "ok" and d["language"] == "en" and len(d["text"].split()) == 300 for d in docs)
    lines = pq.read_table(tmp_path / "out" / "pages", columns=["lines"]).column("lines").to_pylist()
    assert all(w["box_source"] for page in lines for line in page for w in line["words"])  # mapped to the loaded image

