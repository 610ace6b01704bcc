"""`folioscan run SOURCE OUTPUT`: the command-line front of the job.

Exit status: 0 every document done; 1 the job finished but some documents or pages failed
(they are error rows in the output); 2 the job could not run (bad arguments, unreachable
source or output). Credentials are never taken on the command line: boto3's chain reads them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from folioscan.pipeline.storage import StorageError
from folioscan.workers.engines.registry import VLM_KINDS, engine_names

DEMO_SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "samples")


def _engine_options(args) -> dict:
    if args.engine in VLM_KINDS:
        opts = {"kind": args.engine, "model": args.model or "", "budget": args.budget, "backend": args.backend,
                "device": args.device}
        for flag in ("vlm_batch_size", "max_new_tokens", "max_attempts"):
            if getattr(args, flag):
                opts[flag.replace("vlm_", "")] = getattr(args, flag)
        return opts
    return {"kind": args.engine}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="folioscan", description="Scanned books -> OCR text + confidence in Parquet.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the batch job")
    run.add_argument("source", help="local folder, s3://bucket/prefix, or a manifest (.txt/.csv) of URIs")
    run.add_argument("output", help="local folder or s3://bucket/prefix for the Parquet dataset")
    demo = sub.add_parser("demo", help="run the job on the bundled sample book")
    demo.add_argument("output", nargs="?", default="out/demo")
    show = sub.add_parser("show", help="print the books and pages of an output dataset")
    show.add_argument("output")
    for sp in (run, demo):
        sp.add_argument("--config", help="JSON file of job settings (CLI flags override it)")
        sp.add_argument("--executor", choices=["ray", "local"], default=None, help="default: ray (local Ray unless --ray-address)")
        sp.add_argument("--ray-address", help="address of an existing Ray cluster (e.g. ray://head:10001 or auto)")
        sp.add_argument("--num-cpus", type=int, help="CPUs for a local Ray")
        sp.add_argument("--ocr-workers", type=int, help="engine actors (default: one per CPU, one per GPU for VLMs)")
        sp.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
        sp.add_argument("--region")
        sp.add_argument("--engine", default="tesseract", choices=engine_names())
        sp.add_argument("--model", help="VLM engines: local model directory (or hub id)")
        sp.add_argument("--budget", default="adaptive", help="VLM engines: a budget name or 'adaptive'")
        sp.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
        sp.add_argument("--device", default="auto", help="VLM engines: auto, cpu, cuda")
        sp.add_argument("--vlm-batch-size", type=int, help="VLM engines: pages per generate call")
        sp.add_argument("--max-new-tokens", type=int, help="VLM engines: output cap (default: from the budget)")
        sp.add_argument("--max-attempts", type=int, help="VLM engines: reads per page, escalation included (default 3)")
        sp.add_argument("--batch-size", type=int, help="pages per engine call")
        sp.add_argument("--shard-docs", type=int, help="documents per committed Parquet part")
        sp.add_argument("--max-pages-per-book", type=int, help="read at most this many pages of a book; the book row says so")
        sp.add_argument("--dpi", type=float, help="render DPI for pages that are not a single scan image")
        sp.add_argument("--max-page-megapixels", type=float)
        sp.add_argument("--no-embedded", action="store_true", help="always render, never extract the scan image")
        sp.add_argument("--no-prep", action="store_true", help="switch off all page cleaning")
        sp.add_argument("--skip-step", action="append", default=[], help="switch off one cleaning step (repeatable)")
        sp.add_argument("--summary-json", help="also write the final summary to this file")
        sp.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args):
    from folioscan.pipeline.config import JobConfig

    base = json.load(open(args.config)) if args.config else {}
    source = getattr(args, "source", None) or DEMO_SAMPLE
    settings = {**base, "source": source, "output": args.output, "engine": _engine_options(args)}
    for flag in ("executor", "ray_address", "num_cpus", "ocr_workers", "endpoint_url", "region",
                 "batch_size", "shard_docs", "max_pages_per_book", "dpi", "max_page_megapixels"):
        value = getattr(args, flag)
        if value is not None:
            settings[flag] = value
    if args.no_embedded:
        settings["prefer_embedded"] = False
    prep = dict(base.get("prep", {}))
    if args.no_prep:
        prep["enabled"] = False
    if args.skip_step:
        prep["skip"] = sorted(set(prep.get("skip", [])) | set(args.skip_step))
    settings["prep"] = prep
    settings["progress"] = not args.quiet
    return JobConfig(**settings)


def print_summary(summary, out=sys.stdout) -> None:
    s = summary
    conf = f"{s.mean_confidence:.3f}" if s.mean_confidence is not None else "n/a"
    print(f"folioscan run {s.run_id}: {s.documents} documents ({s.documents_failed} failed, {s.documents_partial} partial, "
          f"{s.documents_skipped} already done), {s.pages} pages ({s.pages_failed} failed, {s.pages_blank} blank), "
          f"{s.pages_per_s:.2f} pages/s, mean confidence {conf}", file=out)


def show_output(output: str) -> int:
    import pyarrow.parquet as pq

    docs = pq.read_table(os.path.join(output, "documents")).to_pylist()
    pages = pq.read_table(os.path.join(output, "pages"), columns=["doc_id", "page_index", "side", "status", "confidence", "text"]).to_pylist()
    for d in docs:
        conf = f"{d['mean_confidence']:.3f}" if d["mean_confidence"] is not None else "n/a"
        print(f"{d['source_uri']}: {d['status']}, {d['pages_ok']}/{d['page_count']} pages, confidence {conf}" + (f", {d['error']}" if d["error"] else ""))
        for p in sorted((p for p in pages if p["doc_id"] == d["doc_id"]), key=lambda p: (p["page_index"], p["side"] or "")):
            text = " ".join((p["text"] or "").split())[:70]
            conf = f"{p['confidence']:.3f}" if p["confidence"] is not None else "  -  "
            print(f"  page {p['page_index']}{(' ' + p['side']) if p['side'] else ''}: {p['status']:5} {conf}  {text}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "show":
        return show_output(args.output)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pydantic import ValidationError

    try:
        cfg = config_from_args(args)
    except (ValidationError, OSError, json.JSONDecodeError) as e:
        print(f"folioscan: bad configuration: {e}", file=sys.stderr)
        return 2
    from folioscan.pipeline.job import run_job

    try:
        summary = run_job(cfg)
    except StorageError as e:
        print(f"folioscan: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary.to_dict(), f, indent=2)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
