"""Review of the driver relief (issue 18 item 2): what a Ray driver still holds of a book it has handed
back. An actor's answer arrived as Arrow record batches that were views into the object store's
shared memory (Ray read them without a copy; rows now travel as IPC bytes, copied): while the driver
kept such a batch in a book's spill buffer, the whole answer (every book's rows of that call) stayed
pinned in the object store; and the book's TextFacts handles keep the actors' second answers there.
A book handed back waits for the rest of its shard (up to `shard_docs` books, and `open_shards`
shards): it must hold neither."""
from __future__ import annotations

import pytest

from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.executors import make_executor
from folioscan.pipeline.pagerows import PAGE_ROW, BookPages
from folioscan.pipeline.sources import iter_documents
from folioscan.pipeline.spill import Spill
from folioscan.pipeline.stages import Stages
from folioscan.pipeline.storage import store_for
from folioscan.workers.engines.registry import SyntheticOptions
from tests.helpers import drive, scanned_pdf

pytestmark = pytest.mark.ray


def _shared_memory() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of Ray's object store (plasma's shared memory)."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "plasma" in line:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                out.append((lo, hi))
    return out


def _in_object_store(batch, ranges) -> bool:
    return any(lo <= buf.address < hi for col in batch.columns for buf in col.buffers() if buf is not None and buf.size
               for lo, hi in ranges)


