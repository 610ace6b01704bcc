"""Routing pages between two engines (docs/routing.md): every page read by the first engine, the
doubtful ones read again by a second engine on a second pool, both readings kept, the reverse guard
falling back to the first reading, every page exactly once. Real Ray (both pools on a local Ray,
the second on the CPU), real Tesseract, a tiny random-weights VLM and the truth engine."""
import json
import os
import random

import cv2
import pyarrow.parquet as pq
import pytest


from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig, RouteOptions
from folioscan.pipeline.executors import make_executor
from folioscan.pipeline.sources import iter_documents
from folioscan.pipeline.storage import store_for
from folioscan.records import OcrAttempt, OcrResult, PageResult, PageWork
from folioscan.schemas import PAGES
from folioscan.text.signals import repetition_score
from folioscan.workers.engines.registry import SyntheticOptions
from folioscan.workers.route import fallback_reason, route_reason, settle
from tests.helpers import (PARAGRAPHS, FirstEngineDiesAfterRouting, SecondEngineDiesOnce, SecondEngineDiesOnPage, cer, pages_of,
                           scanned_pdf, text_page_image)

TEXT = " ".join(PARAGRAPHS)
NEW_COLUMNS = {"routed", "route_reason", "readings", "unchosen_text"}


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """mixed.pdf: two clean pages around an out-of-focus one (Tesseract's confidence under 0.5 there);
    clean.pdf: two clean pages; truth/ the ground truth of every page, as `folioscan eval` takes it."""
    root = tmp_path_factory.mktemp("route")
    blurred = cv2.GaussianBlur(text_page_image(TEXT, dpi=150, fontsize=11), (0, 0), 3.2)
    src = root / "src"
    src.mkdir()
    (src / "mixed.pdf").write_bytes(scanned_pdf([text_page_image(PARAGRAPHS[0]), blurred, text_page_image(PARAGRAPHS[1])]))
    (src / "clean.pdf").write_bytes(scanned_pdf([text_page_image(PARAGRAPHS[2]), text_page_image(PARAGRAPHS[0])]))
    for book, texts in (("mixed", [PARAGRAPHS[0], TEXT, PARAGRAPHS[1]]), ("clean", [PARAGRAPHS[2], PARAGRAPHS[0]])):
        (root / "truth" / book).mkdir(parents=True)
        for k, t in enumerate(texts):
            (root / "truth" / book / f"{k + 1}.txt").write_text(t)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from folioscan.workers.engines.vlm.random_init import save_random_model

    return save_random_model("deepseek-ocr-2", str(tmp_path_factory.mktemp("tiny")))


TINY = ["--then-device", "cpu", "--then-budget", "base", "--then-max-new-tokens", "8", "--then-max-attempts", "1",
        "--then-vlm-batch-size", "2", "--then-batch-size", "2"]


def run(books, out, *flags):
    summary = out.parent / (out.name + ".json")
    code = main(["run", str(books / "src"), str(out), "--quiet", "--summary-json", str(summary), *flags])
    rows = pq.read_table(out / "pages").to_pylist() if (out / "pages").exists() else []
    return code, json.loads(summary.read_text()) if summary.exists() else {}, rows


def exactly_once(rows):
    keys = sorted((r["source_uri"].rsplit("/", 1)[-1], r["page_index"]) for r in rows)
    assert keys == [("clean.pdf", 0), ("clean.pdf", 1), ("mixed.pdf", 0), ("mixed.pdf", 1), ("mixed.pdf", 2)]
    assert all(r["status"] == "ok" for r in rows)


def by_page(rows):
    return {(r["source_uri"].rsplit("/", 1)[-1][:-4], r["page_index"]): r for r in rows}


