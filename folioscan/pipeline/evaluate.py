"""`folioscan eval OUTPUT --truth TRUTH`: how well a finished run read the pages a user has ground
truth for, and what its confidence is worth on them.

Ground truth, two forms (docs/eval.md):
- a folder with one subfolder per book, named as the book's source without `.pdf` (`scans/vol1.pdf`
  -> `TRUTH/vol1/`; a folder of page images -> its folder name), one file per page named by its
  1-based page number (`1.txt`, `00012.txt`; `12-left.txt` / `12-right.txt` for the halves of a
  split spread; a whole-page truth for a page that was split is compared with both halves' text,
  left then right);
- a CSV file with a header: the book (`book`, `source` or `pdf`: the source's name, path or URI,
  `.pdf` or not), the page (`page`, 1-based, or `page_index`, 0-based) and the truth file (`truth`
  or `gt`, relative to the CSV), optionally `side`.
A truth file is plain text (`.txt`), ALTO (`.xml` with `<String CONTENT>`), or PAGE-XML (`.xml` with
`<TextLine><TextEquiv><Unicode>`); XML gives one line per text line.

Every page with truth is scored, a failed or blank page too (its text is empty: CER 1). The result is
printed and written to `OUTPUT/_eval/eval-<time>.json` and `OUTPUT/_eval/latest.json`, which
`folioscan report` shows as its Accuracy section.
"""
from __future__ import annotations

import io
import json
import os
from datetime import datetime, timezone
from typing import Optional

from folioscan.groundtruth import Key, TruthError, load_truth
from folioscan.pipeline.storage import StorageError, join, store_for
from folioscan.records import book_stem, page_label
from folioscan.text import accuracy

__all__ = ["EVAL_DIR", "TruthError", "evaluate", "latest", "print_result"]

EVAL_DIR = "_eval"


def _read_pages(output: str, books: set[str], endpoint_url=None, region=None) -> tuple[list[dict], dict[str, set[str]], object]:
    """The page rows of the books the truth names (one committed part at a time, a few columns: memory
    holds the pages with truth, not the dataset), and every book name -> its source URIs."""
    import pyarrow.parquet as pq

    store = store_for(output, endpoint_url, region)
    docs_dir, pages_dir = join(output, "documents"), join(output, "pages")
    committed = [n for n in store.ls(docs_dir) if n.endswith(".parquet")]
    if not committed:
        raise StorageError(f"{output}: no folioscan dataset here (no documents/ parts)")
    columns = ["doc_id", "source_uri", "page_index", "side", "status", "confidence", "text"]
    rows, sources = [], {}
    for name in committed:  # pages parts count once their documents part exists (the commit marker)
        table = pq.read_table(io.BytesIO(store.read(join(pages_dir, name))), columns=columns)
        stems = [book_stem(u) for u in table.column("source_uri").to_pylist()]
        for stem, uri in zip(stems, table.column("source_uri").to_pylist()):
            sources.setdefault(stem, set()).add(uri)
        keep = [i for i, s in enumerate(stems) if s in books]
        if keep:
            rows.extend(table.take(keep).to_pylist())
    return rows, sources, store


