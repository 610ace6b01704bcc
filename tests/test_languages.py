"""Languages: Tesseract's `eng+deu` convention, language data variants, clear errors for missing data."""
import pytest

from folioscan.pipeline.cli import build_parser, config_from_args, main
from folioscan.workers.engines.registry import TesseractOptions, build_engine
from folioscan.workers.engines.tessdata import LanguageDataError, find_tessdata
from tests.helpers import cer, scanned_pdf, text_page_image

GERMAN = ("Über die Größe der Straßen wußte niemand Bescheid. Die Mädchen und Knaben gingen früh zur Schule, "
          "während ihre Väter auf den Äckern arbeiteten. Schöne Grüße aus München, schrieb der Bürgermeister.")


@pytest.fixture(scope="module")
def german_page():
    return text_page_image(GERMAN, dpi=150, fontsize=13)


def test_german_data_reads_umlauts_that_english_data_cannot(german_page):
    deu = build_engine(TesseractOptions(lang="deu")).predict_batch([german_page])[0]
    eng = build_engine(TesseractOptions(lang="eng")).predict_batch([german_page])[0]
    both = build_engine(TesseractOptions(lang="eng+deu")).predict_batch([german_page])[0]
    assert cer(deu.text, GERMAN) < 0.02 and cer(both.text, GERMAN) < 0.03
    assert cer(eng.text, GERMAN) > cer(deu.text, GERMAN) + 0.02
    assert "Größe" in deu.text and "Größe" not in eng.text


def test_the_data_that_read_a_page_is_part_of_the_engine_version():
    assert build_engine(TesseractOptions(lang="eng+deu")).version.endswith(" eng+deu:fast")
    cfg = config_from_args(build_parser().parse_args(["run", "src", "out", "--lang", "eng+deu", "--tessdata", "standard"]))
    assert (cfg.engine.lang, cfg.engine.variant, cfg.engine.tessdata) == ("eng+deu", "standard", None)


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_missing_language_data_is_a_clear_error(tmp_path, monkeypatch, page_images, executor, capsys):
    monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    with pytest.raises(LanguageDataError, match="'eng\\+frk' not found.*apt-get install tesseract-ocr-frk"):
        find_tessdata("eng+frk", "fast")
    with pytest.raises(LanguageDataError, match=f"not found in {tmp_path}"):
        build_engine(TesseractOptions(tessdata=str(tmp_path)))
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf([page_images[0]]))
    capsys.readouterr()
    # checked on the driver before any work, with either executor (a Ray actor would otherwise die
    # building its engine and every book would fail as if transiently)
    assert main(["run", str(src), str(tmp_path / "out"), "--executor", executor, "--num-cpus", "1", "--lang", "frk",
                 "--quiet"]) == 2
    assert "apt-get install tesseract-ocr-frk" in capsys.readouterr().err
    assert not (tmp_path / "out" / "documents").exists()
