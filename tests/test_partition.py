"""`--partition K/N`: drivers that share one listing by a stable hash of each book's URI, claims that
keep overlapping partitions exactly-once, and `--steal`, which takes other shares' free books only
once a driver's own share is done."""
import json
import os

import pytest

from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.partition import parse_partition, share_of
from tests.helpers import text_page_image
from tests.test_durability import assert_exactly_once, driver, make_source, table


@pytest.fixture(scope="module")
def small_pages():
    return [text_page_image(f"Page {i}: the quick brown fox jumps over the lazy dog.", dpi=60) for i in range(3)]


def run_drivers(src, out, tmp_path, partitions: dict[str, list[str]]):
    procs = {run_id: driver(src, out, run_id, *args, "--summary-json", str(tmp_path / f"{run_id}.json"))
             for run_id, args in partitions.items()}
    for run_id, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, (run_id, err)
    return {run_id: json.load(open(tmp_path / f"{run_id}.json")) for run_id in procs}


def part_seq(out, doc_ids):
    """doc_id -> sequence number of the part that committed it, within its run."""
    folder = os.path.join(out, "documents")
    seq = {}
    for name in os.listdir(folder):
        import pyarrow.parquet as pq

        for d in pq.read_table(os.path.join(folder, name), columns=["doc_id"]).column("doc_id").to_pylist():
            seq[d] = int(name.removesuffix(".parquet").rsplit("-", 1)[1])
    return [seq[d] for d in doc_ids]


def test_a_books_share_is_a_stable_hash_of_its_uri():
    uris = [f"s3://b/scans/book{i:04d}.pdf" for i in range(3000)]
    shares = [share_of(u, 3) for u in uris]
    assert shares == [share_of(u, 3) for u in uris]  # stable (no salted hash())
    assert [share_of(f"s3://b/scans/book{i:04d}.pdf", 3) for i in range(3)] == [2, 2, 0]  # fixed values: the first 8 bytes of sha256, mod N
    assert all(900 < shares.count(k) < 1100 for k in range(3))  # even in expectation
    more = uris + [f"s3://b/new/{i}.pdf" for i in range(500)]  # books added: nobody changes share
    assert [share_of(u, 3) for u in more[:3000]] == shares
    assert parse_partition("2/3").holds(uris[shares.index(2)]) and not parse_partition("0/3").holds(uris[shares.index(2)])
    for bad in ("3/3", "1/0", "1-3", "-1/3"):
        with pytest.raises(ValueError):
            JobConfig(source="a", output="b", partition=bad)
    with pytest.raises(ValueError, match="needs --partition"):
        JobConfig(source="a", output="b", steal=True)


@pytest.mark.slow
def test_three_drivers_each_take_only_their_share_and_every_page_is_processed_once(tmp_path, small_pages):
    src = make_source(tmp_path / "src", small_pages, books=9)
    out = str(tmp_path / "out")
    summaries = run_drivers(src, out, tmp_path, {f"part{k}": ["--partition", f"{k}/3"] for k in range(3)})
    docs, _ = assert_exactly_once(out, books=9)
    for _, d in docs.iterrows():  # no driver committed a book outside its share
        assert d.run_id == f"part{share_of(d.source_uri, 3)}", (d.source_uri, d.run_id)
    for k in range(3):
        s = summaries[f"part{k}"]
        mine = sum(share_of(u, 3) == k for u in docs.source_uri)
        assert (s["documents"], s["documents_other_shares"], s["documents_claimed_elsewhere"]) == (mine, 9 - mine, 0)


@pytest.mark.slow
def test_overlapping_or_misconfigured_partitions_still_process_every_page_exactly_once(tmp_path, small_pages):
    src = make_source(tmp_path / "src", small_pages, books=8)
    out = str(tmp_path / "out")
    # two drivers given the same K, and one given the wrong N: the claims sort them out
    run_drivers(src, out, tmp_path, {"twinA": ["--partition", "0/2"], "twinB": ["--partition", "0/2"],
                                     "other": ["--partition", "1/2"], "wrongN": ["--partition", "1/3"]})
    docs, _ = assert_exactly_once(out, books=8)
    allowed = {"twinA": (0, 2), "twinB": (0, 2), "other": (1, 2), "wrongN": (1, 3)}
    for _, d in docs.iterrows():
        k, n = allowed[d.run_id]
        assert share_of(d.source_uri, n) == k, (d.source_uri, d.run_id)


@pytest.mark.slow
def test_with_steal_a_missing_drivers_share_is_done_by_the_others_after_their_own(tmp_path, small_pages):
    src = make_source(tmp_path / "src", small_pages, books=9)
    out = str(tmp_path / "out")
    # the driver of share 2/3 never comes: the other two finish its share once theirs are done
    summaries = run_drivers(src, out, tmp_path, {f"part{k}": ["--partition", f"{k}/3", "--steal"] for k in range(2)})
    docs, _ = assert_exactly_once(out, books=9)
    outside = [share_of(d.source_uri, 3) != int(d.run_id[-1]) for _, d in docs.iterrows()]
    # every book taken outside a driver's share is counted as stolen (the missing share's at least;
    # a driver that started late may lose unclaimed books of its own share to one that is done)
    assert sum(s["documents_stolen"] for s in summaries.values()) == sum(outside) >= sum(share_of(u, 3) == 2 for u in docs.source_uri)
    for k in range(2):
        mine = docs[docs.run_id == f"part{k}"]
        own = mine[[share_of(u, 3) == k for u in mine.source_uri]]
        stolen = mine[[share_of(u, 3) != k for u in mine.source_uri]]
        if len(stolen) and len(own):  # a driver steals only once its own share is done: committed after it
            assert min(part_seq(out, stolen.doc_id)) > max(part_seq(out, own.doc_id))
    assert set(docs.run_id) <= {"part0", "part1"}


def test_a_bad_partition_exits_2_before_any_work_and_dry_run_names_the_shares(tmp_path, small_pages, capsys):
    from folioscan.pipeline.cli import main

    src = make_source(tmp_path / "src", small_pages, books=6)
    out = tmp_path / "out"
    for bad in (["--partition", "3/3"], ["--partition", "two/3"], ["--steal"]):
        assert main(["run", str(src), str(out), "--executor", "local", "--quiet", *bad]) == 2
        assert not out.exists()
    capsys.readouterr()
    assert main(["run", str(src), str(out), "--executor", "local", "--partition", "1/3", "--steal", "--dry-run"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(("process", "skip"))]
    mine = [l for l in lines if l.startswith("process")]
    assert len(lines) == 6 and len(mine) == sum(share_of(str(src / f"book{i}.pdf"), 3) == 1 for i in range(6))
    assert all("not this driver's 1 (--steal takes it" in l for l in lines if l.startswith("skip"))
    assert not out.exists()
