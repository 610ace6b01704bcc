"""The subcommands that read a finished output or the machine (`show`, `report`, `eval`, `export`,
`tessdata`), and the one-line failure every subcommand ends a user's mistake with (`fail`: exit 2,
or 74 when an output cannot be written). `cli.py` parses the arguments and dispatches here."""
from __future__ import annotations

import json
import os
import sys

from folioscan.pipeline.storage import StorageError, WriteError
from folioscan.text.accuracy import BAD_ABOVE

EXIT_WRITE_FAILED = 74  # EX_IOERR (sysexits.h): the output could not be written


def formats(values: list[str]) -> list[str]:
    """Format names from repeated and comma-separated values."""
    return [f.strip() for v in values for f in v.split(",") if f.strip()]


def fail(error, code: int = 2) -> int:
    """A user's mistake or an unusable configuration: one line on stderr, exit 2 (or `code`)."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    print(f"folioscan: {text}", file=sys.stderr)
    return code


def export_output(args) -> int:
    from folioscan.export import export_dataset

    try:
        summary = export_dataset(args.output, args.dest, formats(args.format), args.endpoint_url, args.region,
                                 args.base_url)
    except WriteError as e:
        return fail(e, EXIT_WRITE_FAILED)
    except (ValueError, StorageError) as e:
        return fail(e)
    print(json.dumps(summary.to_dict(), indent=2))
    return 1 if summary.errors else 0


_CLEANING = ("orientation", "deskew_angle", "dewarped", "illumination")


_ROUTING = ("routed", "route_reason", "engine")


def routed(page: dict) -> str:
    """A routed page's route in a few words (`show`, docs/routing.md); "" when not routed."""
    if not page.get("routed"):
        return ""
    return f"routed: {page['route_reason']}; {page['engine']}'s reading kept"


def _page_rows(folder: str, columns: list[str]) -> list[dict]:
    """The columns of every pages part that has them (parts of schema versions before routing lack its columns)."""
    import pyarrow.parquet as pq

    rows = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet") and not name.startswith(("_", ".")):
            f = pq.ParquetFile(os.path.join(folder, name))
            rows += f.read(columns=[c for c in columns if c in f.schema_arrow.names]).to_pylist()
    return rows


def cleaning(page: dict) -> str:
    """What the cleaning did to a page, in a few words (`show`); a spread's split is in its label."""
    done = []
    if page["orientation"]:
        done.append(f"turned {page['orientation']} deg")
    if page["deskew_angle"] is not None and abs(page["deskew_angle"]) >= 0.5:
        done.append(f"deskewed {page['deskew_angle']:.1f} deg")
    if page["dewarped"]:
        done.append("dewarped")
    if page["illumination"] == "flattened":
        done.append("lighting evened")
    return ", ".join(done)


def show_output(output: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from folioscan.records import page_label
    from folioscan.text.safe import visible  # names and text as escapes, never as terminal commands

    if not os.path.isdir(os.path.join(output, "documents")):
        return fail(f"{visible(output)}: no folioscan output here (no documents/ folder); `show` reads a local output folder")
    try:
        docs = pq.read_table(os.path.join(output, "documents")).to_pylist()
        pages = _page_rows(os.path.join(output, "pages"), ["doc_id", "page_index", "side", "status", "confidence", "text",
                                                          *_CLEANING, *_ROUTING])
    except (OSError, pa.ArrowException) as e:
        return fail(f"{visible(output)}: cannot read the dataset: {e}")
    for d in docs:
        conf = f"{d['mean_confidence']:.3f}" if d["mean_confidence"] is not None else "n/a"
        split = f" from {d['page_count']} in the source" if d["pages_out"] != d["page_count"] else ""
        print(visible(f"{d['source_uri']}: {d['status']}, {d['pages_ok']}/{d['pages_out']} pages ok{split}, confidence {conf}"
                      + (f", {d['error']}" if d["error"] else "")))
        for p in sorted((p for p in pages if p["doc_id"] == d["doc_id"]), key=lambda p: (p["page_index"], p["side"] or "")):
            text = " ".join((p["text"] or "").split())[:60].rstrip()
            conf = f"{p['confidence']:.3f}" if p["confidence"] is not None else "  -  "
            done = "; ".join(x for x in (cleaning(p), routed(p)) if x)
            print(visible(f"  {page_label(p['page_index'], p['side'])}: {p['status']:5} {conf}  {text}" + (f"  [{done}]" if done else "")))
    shown = visible(output.rstrip("/") or output)
    print(f"\nconfidence: the probability the page reads with at most {BAD_ABOVE:.0%} of characters wrong (docs/hard-pages.md)\n"
          f"next: folioscan report {shown} --out report.html   (charts, the worst pages beside their scans)\n"
          f"      folioscan export {shown} {shown}-exports --format pdf,alto,hocr   (searchable PDF, ALTO, hOCR)")
    return 0


def report_output(args) -> int:
    from folioscan.report import write_report

    try:
        path = write_report(args.output, args.out, endpoint_url=args.endpoint_url, region=args.region,
                            flag_below=args.flag_below, worst=args.worst)
    except (StorageError, OSError) as e:
        return fail(e)
    print(f"report written to {path}")
    return 0


def eval_output(args) -> int:
    from folioscan.pipeline.evaluate import TruthError, evaluate, print_result

    if not 0 <= args.bad_above <= 1 or not 0 <= args.max_bad_share <= 1:
        return fail("--bad-above and --max-bad-share are shares between 0 and 1 (0.03 is 3%)")
    try:
        result = evaluate(args.output, args.truth, args.bad_above, args.max_bad_share, args.fold_case, args.fold_punctuation,
                          args.endpoint_url, args.region)
    except WriteError as e:
        return fail(e, EXIT_WRITE_FAILED)
    except (TruthError, StorageError, OSError, UnicodeDecodeError) as e:
        return fail(e)
    print_result(result, sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def tessdata_command(args) -> int:
    import subprocess

    from folioscan.workers.engines import tessdata

    if args.action == "list":
        print(json.dumps(tessdata.available(), indent=2))
        return 0
    try:
        print("\n".join(tessdata.install(args.langs, args.variant)))
    except ValueError as e:  # a language PyPI does not have
        return fail(e)
    except (subprocess.CalledProcessError, OSError) as e:
        return fail(f"tessdata install failed: {e}")
    return 0