@pytest.fixture
def handed_back(tmp_path, page_images, ray_local):
    """A 9-page book read by one actor (synthetic engine, 300 words a page: an answer of ~8 pages is
    well over Ray's inline limit, so it lives in the object store), its rows spilled to a real spill
    file as the driver's run does; the BookPages as handed back, before any shard commit."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf([page_images[i % len(page_images)] for i in range(9)]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    engine=SyntheticOptions())
    store = store_for(cfg.source)
    spill = Spill(str(tmp_path / "spill"))
    ex = make_executor(cfg, Stages(store, cfg.load_options(), cfg.prep, cfg.engine, 8))
    ex.book_results = lambda doc: BookPages(spill.file(PAGE_ROW.schema), cfg.run_id)
    try:
        [(_, book)] = drive(ex, iter_documents(store, cfg.source))
        yield book
    finally:
        ex.close()
        spill.close()


def test_a_book_handed_back_pins_no_actor_answer_in_the_object_store(handed_back):
    book = handed_back
    assert book.pages == 9 and book.columns is not None
    ranges = _shared_memory()
    assert ranges, "Ray's object store is not mapped into this process"
    held = [b for b in book.rows._buffer + book.rows._kept if not isinstance(b, dict)]
    assert not [b for b in held if _in_object_store(b, ranges)], (
        f"{len(held)} record batches of the book's rows are still views into the object store")


def test_a_book_handed_back_keeps_no_handle_to_its_text_facts(handed_back):
    import ray

    book = handed_back
    assert book.columns is not None  # its text is made: the TextFacts are of no further use
    handles = [t for t in book.texts if not isinstance(t, list) and isinstance(t[0], ray.ObjectRef)]
    assert not handles, f"{len(handles)} handles keep the actors' TextFacts answers in the object store"


def test_no_engine_call_gets_more_pages_than_the_batch_size(tmp_path, page_images, ray_local):
    """Loaders send a book's pages 4 to an object at 4 pages a call (Tesseract's default), a 5-page
    book as an object of 4 and one of 1. A call is filled from the queued objects until it has its
    batch size: a book's short last object followed by another book's full one made a call of 5, 6 or
    7 pages (up to batch size + pages an object - 1), more cleaned images held at once and more pages
    per engine call than `batch_size` ("pages per engine call") allows."""
    from tests.helpers import CallSizesRecorded

    src = tmp_path / "src"
    src.mkdir()
    for b in range(6):
        (src / f"book{b}.pdf").write_bytes(scanned_pdf([page_images[(b + i) % len(page_images)] for i in range(5)]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    engine=SyntheticOptions(delay_s=0.2))
    store = store_for(cfg.source)
    record = tmp_path / "calls"
    ex = make_executor(cfg, CallSizesRecorded(store, cfg.load_options(), cfg.prep, cfg.engine, 4, record=str(record)))
    try:
        done = drive(ex, iter_documents(store, cfg.source))
    finally:
        ex.close()
    assert sorted(book.pages for _, book in done) == [5] * 6
    sizes = [int(line) for line in record.read_text().split()]
    assert sum(sizes) == 30 and max(sizes) <= 4, f"pages per engine call: {sizes}"


class _TextRaises(BookPages):
    """A book whose text cannot be made: one more entry among its TextFacts that book text cannot read
    (what a bug in book text on some book would do, deterministically)."""

    def extend(self, part, texts) -> None:
        super().extend(part, texts)
        self.texts.append(["not a TextFacts"])


def test_a_book_whose_text_raises_is_given_up_at_once_and_not_read_again(tmp_path, page_images, ray_local):
    """`book_texts` took any exception for "the TextFacts were lost with a node": a book whose text
    raised was read from its first page again, twice, then given up as a transient error (which a
    rerun reads yet again). Only a loss is read again now; a failing book text makes the book a
    permanent error at once, and the other books are untouched."""
    from folioscan.failures import PERMANENT
    from folioscan.pipeline.spill import SpillFile
    from tests.helpers import CallSizesRecorded

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b-text-raises", "c"):
        (src / f"{name}.pdf").write_bytes(scanned_pdf([page_images[i % len(page_images)] for i in range(3)]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    engine=SyntheticOptions())
    store = store_for(cfg.source)
    record = tmp_path / "calls"
    ex = make_executor(cfg, CallSizesRecorded(store, cfg.load_options(), cfg.prep, cfg.engine, 4, record=str(record)))
    ex.book_results = lambda doc: (_TextRaises if "text-raises" in doc.uri else BookPages)(SpillFile(None, PAGE_ROW.schema), "t")
    try:
        done = {doc.uri.rsplit("/", 1)[-1]: book for doc, book in drive(ex, iter_documents(store, cfg.source))}
        retries = ex.stats()["book_retries"]
    finally:
        ex.close()
    assert sorted(done) == ["a.pdf", "b-text-raises.pdf", "c.pdf"]
    assert done["a.pdf"].pages == done["c.pdf"].pages == 3 and done["a.pdf"].columns is not None
    [error] = done["b-text-raises.pdf"].facts
    assert error.status == "error" and error.error_kind == PERMANENT, error
    assert "book text: AttributeError" in error.error and "gave up after" not in error.error, error.error
    assert sum(int(n) for n in record.read_text().split()) == 9, "a book was read again"
    assert retries == 0


def test_book_text_tells_lost_text_facts_from_a_failing_book_text(ray_local):
    """The task's two failures: TextFacts it cannot get (here their owner, an actor, died before they
    existed, as a node's loss takes an actor's answers with it) are `lost`, and the book is read again;
    a book text that raises is not."""
    import time

    import ray

    from folioscan.pipeline.executors.ray_texts import TextFailed, book_texts

    @ray.remote(num_cpus=0)
    def never_done():
        time.sleep(600)

    @ray.remote(num_cpus=0)
    class Owner:
        def answer(self):
            return [never_done.remote()]  # a ref this actor owns, to an object not made yet

    owner = Owner.remote()
    [gone] = ray.get(owner.answer.remote())
    ray.kill(owner)
    with pytest.raises(ray.exceptions.RayActorError):  # ray.kill returns at once: dead once a call says so
        ray.get(owner.answer.remote(), timeout=60)
    lost, raised = ray.get(book_texts.remote([[(gone, 0)], [["not a TextFacts"]]]), timeout=120)
    assert isinstance(lost, TextFailed) and lost.lost and "were lost" in lost.reason, lost
    assert isinstance(raised, TextFailed) and not raised.lost and "AttributeError" in raised.reason, raised


def test_a_book_text_failing_before_it_fetches_anything_is_not_taken_for_lost(ray_local):
    """Only fetching the TextFacts (`ray.get`) can find them lost: an entry among a book's TextFacts
    that is neither a list nor an (object ref, index) handle fails in book text's own code, before any
    fetch. `book_texts` took it for lost (the book read again three times, then a transient error)."""
    import ray

    from folioscan.pipeline.executors.ray_texts import TextFailed, book_texts

    [raised] = ray.get(book_texts.remote([[42]]), timeout=120)
    assert isinstance(raised, TextFailed) and not raised.lost and "TypeError" in raised.reason, raised


class _NoTextRaises(_TextRaises):
    """No text of this book can be made by book text: not its pages', not its error's alone."""

    def append(self, r):
        facts = super().append(r)
        self.texts.append(["not a TextFacts"])
        return facts


def test_a_given_up_book_is_handed_back_even_when_no_book_text_of_it_can_be_made(tmp_path, page_images, ray_local):
    """A given-up book's text (its error row alone) was made by a `book_texts` task like any other; had
    that failed too (the same failing code, or workers dying past Ray's retries), the book was given up
    again and queued again, and the run never ended. A given-up book has no page: its text is made in
    the driver from its error alone, and it is handed back at once."""
    import time

    from folioscan.failures import PERMANENT
    from folioscan.pipeline.spill import SpillFile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b-text-raises"):
        (src / f"{name}.pdf").write_bytes(scanned_pdf([page_images[i % len(page_images)] for i in range(2)]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor="ray", ocr_workers=1, progress=False,
                    engine=SyntheticOptions())
    store = store_for(cfg.source)
    ex = make_executor(cfg, Stages(store, cfg.load_options(), cfg.prep, cfg.engine, 4))
    ex.book_results = lambda doc: (_NoTextRaises if "text-raises" in doc.uri else BookPages)(SpillFile(None, PAGE_ROW.schema), "t")
    done, deadline = [], time.monotonic() + 90
    try:
        for doc in iter_documents(store, cfg.source):
            ex.submit(doc)
        while ex.busy():
            assert time.monotonic() < deadline, "the given-up book was never handed back"
            done += ex.poll()
    finally:
        ex.close()
    got = {doc.uri.rsplit("/", 1)[-1]: book for doc, book in done}
    assert sorted(got) == ["a.pdf", "b-text-raises.pdf"] and got["a.pdf"].pages == 2
    [error] = got["b-text-raises.pdf"].facts
    assert error.error_kind == PERMANENT and "book text: AttributeError" in error.error, error
    assert got["b-text-raises.pdf"].columns is not None