@pytest.mark.ray
def test_the_doubtful_page_is_read_by_the_second_engine_on_its_own_pool(books, tmp_path, ray_local, capsys):
    """Ray, default threshold: only the out-of-focus page goes to the second engine (the truth engine
    playing a perfect one) and keeps its reading; the first reading is kept beside it."""
    code, s, rows = run(books, tmp_path / "out", "--executor", "ray", "--then", "truth", "--then-truth", str(books / "truth"))
    assert code == 0
    exactly_once(rows)
    pages = by_page(rows)
    routed = pages[("mixed", 1)]
    assert routed["routed"] and routed["route_reason"].startswith("confidence ")
    assert routed["engine"] == "truth" and routed["text"] == TEXT and routed["confidence"] == 1.0
    first, second = routed["readings"]
    assert (first["engine"], first["chosen"], second["engine"], second["chosen"]) == ("tesseract", False, "truth", True)
    assert first["confidence"] < 0.5 and second["reason"] is None and second["chars"] == len(TEXT)
    assert cer(routed["unchosen_text"], TEXT) > 0.05 and first["chars"] == len(routed["unchosen_text"].strip())
    for key, row in pages.items():
        if key != ("mixed", 1):  # read well by Tesseract: never sent on, nothing of routing recorded
            assert (row["routed"], row["route_reason"], row["readings"], row["unchosen_text"]) == (False, None, None, None)
            assert row["engine"] == "tesseract" and row["confidence"] >= 0.8
    assert (s["pages_routed"], s["pages_routed_kept"], s["pages_routed_fallback"]) == (1, 1, 0)
    assert s["ocr_actors"] == 1 and s["engine_loads"] == 1
    pool = s["then_pool"]
    assert (pool["ocr_actors"], pool["engine_loads"], pool["pages_routed"], pool["actors_lost"]) == (1, 1, 1, 0)
    assert s["stages"]["ocr"]["pages"] == 5
    capsys.readouterr()
    assert main(["show", str(tmp_path / "out")]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "routed" in line]
    assert len(shown) == 1 and shown[0].startswith("  page 2: ok    1.000") and "truth's reading kept" in shown[0]
    html = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "out"), "--out", str(html)]) == 0
    page = html.read_text()
    assert "<h2>Routing</h2>" in page and "1 of 5 pages (20.0%) routed to the second engine (truth)" in page
    assert "20.0%</b><span>pages routed (1; 1 kept the second reading)" in page and "routed: confidence" in page


@pytest.mark.ray
def test_tesseract_then_the_tiny_vlm_on_ray_falls_back_by_the_reverse_guard(books, tiny_model, tmp_path, ray_local):
    """Everything routed (--route-below 1.0) to a random-weights VLM on a second pool (CPU): its
    readings loop or fill their token cap, so every page falls back to Tesseract's, with the reason,
    the VLM's reading kept beside it."""
    code, s, rows = run(books, tmp_path / "out", "--executor", "ray", "--then", "deepseek-ocr-2", "--then-model", tiny_model,
                        *TINY, "--route-below", "1.0")
    assert code == 0
    exactly_once(rows)
    for row in rows:
        first, second = row["readings"]
        assert row["routed"] and row["route_reason"].startswith("confidence ")
        assert row["engine"] == "tesseract" and first["chosen"] and not second["chosen"]
        assert second["engine"] == "deepseek-ocr-2" and second["reason"] is not None
        assert second["reason"] in ("token-cap", "repetition") or second["reason"].startswith(("short:", "repetition "))
        assert row["unchosen_text"] is not None and second["chars"] == len(row["unchosen_text"].strip())
        assert not any(a["budget"] for a in row["attempts"])  # Tesseract's reads (if any recorded), none of the VLM's
    clean = by_page(rows)[("clean", 0)]
    assert cer(clean["text"], PARAGRAPHS[2]) < 0.05
    assert (s["pages_routed"], s["pages_routed_kept"], s["pages_routed_fallback"]) == (5, 0, 5)
    assert s["then_pool"]["engine_loads"] == 1 and s["engine_loads"] == 1


def test_the_local_executor_routes_in_process(books, tiny_model, tmp_path):
    """Two OcrStages in the driver: the out-of-focus page goes to the tiny VLM and falls back; the
    clean pages never reach it."""
    code, s, rows = run(books, tmp_path / "out", "--executor", "local", "--then", "deepseek-ocr-2", "--then-model", tiny_model,
                        *TINY)
    assert code == 0
    exactly_once(rows)
    assert [k for k, r in sorted(by_page(rows).items()) if r["routed"]] == [("mixed", 1)]
    row = by_page(rows)[("mixed", 1)]
    assert row["engine"] == "tesseract" and [x["engine"] for x in row["readings"]] == ["tesseract", "deepseek-ocr-2"]
    assert (s["pages_routed"], s["pages_routed_fallback"]) == (1, 1)
    assert s["then_pool"]["engine_loads"] == 1 and s["engine_loads"] == 1


