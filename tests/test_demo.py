"""The bundled demo reads well and shows what the cleaning does: a clean page, a skewed and curled
page straightened, a spread split, every page confidently read; `show` says so page by page and
points at the report. Real job (local executor, embedded Tesseract) on the bundled PDF."""
import pyarrow.parquet as pq

from folioscan.pipeline.cli import DEMO_SAMPLE, main


def test_the_demo_sample_reads_well_and_show_explains_it(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", out, "--executor", "local", "--quiet"]) == 0
    pages = sorted(pq.read_table(f"{out}/pages").to_pylist(), key=lambda p: (p["page_index"], p["side"] or ""))
    assert [(p["page_index"], p["side"]) for p in pages] == [(0, None), (1, None), (2, "left"), (2, "right")]
    assert all(p["status"] == "ok" and p["confidence"] >= 0.9 for p in pages), [(p["page_index"], p["confidence"]) for p in pages]
    curled = pages[1]
    assert abs(curled["deskew_angle"]) >= 2 and curled["dewarped"]
    assert "HIGHWAYMEN" in pages[0]["text"] and "Old Bailey" in pages[2]["text"]
    capsys.readouterr()
    assert main(["show", out]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].endswith("ok, 4/4 pages ok from 3 in the source, confidence " + shown[0].rsplit(" ", 1)[1])
    assert [line.split(":")[0].strip() for line in shown[1:5]] == ["page 1", "page 2", "page 3 (left)", "page 3 (right)"]
    assert "deskewed" in shown[2] and "dewarped" in shown[2]
    assert any(line.startswith("next: folioscan report") for line in shown)
    assert DEMO_SAMPLE.endswith("book")
