"""The benchmarks' CER normalisation (bench/evalset.py) and the ground-truth audit it rests on
(bench/gt_audit.json). Needs no eval set."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _evalset():
    spec = importlib.util.spec_from_file_location("evalset", os.path.join(ROOT, "bench", "evalset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_single_quotes_are_a_double_quote_and_case_folds_only_when_asked():
    ev = _evalset()
    assert ev.cer("\u2018\u2018Yes,\u2019\u2019 she said.", "\u201cYes,\u201d she said.") == 0.0  # book d's print
    assert ev.cer("PETERSHAM, SURREY", "Petersham, Surrey") > 0.5  # small capitals: a difference by default
    assert ev.cer("PETERSHAM, SURREY", "Petersham, Surrey", fold_case=True) == 0.0
    assert ev.cer("'Yes,' she said.", '"Yes," she said.') > 0  # one single quote stays a single quote


def test_every_audited_page_has_a_verdict_and_evidence():
    audit = json.load(open(os.path.join(ROOT, "bench", "gt_audit.json")))["pages"]
    assert len(audit) >= 12
    for page, entry in audit.items():
        assert entry["verdict"] in {"ocr", "normalisation", "gt_differs", "order_convention"}, page
        assert entry["evidence"] and all(e["kind"] for e in entry["evidence"]), page
        # only pages whose ground truth differs from the print may leave the "excluded" figure
        assert (entry["use"] == "exclude") == (entry["verdict"] in {"gt_differs", "order_convention"}), page