def test_the_local_executor_holds_no_more_routed_pages_than_a_second_engine_call(tmp_path):
    """Every page routed, the first engine reading 4 pages a call and the second 2: the routed pages
    (with their images) waiting in the driver stay under one second-engine call, however long the
    book, and every page comes back once."""
    from folioscan.pipeline.stages import Stages

    src = tmp_path / "src"
    src.mkdir()
    (src / "long.pdf").write_bytes(scanned_pdf([text_page_image(PARAGRAPHS[k % 3]) for k in range(12)]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor="local", engine=SyntheticOptions(),
                    route=RouteOptions(then=SyntheticOptions(seed=1), below=1.0, batch_size=2))
    store = store_for(cfg.source)
    stages = Stages(store, cfg.load_options(), cfg.prep, cfg.engine, 4, route=cfg.route, then_batch_size=2)
    ex = make_executor(cfg, stages)
    [doc] = list(iter_documents(store, cfg.source))
    ex.submit(doc)
    done, waiting = [], []
    while ex.busy():
        done += ex.poll()
        waiting.append(len(ex.routed))
    [(_, book)] = done
    results = pages_of(doc, book)
    assert sorted(r["page_index"] for r in results) == list(range(12))
    assert all(r["readings"] for r in results)
    assert max(waiting) < 2, waiting


def test_without_a_second_engine_the_rows_are_those_of_a_run_that_routes_nothing(books, tmp_path):
    """The CPU-only path: no --then gives the same rows as a run with a second engine that nothing is
    routed to (threshold 0, no flag fires on these pages), the routing columns at their defaults,
    and no routing figures."""
    code, plain_s, plain = run(books, tmp_path / "plain", "--executor", "local")
    assert code == 0
    code, routed_s, routed = run(books, tmp_path / "routed", "--executor", "local", "--then", "synthetic", "--route-below", "0")
    assert code == 0
    varying = {"completed_at", "run_id", "load_ms", "prep_ms", "ocr_ms"}
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k not in varying} for r in rows),  # noqa: E731
                                key=lambda r: (r["source_uri"], r["page_index"]))
    assert strip(plain) == strip(routed)
    assert all((r["routed"], r["route_reason"], r["readings"], r["unchosen_text"]) == (False, None, None, None) for r in plain)
    assert plain_s["then_pool"] == {} and plain_s["pages_routed"] == 0 and "then_pool" in routed_s
    assert set(plain[0]) == set(PAGES.names) and NEW_COLUMNS <= set(PAGES.names)


@pytest.mark.ray
def test_a_lost_second_engine_actor_restarts_its_books_and_every_page_lands_once(books, tmp_path, ray_local):
    """The second pool's actor dies (its process exits) on its first call: it is replaced, and the
    routed pages of its calls are read again by the replacement (their objects are the first pool's):
    no book is read again, each book's pages are final once, and progress hears of each page once."""
    cfg = JobConfig(source=str(books / "src"), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    route=RouteOptions(then=SyntheticOptions(), below=1.0, workers=1, batch_size=2))
    store = store_for(cfg.source)
    stages = SecondEngineDiesOnce(store, cfg.load_options(), cfg.prep, cfg.engine, route=cfg.route, then_batch_size=2,
                                  marker=str(tmp_path / "died"))
    done, heard, stats = drain(make_executor(cfg, stages), iter_documents(store, cfg.source))
    assert os.path.exists(tmp_path / "died")
    assert sorted(len(results) for _, results in done) == [2, 3]
    for doc, results in done:
        assert sorted(r["page_index"] for r in results) == list(range(len(results)))
        assert sorted(heard[doc.doc_id]) == list(range(len(results)))  # each final page told once
        assert all(r["status"] == "ok" and r["engine"] == "synthetic" and len(r["readings"]) == 2 for r in results)
    pool = stats["then_pool"]
    # the lost actor died before its first call came back: it never reported its engine load
    assert (pool["actors_lost"], pool["actors_replaced"], pool["engine_loads"]) == (1, 1, 1)
    assert stats["book_retries"] == 0 and stats["actors_lost"] == 0
    assert pool["pages_routed"] == 5  # each page sent to the second pool once; the lost calls' pages resent, not re-routed