def evaluate(output: str, truth: str, bad_above: float = accuracy.BAD_ABOVE, max_bad_share: float = 0.01, fold_case: bool = False,
             fold_punctuation: bool = False, endpoint_url=None, region=None, write: bool = True) -> dict:
    keys = load_truth(truth)
    rows, sources, store = _read_pages(output, {k.book for k in keys}, endpoint_url, region)
    clashes = {b: sorted(sources[b]) for b in {k.book for k in keys} if len(sources.get(b, ())) > 1}
    if clashes:  # two sources of one name: their pages would be scored against one truth
        b, uris = sorted(clashes.items())[0]
        raise TruthError(f"the truth's book {b!r} names {len(uris)} sources of the output ({', '.join(uris[:3])}); "
                         f"evaluate them from separate outputs or rename one")
    by_key: dict[Key, list[dict]] = {}
    for r in rows:
        by_key.setdefault(Key(book_stem(r["source_uri"]), r["page_index"], r["side"]), []).append(r)
        if r["side"]:  # a whole-page truth of a split page: both halves, left first
            by_key.setdefault(Key(book_stem(r["source_uri"]), r["page_index"], None), []).append(r)
    pages, missing = [], []
    for key, text in sorted(keys.items(), key=lambda kv: (kv[0].book, kv[0].page_index, kv[0].side or "")):
        found = sorted(by_key.get(key, []), key=lambda r: r["side"] or "")
        if not found:
            missing.append(f"{key.book} {page_label(key.page_index, key.side)}")
            continue
        read = "\n".join(r["text"] or "" for r in found if r["status"] == "ok")
        confs = [r["confidence"] for r in found]
        conf = min(confs) if all(c is not None for c in confs) else None
        truth_chars = len(accuracy.normalize(text, fold_case, fold_punctuation=fold_punctuation))
        pages.append({"book": key.book, "page": page_label(key.page_index, key.side), "page_index": key.page_index,
                      "side": key.side, "status": ",".join(sorted({r["status"] for r in found})), "confidence": conf,
                      "cer": accuracy.cer(read, text, fold_case, fold_punctuation=fold_punctuation),
                      "wer": accuracy.wer(read, text, fold_case, fold_punctuation=fold_punctuation), "truth_chars": truth_chars})
    if not pages:
        raise TruthError(f"none of the {len(keys)} ground-truth pages matches a page of {output} "
                         f"(books in the truth: {', '.join(sorted({k.book for k in keys})[:5])}; "
                         f"in the output: {', '.join(sorted(sources)[:5])})")
    result = summarise(pages, bad_above, max_bad_share)
    result.update({"output": output, "truth": os.path.abspath(truth), "missing_pages": missing,
                   "normalisation": {"fold_case": fold_case, "fold_punctuation": fold_punctuation,
                                     "always": accuracy.NORMALISATION},
                   "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "pages": pages})
    if write:
        data = json.dumps(result, indent=1).encode()
        stamp = result["created"].replace(":", "").replace("-", "")
        store.write(join(output, EVAL_DIR, f"eval-{stamp}.json"), data)
        store.write(join(output, EVAL_DIR, "latest.json"), data)
    return result


def summarise(pages: list[dict], bad_above: float, max_bad_share: float) -> dict:
    import numpy as np

    cer = np.array([p["cer"] for p in pages])
    wer = np.array([p["wer"] for p in pages])
    chars = np.array([p["truth_chars"] for p in pages], dtype=float)
    scored = [p for p in pages if p["confidence"] is not None]
    conf = np.array([p["confidence"] for p in scored])
    good = np.array([p["cer"] <= bad_above for p in scored], dtype=bool)

    def figures(c, w, n):
        return {"pages": int(len(c)), "cer_mean": round(float(c.mean()), 5), "cer_median": round(float(np.median(c)), 5),
                "cer_pooled": round(float((c * n).sum() / max(n.sum(), 1)), 5), "wer_mean": round(float(w.mean()), 5)}

    books = {}
    for b in sorted({p["book"] for p in pages}):
        m = np.array([p["book"] == b for p in pages])
        books[b] = figures(cer[m], wer[m], chars[m])
    auroc = accuracy.auroc(conf, good) if len(scored) else None
    return {"overall": figures(cer, wer, chars), "books": books, "bad_above": bad_above, "max_bad_share": max_bad_share,
            "bad_pages": int((cer > bad_above).sum()), "pages_without_confidence": len(pages) - len(scored),
            "auroc": None if auroc is None else round(auroc, 4), "reliability": accuracy.reliability(conf, good),
            "threshold": accuracy.threshold_for_bad_share(conf, good, max_bad_share)}


def latest(store, output: str) -> Optional[dict]:
    """The last `folioscan eval` of this output, or None (for the report)."""
    if "latest.json" not in store.ls(join(output, EVAL_DIR)):
        return None
    return json.loads(store.read(join(output, EVAL_DIR, "latest.json")))


def print_result(r: dict, out) -> None:
    o = r["overall"]
    print(f"{o['pages']} pages with ground truth: CER {100 * o['cer_mean']:.2f}% mean, {100 * o['cer_median']:.2f}% median, "
          f"{100 * o['cer_pooled']:.2f}% pooled over characters; WER {100 * o['wer_mean']:.2f}% mean", file=out)
    for b, f in r["books"].items():
        print(f"  {b}: {f['pages']} pages, CER {100 * f['cer_mean']:.2f}% mean, {100 * f['cer_pooled']:.2f}% pooled, "
              f"WER {100 * f['wer_mean']:.2f}%", file=out)
    bad = f"CER > {100 * r['bad_above']:g}%"
    print(f"bad pages ({bad}): {r['bad_pages']}; confidence AUROC (good vs bad): "
          f"{'n/a (needs good and bad pages)' if r['auroc'] is None else format(r['auroc'], '.3f')}", file=out)
    t = r["threshold"]
    if t["threshold"] is None:
        print(f"no confidence threshold keeps bad pages at or under {100 * r['max_bad_share']:g}% of those accepted", file=out)
    else:
        print(f"accept confidence >= {t['threshold']:.3f}: {t['accepted_pages']} pages ({100 * t['accepted_share']:.1f}%), "
              f"{100 * t['bad_share_accepted']:.2f}% of them bad (target <= {100 * r['max_bad_share']:g}%)", file=out)
    print("confidence bin   pages  mean conf  share good", file=out)
    for row in r["reliability"]:
        print(f"  {row['bin']:>9}  {row['pages']:6d}  {row['mean_confidence']:9.3f}  {row['share_good']:10.3f}", file=out)
    if r["missing_pages"]:
        print(f"{len(r['missing_pages'])} ground-truth pages have no page in the output: {', '.join(r['missing_pages'][:5])}"
              + (" ..." if len(r["missing_pages"]) > 5 else ""), file=out)
