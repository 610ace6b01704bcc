"""CLI conventions: --version, help that lists the valid values, the closest valid name for a
mistyped option, subcommand or value, and one clean line (exit 2, no traceback) for a user's
mistake in every subcommand."""
import argparse

import pytest

import folioscan
from folioscan.export import ALL_FORMATS, FORMATS
from folioscan.pipeline.cli import build_parser, main
from folioscan.workers.engines.registry import engine_names
from folioscan.workers.engines.tessdata import PYPI_LANGS
from folioscan.workers.engines.vlm.models import MODELS
from folioscan.workers.prep.pipeline import STEPS


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("folioscan: ") and "Traceback" not in err, err
    return lines[0]


def _subparser(name: str) -> argparse.ArgumentParser:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _help_of(parser: argparse.ArgumentParser, option: str) -> str:
    [action] = [a for a in parser._actions if option in a.option_strings]
    return action.help


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"folioscan {folioscan.__version__}\n"


def test_help_lists_the_valid_values(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside a name like deepseek-ocr-2
    for command in ("run", "demo"):
        sp = _subparser(command)
        assert all(step in _help_of(sp, "--skip-step") for step in STEPS), _help_of(sp, "--skip-step")
        assert all(f in _help_of(sp, "--also") for f in FORMATS)
        budgets = _help_of(sp, "--budget")
        assert all(f"{s.kind}: {', '.join(b.name for b in s.budgets + s.experimental)}" in budgets for s in MODELS.values())
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "{" + ",".join(engine_names()) + "}" in out  # --engine's choices
        assert all(step in out for step in STEPS) and all(f in out for f in FORMATS)
    assert all(f in _help_of(_subparser("export"), "--format") for f in ALL_FORMATS)
    [langs] = [a for a in _subparser("tessdata")._actions if a.dest == "langs"]
    assert all(lang in langs.help for lang in PYPI_LANGS)
    assert main(["--help"]) == 0 and "exit status: 0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, hint", [
    (["run", "src", "out", "--engnie", "tesseract"], "did you mean --engine?"),
    (["run", "src", "out", "--skip-steps=deskew"], "did you mean --skip-step?"),
    (["demo", "--dry-rn"], "did you mean --dry-run?"),
    (["rn", "src", "out"], "did you mean run?"),
    (["exprot", "out", "dest", "--format", "alto"], "did you mean export?"),
    (["run", "src", "out", "--engine", "tesseact"], "did you mean tesseract?"),
    (["run", "src", "out", "--backend", "vlm"], "(choose from transformers, vllm)"),
    (["export", "out", "dest", "--fromat", "alto"], "did you mean --format?"),
    (["report", "out", "--wrost", "3"], "did you mean --worst?"),
    (["tessdata", "instal"], "did you mean install?"),
])
def test_mistyped_names_get_the_closest_valid_one(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: folioscan") and hint in err.strip().splitlines()[-1], err
    assert "Traceback" not in err


def test_user_mistakes_in_every_subcommand_are_one_line_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "nothing-here")
    assert main(["show", missing]) == 2
    assert one_line_error(capsys) == f"folioscan: {missing}: no folioscan output here (no documents/ folder); `show` reads a local output folder"
    assert main(["report", missing, "--out", str(tmp_path / "r.html")]) == 2
    assert one_line_error(capsys) == f"folioscan: {missing}: no folioscan output here (no pages/, documents/ or _runs/)"
    assert main(["export", missing, str(tmp_path / "dest"), "--format", "alot"]) == 2
    assert one_line_error(capsys) == f"folioscan: unknown export format 'alot'; known: {', '.join(ALL_FORMATS)}"
    assert main(["tessdata", "install", "eng", "klingon"]) == 2  # refused before pip is asked for anything
    assert one_line_error(capsys).startswith("folioscan: not on PyPI: ['klingon']; PyPI has ['eng', 'deu', 'jpn']")
    assert main(["run", str(tmp_path), missing, "--config", str(tmp_path / "job.yaml")]) == 2
    assert one_line_error(capsys).startswith("folioscan: bad configuration: ")
    assert main(["demo", missing, "--also", "alto,docx", "--executor", "local"]) == 2
    assert "unknown export format(s) ['docx']" in one_line_error(capsys)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "r.html").exists()
