"""Book text on Ray, off the driver: once every page of a book is back, its text and each page's
text columns (assemble.text_columns) are made by a `book_texts` task from the pages' TextFacts,
which the OCR actors left in the object store (their second answer, never read by the driver).

One task takes every book waiting then (up to `TEXT_BOOKS_PER_TASK`); a few run at once (one, plus
one per `TEXT_TASK_PER_ACTORS` OCR actors), since a task per book at once would start a worker
process each and cost the driver a task per book. Tasks go to the OCR actors' nodes, in turn."""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import ray

from folioscan.failures import describe

TEXT_TASK_PER_ACTORS = 8  # one more book_texts task at a time for each so many first-pool actors
TEXT_BOOKS_PER_TASK = 64  # most books one book_texts task makes the text of


@dataclass(frozen=True)
class TextFailed:
    """Why a book's text was not made. `lost`: its TextFacts could not be had (an actor's answer lost
    with its node, or the task's worker died past Ray's retries), so the book is read again; otherwise
    making the text raised, which reading the book again would only repeat: it is given up at once."""

    reason: str
    lost: bool


@ray.remote(num_cpus=0, max_retries=3)
def book_texts(books: list[list]) -> list:
    """Each book's text columns (assemble.text_columns) from its TextFacts: lists of them, or (object
    ref, index) handles to an actor's second answer; or TextFailed. Pure, so safe to run again."""
    from folioscan.pipeline.assemble import text_columns

    out = []
    for texts in books:
        try:
            refs = list({t[0]: None for t in texts if not isinstance(t, list)})
            try:  # only the fetch can find them lost
                got = dict(zip(refs, ray.get(refs))) if refs else {}
            except Exception as e:
                out.append(TextFailed(f"book text: its pages' TextFacts were lost: {describe(e)}"[:500], lost=True))
                continue
            out.append(text_columns(f for t in texts for f in (t if isinstance(t, list) else got[t[0]][t[1]])))
        except Exception as e:
            out.append(TextFailed(f"book text: {describe(e)}"[:500], lost=False))
    return out


def text_near(nodes: list[str], k: int) -> dict:
    """Task options that put a `book_texts` task on one of `nodes` (those of the OCR actors, taken in
    turn by `k`), where the cluster's CPUs are: a task that asks for no CPU would otherwise run beside
    the driver, on a head that has none to spare (deploy/rayjob.yaml gives it `num-cpus: 0`). Soft:
    a node gone by then leaves the choice to Ray."""
    if not nodes:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=nodes[k % len(nodes)], soft=True)}


class BookTexts:
    """The driver's side: books waiting for their text (`queue`, doc ids), tasks in flight (`tasks`:
    ref -> [(doc_id, attempt)]), the OCR actors' nodes (`nodes`: actor id -> node id), where tasks
    are sent, and books given up (`given_up`), handed back with the next `ready`. A book's `text`
    goes "queued" -> "making" (ray_actors._Book), or straight to "made" when given up."""

    def __init__(self, n_actors: int):
        self.tasks: dict = {}
        self.queue: deque[str] = deque()
        self.given_up: list[str] = []
        self.nodes: dict = {}
        self.limit = 1 + n_actors // TEXT_TASK_PER_ACTORS
        self._turn = itertools.count()

    def ready(self, books: dict, actors, done: list) -> None:
        """Hand the books given up back into `done`; queue each book whose every page is back, and
        start tasks (`books`: doc_id -> the executor's _Book; `actors`: those alive)."""
        for doc_id in self.given_up:
            if doc_id in books:
                self.hand_back(books, doc_id, done)
        self.given_up.clear()
        for doc_id, book in books.items():
            if book.text is None and book.loaded and book.settled == book.emitted and not book.routing:
                book.text = "queued"
                self.queue.append(doc_id)
        self.send(books, actors)

    @staticmethod
    def hand_back(books: dict, doc_id: str, done: list) -> None:
        """A book whose text is made, out of `books` into `done`: its spill written out, nothing of it
        left pinned in the object store (pagerows.BookPages.finish)."""
        book = books.pop(doc_id)
        book.results.finish()
        done.append((book.doc, book.results))

    def give_up(self, doc_id: str, book, error) -> None:
        """A book given up has no page but its error (a PageResult): its text is made here, not by a
        task whose failure would give it up once more; the next `ready` hands it back."""
        from folioscan.pipeline.assemble import text_columns
        from folioscan.pipeline.pagerows import TextFacts

        book.results.columns, book.loaded, book.text = text_columns([TextFacts.of(error)]), True, "made"
        self.given_up.append(doc_id)

    def send(self, books: dict, actors) -> None:
        """Start tasks for the queued books still waiting (`books`: doc_id -> the executor's _Book)
        while fewer than `limit` run; each to the node of one of `actors` (those alive), in turn."""
        while self.queue and len(self.tasks) < self.limit:
            batch = []
            while self.queue and len(batch) < TEXT_BOOKS_PER_TASK:
                doc_id = self.queue.popleft()
                book = books.get(doc_id)
                if book is not None and book.text == "queued":
                    book.text = "making"
                    batch.append((doc_id, book.attempt))
            if batch:
                nodes = sorted({n for i, n in self.nodes.items() if i in actors})
                task = book_texts.options(**text_near(nodes, next(self._turn)))
                self.tasks[task.remote([books[d].results.texts for d, _ in batch])] = batch

    def made(self, ref) -> list[tuple[str, int, object]]:
        """A finished task's books: (doc_id, attempt, their text columns or TextFailed). A task that
        raised (not a worker or object lost: Ray's own errors) failed as its code would again."""
        books = self.tasks.pop(ref)
        try:
            made = ray.get(ref)
        except Exception as e:
            lost = not isinstance(e, ray.exceptions.RayTaskError)
            made = [TextFailed(f"book text: {describe(e)}"[:500], lost)] * len(books)
        return [(doc_id, attempt, columns) for (doc_id, attempt), columns in zip(books, made)]