@pytest.mark.ray
def test_a_page_that_kills_the_second_engine_falls_back_to_its_first_reading(books, tmp_path, ray_local):
    """The second engine's worker dies on every call holding one page: the pages of the lost call are
    read again one at a time, and the page that kills its worker alone keeps Tesseract's reading, the
    reason recorded; its book's other pages keep the second reading and no book is read again."""
    cfg = JobConfig(source=str(books / "src"), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    route=RouteOptions(then=SyntheticOptions(), below=1.0, workers=1, batch_size=2))
    store = store_for(cfg.source)
    stages = SecondEngineDiesOnPage(store, cfg.load_options(), cfg.prep, cfg.engine, route=cfg.route, then_batch_size=2,
                                    book="mixed.pdf", page=1)
    done, heard, stats = drain(make_executor(cfg, stages), iter_documents(store, cfg.source))
    pages = {(doc.uri.rsplit("/", 1)[-1], r["page_index"]): r for doc, results in done for r in results}
    assert sorted(pages) == [("clean.pdf", 0), ("clean.pdf", 1), ("mixed.pdf", 0), ("mixed.pdf", 1), ("mixed.pdf", 2)]
    assert {doc.doc_id: sorted(heard[doc.doc_id]) for doc, _ in done} == {doc.doc_id: list(range(len(rs))) for doc, rs in done}
    killer = pages.pop(("mixed.pdf", 1))
    assert killer["status"] == "ok" and killer["engine"] == "tesseract" and killer["text"].strip()
    assert [(x["engine"], x["chosen"]) for x in killer["readings"]] == [("tesseract", True), ("synthetic", False)]
    assert killer["readings"][1]["reason"].startswith("error: the second-engine worker died reading this page alone")
    assert all(r["status"] == "ok" and r["engine"] == "synthetic" and r["readings"][1]["chosen"] for r in pages.values())
    assert stats["book_retries"] == 0 and stats["then_pool"]["actors_lost"] == 2


@pytest.mark.ray
def test_a_book_restarted_while_its_routed_page_is_with_the_second_pool_lands_once(books, tmp_path, ray_local):
    """The first pool's actor routes a page, then dies on its next call while the second pool is still
    reading that page (the routed page's object was the dead actor's): the book is read again from
    its first page, the second pool's answer for the failed attempt is dropped, and every page of
    both books is final once, with both readings; progress hears of each page once per attempt."""
    cfg = JobConfig(source=str(books / "src"), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    engine=SyntheticOptions(), route=RouteOptions(then=SyntheticOptions(seed=1, delay_s=2.0), below=1.0,
                                                                  workers=1, batch_size=1))
    store = store_for(cfg.source)
    stages = FirstEngineDiesAfterRouting(store, cfg.load_options(), cfg.prep, cfg.engine, 1, route=cfg.route,
                                         then_batch_size=1, marker=str(tmp_path / "died"))
    done, heard, stats = drain(make_executor(cfg, stages), iter_documents(store, cfg.source))
    assert os.path.exists(tmp_path / "died")
    assert sorted(len(results) for _, results in done) == [2, 3]
    for doc, results in done:
        assert sorted(r["page_index"] for r in results) == list(range(len(results)))
        assert sorted(heard[doc.doc_id]) == list(range(len(results)))
        assert all(r["status"] == "ok" and len(r["readings"]) == 2 and r["readings"][1]["chosen"] for r in results)
    assert (stats["actors_lost"], stats["actors_replaced"], stats["then_pool"]["actors_lost"]) == (1, 1, 0)
    assert stats["book_retries"] >= 1
    assert stats["then_pool"]["pages_routed"] > 5  # the failed attempt's routed page had reached the second pool


def drain(ex, docs):
    """Run `docs` through executor `ex` to the end: the books handed back, the page indexes progress heard
    of per book (a restarted book's forgotten), and the executor's stats."""
    heard: dict[str, list] = {}
    ex.on_pages = lambda doc_id, facts: heard.setdefault(doc_id, []).extend((f.page_index for f in facts))
    ex.on_restart = lambda doc_id: heard.pop(doc_id, None)
    try:
        for doc in docs:
            ex.submit(doc)
        done = []
        while ex.busy():
            done += ex.poll()
        return [(doc, pages_of(doc, book)) for doc, book in done], heard, ex.stats()
    finally:
        ex.close()


def _result(text, confidence=0.9, est=0, status="ok", attempt=None, engine="tesseract"):
    import numpy as np

    work = PageWork("d", "u.pdf", 0, 1, image=np.zeros((10, 10), np.uint8))
    work.prep.est_chars = est
    ocr = OcrResult(text, [], confidence, attempts=[attempt] if attempt else [])
    return PageResult(work, status, ocr if status == "ok" else None, engine, "1", error=None if status == "ok" else "boom")


