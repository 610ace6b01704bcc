"""`folioscan eval`: a real run scored against ground truth in each documented form (text files,
ALTO, PAGE-XML, a CSV), the figures checked by hand-made arithmetic, the report's Accuracy section,
and one-line errors for truth that cannot be used."""
import csv
import json
import os

import numpy as np
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.evaluate import evaluate
from folioscan.pipeline.job import run_job
from folioscan.text import accuracy
from tests.helpers import scanned_pdf, text_page_image

TEXTS = [
    "The old mill stood at the bend of the river, where the water ran slow and deep under the willows.",
    "Every morning the miller opened the sluice and listened to the wheel begin its patient turning.",
    "In the evening the children came down to the bank to watch the swallows skim the quiet pool.",
]
WRONG = "Quite another story about ships and harbours, which nobody printed on this page at all."

ALTO = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Layout><Page><PrintSpace><TextBlock>
{lines}</TextBlock></PrintSpace></Page></Layout></alto>"""
PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"><Page><TextRegion>
{lines}</TextRegion></Page></PcGts>"""


def alto(text):
    half = len(text.split()) // 2
    lines = [text.split()[:half], text.split()[half:]]
    return ALTO.format(lines="".join("<TextLine>" + "".join(f'<String CONTENT="{w}"/>' for w in ws) + "</TextLine>" for ws in lines))


def page_xml(text):
    return PAGE.format(lines=f"<TextLine><Word><TextEquiv><Unicode>ignored</Unicode></TextEquiv></Word>"
                             f"<TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    (root / "src").mkdir()
    (root / "src" / "vol1.pdf").write_bytes(scanned_pdf([text_page_image(t) for t in TEXTS]))
    out = str(root / "out")
    run_job(JobConfig(source=str(root / "src"), output=out, executor="local", progress=False))
    return root, out


def test_normalisation_and_the_arithmetic():
    assert accuracy.normalize("a \u201cquoted\u201d exam-\nple\u2014done") == 'a "quoted" example-done'
    assert accuracy.cer("Hello World", "hello world") > 0 and accuracy.cer("Hello World", "hello world", fold_case=True) == 0
    assert accuracy.cer("Hello, world!", "Hello world", fold_punctuation=True) == 0
    rng = np.random.default_rng(1)
    for _ in range(30):
        s, g = rng.integers(0, 8, 40) / 8, rng.random(40) < 0.6
        pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in s[g] for b in s[~g]]
        assert accuracy.auroc(s, g) == pytest.approx(np.mean(pairs))
        qualifying = [(t, (s >= t).sum()) for t in sorted(set(s)) if (~g[s >= t]).mean() <= 0.25]
        got = accuracy.threshold_for_bad_share(s, g, 0.25)
        assert (got["threshold"], got["accepted_pages"]) == ((qualifying[0][0], qualifying[0][1]) if qualifying else (None, 0))
    assert accuracy.auroc([0.5, 0.6], [True, True]) is None


def test_eval_of_a_real_run_against_text_and_alto_truth(finished, tmp_path, capsys):
    root, out = finished
    truth = tmp_path / "truth" / "vol1"
    truth.mkdir(parents=True)
    (truth / "1.txt").write_text(TEXTS[0])
    (truth / "00002.xml").write_text(alto(TEXTS[1]))
    (truth / "3.txt").write_text(WRONG)  # a page whose truth does not match what is printed: a bad page
    (truth / "9.txt").write_text("no such page")
    r = evaluate(out, str(tmp_path / "truth"))
    cers = {p["page"]: p["cer"] for p in r["pages"]}
    assert set(cers) == {"page 1", "page 2", "page 3"} and r["missing_pages"] == ["vol1 page 9"]
    assert cers["page 1"] < 0.03 and cers["page 2"] < 0.03 and cers["page 3"] > 0.5
    assert r["bad_pages"] == 1 and r["overall"]["pages"] == 3
    assert r["overall"]["cer_mean"] == pytest.approx(sum(cers.values()) / 3, abs=1e-5)
    conf = {p["page"]: p["confidence"] for p in r["pages"]}
    bad = conf["page 3"]
    expected = np.mean([1.0 if conf[g] > bad else 0.5 if conf[g] == bad else 0.0 for g in ("page 1", "page 2")])
    assert r["auroc"] == pytest.approx(expected, abs=1e-4)
    saved = json.loads(open(os.path.join(out, "_eval", "latest.json")).read())
    assert saved["overall"] == r["overall"]

    capsys.readouterr()
    assert main(["eval", out, "--truth", str(tmp_path / "truth"), "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 pages with ground truth: CER") and "vol1: 3 pages" in printed
    assert "1 ground-truth pages have no page in the output: vol1 page 9" in printed
    assert json.load(open(tmp_path / "r.json"))["bad_pages"] == 1

    from folioscan.report import write_report

    html = open(write_report(out, str(tmp_path / "report.html"))).read()
    assert "<h2>Accuracy</h2>" in html and "bad pages (CER &gt; 3.00%): 1" in html


def test_eval_from_a_csv_with_page_xml_truth(finished, tmp_path):
    root, out = finished
    for i, t in enumerate(TEXTS):
        (tmp_path / f"p{i}.xml").write_text(page_xml(t))
    with open(tmp_path / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["book", "page_index", "pdf", "gt"])
        w.writerows([["ignored", i, "pdf/vol1.pdf", f"p{i}.xml"] for i in range(3)])
    r = evaluate(out, str(tmp_path / "truth.csv"), write=False)
    assert [p["page_index"] for p in r["pages"]] == [0, 1, 2] and r["bad_pages"] == 0
    assert all(p["cer"] < 0.03 for p in r["pages"])
    assert r["threshold"]["accepted_pages"] == 3 and r["auroc"] is None  # no bad page: AUROC undefined, said so


def test_truth_that_cannot_be_used_is_one_line_exit_2(finished, tmp_path, capsys):
    root, out = finished
    (tmp_path / "other" / "someotherbook").mkdir(parents=True)
    (tmp_path / "other" / "someotherbook" / "1.txt").write_text("x")
    (tmp_path / "bad.csv").write_text("name,number\nvol1,1\n")
    cases = [(["--truth", str(tmp_path / "nowhere")], "no such folder or CSV file of ground truth"),
             (["--truth", str(tmp_path / "other")], "matches a page of"),
             (["--truth", str(tmp_path / "bad.csv")], "needs a book column"),
             (["--truth", str(tmp_path / "other"), "--bad-above", "3"], "shares between 0 and 1")]
    for args, message in cases:
        capsys.readouterr()
        assert main(["eval", out, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_two_sources_of_one_name_are_refused_not_scored_together(tmp_path, capsys):
    for box in ("box1", "box2"):
        (tmp_path / "src" / box).mkdir(parents=True)
        (tmp_path / "src" / box / "vol1.pdf").write_bytes(scanned_pdf([text_page_image(TEXTS[0])]))
    out = str(tmp_path / "out")
    run_job(JobConfig(source=str(tmp_path / "src"), output=out, executor="local", progress=False))
    (tmp_path / "truth" / "vol1").mkdir(parents=True)
    (tmp_path / "truth" / "vol1" / "1.txt").write_text(TEXTS[0])
    capsys.readouterr()
    assert main(["eval", out, "--truth", str(tmp_path / "truth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names 2 sources of the output" in err[0] and "box1/vol1.pdf" in err[0]
