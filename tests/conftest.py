import os
import socket

import pytest

# fake credentials for the local S3 endpoint, set before Ray starts so its workers inherit them
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")

from tests.helpers import (PARAGRAPHS, encrypted_pdf, multipage_tiff, png_bytes, scanned_pdf, text_page_image, text_pdf,
                           thread_share)


@pytest.fixture(scope="session")
def page_images():
    return [text_page_image(t) for t in PARAGRAPHS]


@pytest.fixture(scope="session")
def library(tmp_path_factory, page_images):
    """A source folder with good books, a folder of page images, and every kind of bad input."""
    root = tmp_path_factory.mktemp("library")
    (root / "scan_book.pdf").write_bytes(scanned_pdf(page_images[:2]))
    (root / "digital_book.pdf").write_bytes(text_pdf([PARAGRAPHS[2]]))
    folder = root / "image_book"
    folder.mkdir()
    (folder / "page_2.png").write_bytes(png_bytes(page_images[1]))
    (folder / "page_10.tiff").write_bytes(multipage_tiff([page_images[2]]))
    (folder / "page_1.png").write_bytes(png_bytes(page_images[0]))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.pdf").write_bytes(b"")
    (bad / "truncated.pdf").write_bytes(scanned_pdf(page_images[:1])[:700])
    (bad / "not_a_pdf.pdf").write_bytes(b"GIF89a this is not a pdf")
    (bad / "locked.pdf").write_bytes(encrypted_pdf())
    (root / "notes.txt.md").write_text("ignored: neither PDF nor image")
    return root


def pytest_configure(config):
    """Under pytest-xdist (`make test`: -n 2), torch in each worker gets its share of the cores, not all
    of them: two pools of every core spin against each other. This process's pool, and the VLM bench's
    (tests/test_vlm_bench.py passes OMP_NUM_THREADS to it); Ray sets its actors' own, and the jobs
    the tests start as subprocesses run as they always did."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(thread_share())


# The longest test files, longest first (per-file sums of `--durations=0` on the 2-core machine:
# BENCHMARKS.md "Test suite time, third pass"). With `--dist loadfile --no-loadscope-reorder`
# (make test) pytest-xdist hands files out in collection order, one to each idle worker: started
# first, the long ones do not end up alone at the end while the other workers wait (xdist's own
# order, most tests first, started the 1-test multinode file last). Every other file keeps its place after them.
HEAVY_FIRST = ("test_vlm_memory.py", "test_route.py", "test_actor_kill.py", "test_vlm_bench.py", "test_progress.py",
               "test_spill.py", "test_quiet.py", "test_multinode.py", "test_stop.py", "test_vlm.py", "test_durability.py",
               "test_partition.py", "test_job.py", "test_executor.py", "test_duplicates.py", "test_prep.py",
               "test_page_confidence.py", "test_iiif.py", "test_report.py", "test_vlm_boxes.py", "test_cpu_engines.py",
               "test_s3.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint on 127.0.0.1 (moto server mode); clients are the production ones."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", params=["deepseek-ocr-2", "got-ocr2"])
def tiny(request, tmp_path_factory):
    """(kind, path) of a tiny random VLM checkpoint of each supported model (built once per session)."""
    from folioscan.workers.engines.vlm.random_init import save_random_model

    return request.param, save_random_model(request.param, str(tmp_path_factory.mktemp(request.param)))