def test_what_routes_a_page_and_what_makes_the_second_reading_fall_back():
    route = RouteOptions(then=SyntheticOptions())
    prose = " ".join(PARAGRAPHS)
    assert route_reason(_result(prose, 0.95), route) is None
    assert route_reason(_result(prose, 0.42), route) == "confidence 0.42 < 0.8"
    assert route_reason(_result("", 0.95), route) == "empty"
    assert route_reason(_result("the same words over again " * 20, 0.95), route).startswith("repetition ")
    # a short page of rhetoric repeats its n-grams (0.71 on the first 100 characters here) without looping
    assert repetition_score(prose[:100]) > route.repetition_above
    assert route_reason(_result(prose[:100], 0.95), route) is None
    assert fallback_reason(_result(prose[:100], est=100), route) is None
    rng = random.Random(0)
    gibberish = " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(5)) for _ in range(30))
    assert route_reason(_result(gibberish + " " + prose[:40], 0.95), route).startswith("lexicon ")
    assert route_reason(_result("", status="error"), route) == "error"
    assert route_reason(_result(prose, 0.42), RouteOptions()) is None  # no second engine: nothing routes
    assert route_reason(_result("", 0.95), route.model_copy(update={"empty": False})) is None

    assert fallback_reason(_result(prose, est=len(prose)), route) is None
    assert fallback_reason(_result(prose[:40], est=len(prose)), route) == f"short: 40 chars of ~{len(prose)} estimated"
    assert fallback_reason(_result(prose, attempt=OcrAttempt("base", hit_token_cap=True)), route) == "token-cap"
    assert fallback_reason(_result(prose, attempt=OcrAttempt("base", repetition=True)), route) == "repetition"
    assert fallback_reason(_result("", status="error"), route) == "error: boom"

    first, second = _result(prose, 0.3), _result(prose.upper(), 0.7, est=len(prose), engine="vlm")
    first.route_reason = "confidence 0.3 < 0.8"
    kept = settle(first, second, route)
    assert kept is second and kept.unchosen_text == prose and kept.route_reason == first.route_reason
    assert [(x.engine, x.chosen, x.reason) for x in kept.readings] == [("tesseract", False, None), ("vlm", True, None)]
    assert kept.work.image is None


def test_the_guard_never_falls_back_to_a_first_reading_that_is_worse_by_its_own_measure():
    """A page routed because its first reading is empty or failed keeps a second reading that the
    guard finds short, capped or looping (falling back would leave the row with no text at all), and
    `short` does not fall back to a first reading with even fewer characters; the guard's finding is
    recorded on the second reading all the same. A first reading with more text still wins."""
    route = RouteOptions(then=SyntheticOptions())
    prose = " ".join(PARAGRAPHS)
    est = 5 * len(prose)  # the second reading has under a quarter of the estimate: `short`
    cases = [(_result("", 0.0), "empty"),  # routed `empty`
             (_result("", status="error"), "error"),  # routed `error`
             (_result(prose[:60], 0.2), "confidence 0.2 < 0.8")]  # fewer characters than the second reading
    for first, why in cases:
        first.route_reason = why
        kept = settle(first, _result(prose, 0.7, est=est, engine="vlm"), route)
        assert kept.engine == "vlm" and kept.status == "ok" and kept.ocr.text == prose, why
        assert [(x.engine, x.chosen) for x in kept.readings] == [("tesseract", False), ("vlm", True)], why
        assert kept.readings[1].reason == f"short: {len(prose)} chars of ~{est} estimated", why
    capped = _result(prose, 0.7, attempt=OcrAttempt("base", hit_token_cap=True), engine="vlm")
    failed = _result("", status="error")
    failed.route_reason = "error"
    kept = settle(failed, capped, route)
    assert kept.engine == "vlm" and kept.status == "ok" and kept.readings[1].reason == "token-cap"
    # a first reading with more text than the short second one: the page falls back
    first = _result(prose, 0.5)
    first.route_reason = "confidence 0.5 < 0.8"
    back = settle(first, _result(PARAGRAPHS[1][:100], 0.7, est=len(prose), engine="vlm"), route)
    assert back is first and [x.chosen for x in back.readings] == [True, False]
    assert back.readings[1].reason == f"short: 100 chars of ~{len(prose)} estimated"


@pytest.mark.ray
def test_pools_that_cannot_both_fit_on_this_machines_ray_are_refused_before_any_work(books, tmp_path, ray_local, capsys):
    out = tmp_path / "out"
    assert main(["run", str(books / "src"), str(out), "--executor", "ray", "--ocr-workers", "2", "--then", "synthetic",
                 "--quiet"]) == 2
    assert "lower --ocr-workers or --then-workers" in capsys.readouterr().err and not out.exists()


def test_routing_options_without_a_second_engine_are_a_configuration_error(books, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(books / "src"), str(out), "--executor", "local", "--route-below", "0.5", "--quiet"]) == 2
    assert "--then" in capsys.readouterr().err
    assert main(["run", str(books / "src"), str(out), "--executor", "local", "--then-model", "x", "--quiet"]) == 2
    assert main(["run", str(books / "src"), str(out), "--executor", "local", "--then", "deepseek-ocr-2", "--quiet"]) == 2
    assert "--then deepseek-ocr-2" in capsys.readouterr().err
    assert not out.exists()
