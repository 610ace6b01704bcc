"""`folioscan report`: a real job's output, rendered, opened in headless Chromium, screenshotted."""
import json
import os
import re
import shutil

import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from tests.browser import open_in_chromium
from tests.helpers import PARAGRAPHS, png_bytes, scanned_pdf


@pytest.fixture(scope="module")
def job_output(tmp_path_factory, page_images):
    """Two good books (a PDF and a folder of page images) and a bad one, one shard each."""
    root = tmp_path_factory.mktemp("report")
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "book.pdf").write_bytes(scanned_pdf(page_images[:2]))
    (src / "images" / "page_1.png").write_bytes(png_bytes(page_images[2]))
    (src / "images" / "page_2.png").write_bytes(png_bytes(page_images[0]))
    (src / "broken.pdf").write_bytes(b"GIF89a not a pdf")
    out = root / "out"
    summary = run_job(JobConfig(source=str(src), output=str(out), executor="local", shard_docs=1, progress=False))
    assert summary.documents == 3 and summary.pages == 4
    return src, out, summary


def _report(out, path, *extra):
    assert main(["report", str(out), "--out", str(path), *extra]) == 0
    return path.read_text()


def test_report_renders_in_chromium_with_every_section(job_output, tmp_path):
    _, out, summary = job_output
    html = _report(out, tmp_path / "report.html")
    # self-contained: no script, nothing referenced outside the file
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    seen = open_in_chromium(str(tmp_path / "report.html"), str(tmp_path / "report.png"))
    assert seen["console"] == [] and seen["errors"] == [] and seen["requests"] == []
    labels = {c["label"]: c for c in seen["charts"]}
    for chart in ("pages per second over time", "time per stage from the pages table", "confidence histogram", "error kinds"):
        assert labels[chart]["width"] > 100 and labels[chart]["height"] > 20 and labels[chart]["marks"] > 0, chart
    assert sum(c["marks"] for c in seen["charts"] if c["label"] == "confidence histogram") >= 20  # one bar per bin
    assert len(seen["images"]) == 4 and all(i["complete"] and i["width"] > 50 for i in seen["images"])  # 4 OCR'd pages
    assert seen["sections"][:2] == ["Pages per second over time", "Time per stage"]
    assert "no VLM pages (engine: tesseract)" in html
    assert "permanent" in html and "not a PDF" in html and "broken.pdf" in html
    assert os.path.getsize(tmp_path / "report.png") > 20_000
    # the worst page comes first, with its text
    first = html.index('class="conf"')
    assert html.count('class="conf"') == 4 and "flag &lt; 0.80" in html
    confs = [float(c) for c in re.findall(r'class="conf">([0-9.]+)<', html)]
    assert confs == sorted(confs)
    assert first > 0


def test_run_record_stages_are_shown_beside_the_pages_table(job_output, tmp_path):
    _, out, summary = job_output
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    record_path = copy / "_runs" / f"{summary.run_id}.json"
    record = json.loads(record_path.read_text())
    record["summary"]["stages"] = {"load": {"seconds": 1.5, "pages": 4}, "clean": {"seconds": 0.5, "pages": 4},
                                   "ocr": {"seconds": 6.0, "pages": 4}, "write": {"seconds": 0.25, "pages": 4}}
    record_path.write_text(json.dumps(record))
    html = _report(copy, tmp_path / "r.html", "--flag-below", "0.95")
    assert "From the pages table" in html and f"Run record {summary.run_id}" in html
    assert 'aria-label="time per stage of run ' + summary.run_id in html and "0.25 s · 4 pages" in html
    assert "flag &lt; 0.95" in html and "(--flag-below)" in html
    real = _report(out, tmp_path / "real.html")  # the job's own run record carries the executor's stages
    assert 'aria-label="time per stage of run ' + summary.run_id in real
    del record["summary"]["stages"]
    record_path.write_text(json.dumps(record))
    plain = _report(copy, tmp_path / "plain.html")
    assert "From the pages table" in plain and "No run record here holds per-stage times" in plain


def test_an_unreachable_source_is_said_not_hidden(job_output, tmp_path):
    src, out, _ = job_output
    moved = tmp_path / "src"
    shutil.copytree(src, moved)
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # the output now points at a source that was deleted after the run
    for part in (copy / "pages").iterdir():
        import pyarrow.parquet as pq

        t = pq.read_table(part)
        uris = [u.replace(str(src), str(tmp_path / "gone")) for u in t.column("source_uri").to_pylist()]
        pq.write_table(t.set_column(t.schema.get_field_index("source_uri"), "source_uri", [uris]), part)
    html = _report(copy, tmp_path / "r.html")
    assert html.count("no thumbnail: source not reachable or not renderable") == 4
    assert "<img" not in html


def test_report_over_an_s3_output(job_output, s3_endpoint, tmp_path):
    import boto3

    src, _, _ = job_output
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="reports")
    assert main(["run", str(src), "s3://reports/out", "--endpoint-url", s3_endpoint, "--executor", "local", "--quiet"]) == 1
    html = _report("s3://reports/out", tmp_path / "s3.html", "--endpoint-url", s3_endpoint)
    assert html.count("<img") == 4 and "s3://reports/out" in html and "no VLM pages" in html
    assert main(["report", "s3://reports/nothing-here", "--out", str(tmp_path / "x.html"), "--endpoint-url", s3_endpoint]) == 2


def test_vlm_budgets_and_escalations(tmp_path, page_images):
    from folioscan.workers.engines.vlm.random_init import save_random_model

    model = save_random_model("deepseek-ocr-2", str(tmp_path / "model"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf(page_images[:1], dpi=100))
    code = main(["run", str(src), str(tmp_path / "out"), "--engine", "deepseek-ocr-2", "--model", model, "--device", "cpu",
                 "--executor", "local", "--max-new-tokens", "8", "--max-attempts", "2", "--quiet"])
    assert code == 0
    html = _report(tmp_path / "out", tmp_path / "vlm.html")
    assert "no VLM pages" not in html and 'aria-label="pages per accepted budget"' in html
    # a random model reads noise at low confidence: the page is re-read one rung up, and the report says why
    assert "1 of 1 pages (100.0%) were re-read at least once" in html and "why a page was re-read" in html
    assert "escalate_below of run" in html  # the flag threshold is the engine's own


def test_an_output_from_before_error_kind_still_reports(job_output, tmp_path):
    """Outputs written by an earlier schema version lack newer columns: the report says 'unclassified'."""
    import pyarrow.parquet as pq

    _, out, _ = job_output
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for part in list((copy / "pages").iterdir()) + list((copy / "documents").iterdir()):
        pq.write_table(pq.read_table(part).drop(["error_kind"]), part)
    html = _report(copy, tmp_path / "old.html")
    assert 'aria-label="error kinds"' in html and "unclassified" in html and html.count("<img") == 4
