"""Configuration you can trust: precedence, unknown names rejected, file formats, numbers, empty sources, --dry-run."""
import json
import os

import pytest

from folioscan.pipeline.cli import build_parser, config_from_args, main
from folioscan.pipeline.settings import ConfigError
from tests.helpers import scanned_pdf


def cfg_of(argv, environ=None):
    return config_from_args(build_parser().parse_args(["run", "src", "out", *argv]), environ or {})


def write(path, text):
    path.write_text(text)
    return str(path)


def test_precedence_defaults_file_environment_flags(tmp_path):
    conf = write(tmp_path / "job.json", json.dumps({"shard_docs": 5, "dpi": 200, "executor": "local", "num_cpus": 3}))
    assert cfg_of([]).shard_docs == 16  # default
    assert cfg_of(["--config", conf]).shard_docs == 5  # file over default
    env = {"FOLIOSCAN_SHARD_DOCS": "7", "FOLIOSCAN_DPI": "250"}
    c = cfg_of(["--config", conf], env)
    assert (c.shard_docs, c.dpi, c.executor, c.num_cpus) == (7, 250.0, "local", 3)  # environment over file
    c = cfg_of(["--config", conf, "--shard-docs", "9"], env)
    assert (c.shard_docs, c.dpi) == (9, 250.0)  # a flag given over the environment; one left out changes nothing


def test_engine_block_of_the_file_survives_when_no_engine_flag_is_given(tmp_path):
    conf = write(tmp_path / "job.json", json.dumps({"engine": {"kind": "tesseract", "psm": 6, "lang": "deu"}}))
    engine = cfg_of(["--config", conf]).engine
    assert (engine.kind, engine.psm, engine.lang) == ("tesseract", 6, "deu")
    vlm = write(tmp_path / "vlm.json", json.dumps({"engine": {"kind": "got-ocr2", "model": "/m", "budget": "base", "batch_size": 2}}))
    engine = cfg_of(["--config", vlm, "--max-new-tokens", "64"]).engine
    assert (engine.kind, engine.model, engine.budget, engine.batch_size, engine.max_new_tokens) == ("got-ocr2", "/m", "base", 2, 64)
    assert cfg_of(["--config", vlm, "--engine", "rapidocr"]).engine.kind == "rapidocr"  # another kind replaces the block
    kindless = write(tmp_path / "psm.json", json.dumps({"engine": {"psm": 11}}))
    assert cfg_of(["--config", kindless]).engine.psm == 11  # the default engine's kind is implied


def test_yaml_and_toml_files(tmp_path):
    y = write(tmp_path / "job.yaml", "shard_docs: 3\nprep:\n  skip: [deskew]\nengine:\n  kind: tesseract\n  psm: 4\n")
    t = write(tmp_path / "job.toml", "shard_docs = 4\n[prep]\nskip = ['crop']\n[retry]\nattempts = 2\n")
    c = cfg_of(["--config", y])
    assert (c.shard_docs, c.prep.skip, c.engine.psm) == (3, ["deskew"], 4)
    c = cfg_of(["--config", t, "--skip-step", "spread"])
    assert (c.shard_docs, c.prep.skip, c.retry.attempts) == (4, ["crop", "spread"], 2)


@pytest.mark.parametrize("settings, where, valid", [
    ({"shard_dcos": 4}, "shard_dcos", "shard_docs"),
    ({"prep": {"skip_steps": ["crop"]}}, "prep.skip_steps", "min_deskew"),
    ({"engine": {"kind": "tesseract", "pssm": 6}}, "engine.tesseract.pssm", "psm"),
    ({"retry": {"tries": 2}}, "retry.tries", "base_delay_s"),
])
def test_unknown_settings_at_any_depth_are_rejected_listing_the_valid_ones(tmp_path, settings, where, valid):
    conf = write(tmp_path / "job.json", json.dumps(settings))
    with pytest.raises(ConfigError) as e:
        cfg_of(["--config", conf])
    assert f"{where}: unknown setting" in str(e.value) and valid in str(e.value)


def test_unknown_step_names_and_bad_numbers_exit_2_with_a_message(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"%PDF-1.4")
    out = str(tmp_path / "out")
    assert main(["run", str(src), out, "--skip-step", "deskw", "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "unknown cleaning step(s) ['deskw']" in err and "crop, orientation" in err
    for argv in (["--shard-docs", "0"], ["--shard-docs", "-1"], ["--dpi", "0"], ["--batch-size", "-2"]):
        assert main(["run", str(src), out, "--executor", "local", *argv]) == 2, argv
        assert "greater than" in capsys.readouterr().err
    assert not os.path.exists(out)  # nothing ran


def test_a_source_listing_nothing_exits_2_naming_it(tmp_path, capsys, s3_endpoint):
    import boto3

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(empty), str(tmp_path / "out"), "--executor", "local", "--quiet"]) == 2
    assert f"{empty}: the source lists no PDF or page image" in capsys.readouterr().err
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="typo")
    assert main(["run", "s3://typo/scnas/", str(tmp_path / "out"), "--endpoint-url", s3_endpoint, "--executor", "local", "--quiet"]) == 2
    assert "s3://typo/scnas/: the source lists no PDF or page image" in capsys.readouterr().err


def test_dry_run_lists_what_would_be_processed_and_skipped(tmp_path, page_images, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.pdf").write_bytes(scanned_pdf(page_images[:1]))
    (src / "bad.pdf").write_bytes(b"%PDF-1.4 nothing else")
    out = str(tmp_path / "out")
    assert main(["run", str(src), out, "--executor", "local", "--quiet"]) == 1
    (src / "new.pdf").write_bytes(scanned_pdf(page_images[1:2]))
    before = sorted(os.listdir(os.path.join(out, "documents")))
    capsys.readouterr()
    assert main(["run", str(src), out, "--executor", "local", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"skip     {src}/bad.pdf  (committed error with a permanent error (--retry-failed retries it))" in lines
    assert f"skip     {src}/good.pdf  (committed ok)" in lines
    assert f"process  {src}/new.pdf  (new)" in lines
    assert lines[-1] == "dry run: 1 to process, 2 to skip; nothing was processed"
    assert sorted(os.listdir(os.path.join(out, "documents"))) == before
    assert main(["run", str(src), out, "--executor", "local", "--dry-run", "--retry-failed"]) == 0
    assert f"process  {src}/bad.pdf  (retry: committed error, --retry-failed)" in capsys.readouterr().out
