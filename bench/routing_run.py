"""What routing did in a finished routed run (`folioscan run ... --then ENGINE`), against ground truth:
the pages routed and why, the first engine's CER on the pages it kept and on those it routed, and the
set's CER with and without routing (the first engine's reading of a routed page is its row's
`unchosen_text` when the second reading was kept). BENCHMARKS.md, "Routing in a run".

    python bench/routing_run.py OUT --truth ../shared/eval/old_books/manifest.csv
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.parquet as pq  # noqa: E402

from folioscan.groundtruth import Key, load_truth  # noqa: E402
from folioscan.records import book_stem  # noqa: E402
from folioscan.text.accuracy import BAD_ABOVE, cer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output")
    ap.add_argument("--truth", required=True)
    args = ap.parse_args()
    truth = load_truth(args.truth)
    rows = [r for r in pq.read_table(os.path.join(args.output, "pages")).to_pylist() if r["status"] == "ok"]
    first, chosen, reasons, fallbacks = [], [], Counter(), Counter()
    for r in rows:
        t = truth[Key(book_stem(r["source_uri"]), r["page_index"], r["side"])]
        c = cer(r["text"], t)
        first_text = (r["unchosen_text"] if r["readings"][1]["chosen"] else r["text"]) if r["routed"] else r["text"]
        first.append(cer(first_text, t))
        chosen.append(c)
        if r["routed"]:
            reasons[r["route_reason"].split()[0]] += 1
            if not r["readings"][1]["chosen"]:
                fallbacks[(r["readings"][1]["reason"] or "?").split(":")[0]] += 1
    n = len(rows)
    routed = [f for r, f in zip(rows, first) if r["routed"]]
    kept = [f for r, f in zip(rows, first) if not r["routed"]]
    mean = lambda xs: 100 * sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    print(f"pages {n}; routed {len(routed)} ({len(routed) / n:.1%}) by {dict(reasons)}; fell back {sum(fallbacks.values())} {dict(fallbacks)}")
    print(f"first engine alone: CER {mean(first):.2f}% mean, {sum(f > BAD_ABOVE for f in first)} bad pages (CER > {BAD_ABOVE:.0%})")
    print(f"first engine on the pages it kept: CER {mean(kept):.2f}%, {sum(f > BAD_ABOVE for f in kept)} bad; "
          f"on the pages it routed: CER {mean(routed):.2f}%, {sum(f > BAD_ABOVE for f in routed)} bad")
    print(f"the routed run: CER {mean(chosen):.2f}% mean, {sum(c > BAD_ABOVE for c in chosen)} bad pages")


if __name__ == "__main__":
    main()
