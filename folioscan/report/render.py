"""The report as one HTML page: inline CSS, inline SVG, inline JPEG thumbnails; no script, no network."""
from __future__ import annotations

from datetime import datetime, timezone

from folioscan import __version__
from folioscan.records import page_label
from folioscan.report import charts
from folioscan.report.data import HIST_BINS, STAGES, ReportData
from folioscan.text.safe import html as escape  # visible escapes for control characters, then markup

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f4f5f7}
main{max-width:1220px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:0 0 8px}
.sub{color:#666;margin-bottom:16px;word-break:break-all}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:16px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;min-width:120px;box-shadow:0 1px 2px #0002}
.tile b{display:block;font-size:20px}.tile span{color:#666;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
section{background:#fff;border-radius:8px;padding:14px 16px;box-shadow:0 1px 2px #0002;overflow-x:auto}
.note{color:#666;font-size:12px;margin:6px 0 0}
.none{color:#666;font-style:italic;padding:14px 0}
table{border-collapse:collapse;font-size:13px;width:100%}td,th{text-align:left;padding:3px 8px 3px 0;vertical-align:top}
th{color:#555;font-weight:600;border-bottom:1px solid #ddd}
.pages{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px;margin-top:8px}
.page{display:flex;gap:10px;border:1px solid #e4e4e4;border-radius:6px;padding:8px}
.page img{width:130px;height:auto;border:1px solid #ccc;flex:none;align-self:flex-start}
.page .missing{width:130px;min-height:90px;flex:none;background:#fbeaea;color:#8a2b2b;font-size:11px;padding:6px;box-sizing:border-box}
.page pre{white-space:pre-wrap;font:11px/1.35 ui-monospace,Menlo,Consolas,monospace;margin:4px 0 0;max-height:190px;overflow:auto}
.conf{font-weight:700;color:#b8463f}.uri{color:#555;font-size:12px;word-break:break-all}
"""


def _tile(value: str, label: str) -> str:
    return f'<div class="tile"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _section(title: str, body: str, note: str = "") -> str:
    return f'<section><h2>{escape(title)}</h2>{body}' + (f'<p class="note">{note}</p>' if note else "") + "</section>"


def _throughput(d: ReportData) -> str:
    """Pages/s over time per run (latest six) from the pages' completion times; a run written before
    `completed_at` existed falls back to one point per committed shard, and the note says so."""
    title = "Pages per second over time"
    runs = sorted(d.runs.items())[-6:]
    timed = {run_id: run.throughput() for run_id, run in runs}
    series = [(run_id, t.points) for run_id, t in timed.items() if t is not None and t.points]
    by_commit = [(run_id, run.rate_series()) for run_id, run in runs if timed[run_id] is None and run.rate_series()]
    if not series and not by_commit:
        return _section(title, '<div class="none">no page with a completion time, no committed shard with a time</div>')
    latest = max((run_id for run_id, t in timed.items() if t is not None), default=None)
    reference = (timed[latest].overall, f"run {latest}: {timed[latest].overall:.2f} pages/s") if latest else None
    chart = charts.lines(series + by_commit, "minutes since the run started", "pages/s", "pages per second over time",
                         reference=reference)
    notes = []
    if latest:
        t = timed[latest]
        notes.append(f'Run {escape(latest)}: <span class="overall">{t.overall:.2f} pages/s</span> overall = '
                     f'{t.pages:,} pages / {t.seconds:,.1f} s from the run\'s start ({escape(t.start_from)}) to its last '
                     f'page, the run summary\'s figure (dashed line).')
    if series:
        notes.append("Each point: pages completed (pages.completed_at) over the stretch of time ending there, a minute "
                     "for runs of 10 minutes or more, a twelfth of the run for shorter ones.")
    if by_commit:
        notes.append(f"{', '.join(escape(r) for r, _ in by_commit)}: pages without completed_at (written before it "
                     "existed): one point per committed shard (documents.processed_at).")
    return _section(title, chart, " ".join(notes) + " One line per run (latest six).")


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def _stages(d: ReportData) -> str:
    body, notes = "", []
    if d.stage_pages:
        items = [(name, d.stage_ms[name] / 1000, f"{_fmt_s(d.stage_ms[name] / 1000)} · "
                  f"{d.stage_ms[name] / d.stage_pages:.0f} ms/page") for name in ("load", "clean", "ocr")]
        body += "<h3 style='font-size:13px;margin:4px 0'>From the pages table (worker time, all runs)</h3>"
        body += charts.hbars(items, "time per stage from the pages table")
        notes.append(f"Summed over {d.stage_pages:,} pages that carry load_ms, prep_ms and ocr_ms; "
                     "the write stage is not a page column and comes from run records.")
    recorded = [(run_id, run.stages) for run_id, run in sorted(d.runs.items()) if run.stages]
    for run_id, stages in recorded[-3:]:
        items = [(name, float(s.get("seconds") or 0), f"{_fmt_s(float(s.get('seconds') or 0))} · {s.get('pages', 0):,} pages")
                 for name, s in stages.items()]
        items.sort(key=lambda it: STAGES.index(it[0]) if it[0] in STAGES else len(STAGES))
        body += f"<h3 style='font-size:13px;margin:10px 0 4px'>Run record {escape(run_id)}</h3>"
        body += charts.hbars(items, f"time per stage of run {run_id}")
    if not recorded:
        notes.append("No run record here holds per-stage times (summary.stages).")
    if not body:
        body = '<div class="none">no stage timings in this output</div>'
    return _section("Time per stage", body, " ".join(notes))


def _confidence(d: ReportData) -> str:
    if not d.ok_pages:
        return _section("Confidence", '<div class="none">no OCR\'d page has a confidence</div>')
    chart = charts.histogram(d.histogram.tolist(), d.flag_below, "confidence histogram")
    share = d.flagged / d.ok_pages
    return _section("Confidence", chart,
                    f"{d.ok_pages:,} OCR'd pages in {HIST_BINS} bins; {d.flagged:,} ({share:.1%}) under the flag "
                    f"threshold {d.flag_below:.2f} ({escape(d.flag_source)}).")


def _rereads(d: ReportData) -> str:
    pages = sum(v for k, v in d.attempts_per_page.items() if k > 1)
    if not pages:
        return "<p>No page was read twice.</p>"
    rows = "".join(f"<tr><td>{escape(r)}</td><td>{n:,}</td></tr>" for r, n in d.escalation_reasons.most_common())
    return (f"<p>{pages:,} of {d.pages:,} pages ({pages / max(d.pages, 1):.1%}) were re-read at least once.</p>"
            f"<table><tr><th>why a page was re-read</th><th>reads</th></tr>{rows}</table>")


def _vlm(d: ReportData) -> str:
    title = "Vision-token budgets and escalations"
    if not d.vlm_pages:
        engines = ", ".join(escape(str(e)) for e in d.engines if e) or "none"
        return _section(title, f'<div class="none">no VLM pages (engine: {engines}): budgets and vision tokens '
                               f'apply to the VLM engines only</div>{_rereads(d)}')
    total_tokens = sum(d.budget_tokens.values()) or 1
    budgets = sorted(d.budgets, key=lambda b: -d.budgets[b])
    body = charts.hbars([(b, d.budgets[b], f"{d.budgets[b]:,} pages · {d.budget_tokens[b] / total_tokens:.0%} of tokens")
                         for b in budgets], "pages per accepted budget")
    body += f"<p>{d.vlm_pages:,} VLM pages; {sum(d.budget_tokens.values()):,} vision tokens over all reads.</p>"
    return _section(title, body + _rereads(d))


def _routing(d: ReportData) -> str:
    """The routing share (docs/routing.md): pages sent to the second engine, kept or fallen back, and why."""
    if not d.routed:
        return ""
    kept, back = d.routed_kept, d.routed - d.routed_kept
    engines = ", ".join(escape(str(e)) for e in d.second_engines)
    body = charts.hbars([("kept the second reading", kept, f"{kept:,} pages"),
                         ("fell back to the first", back, f"{back:,} pages")], "routed pages by outcome")
    why = "".join(f"<tr><td>routed: {escape(r)}</td><td>{n:,}</td></tr>" for r, n in d.route_reasons.most_common())
    why += "".join(f"<tr><td>fell back: {escape(r)}</td><td>{n:,}</td></tr>" for r, n in d.fallback_reasons.most_common())
    body += f"<table><tr><th>why</th><th>pages</th></tr>{why}</table>"
    return _section("Routing", body, f"{d.routed:,} of {d.pages:,} pages ({d.routed / max(d.pages, 1):.1%}) routed to "
                                     f"the second engine ({engines}); the page rows keep both readings (`readings`).")


def _errors(d: ReportData) -> str:
    failed = d.page_status.get("error", 0)
    doc_failed = d.doc_status.get("error", 0) + d.doc_status.get("partial", 0)
    if not failed and not doc_failed and not d.unreadable_parts:
        return _section("Errors", '<div class="none">no page or book in error</div>')
    kinds = sorted(set(d.page_error_kinds) | set(d.doc_error_kinds))
    body = charts.hbars([(k, d.page_error_kinds[k] + d.doc_error_kinds[k],
                          f"{d.page_error_kinds[k]:,} pages · {d.doc_error_kinds[k]:,} books") for k in kinds],
                        "error kinds", colours=("#b8463f", "#d9822b", "#7d5ba6"))
    both = d.error_messages + d.book_error_messages
    rows = "".join(f"<tr><td>{d.error_messages[msg]:,}</td><td>{d.book_error_messages[msg]:,}</td><td>{escape(msg)}</td>"
                   f"<td class='uri'>{escape(d.error_example[msg])}</td></tr>" for msg, _ in both.most_common(8))
    if rows:
        body += ("<table><tr><th>pages</th><th>books</th><th>error (the object named as &lt;source&gt;)</th><th>e.g.</th></tr>"
                 f"{rows}</table>")
    for part in d.unreadable_parts:
        body += f"<p class='note'>unreadable: {escape(part)}</p>"
    return _section("Errors", body, "transient: worth retrying (a rerun retries them); permanent: bad input data.")


def _worst(d: ReportData) -> str:
    if not d.worst:
        return _section("Lowest-confidence pages", '<div class="none">no OCR\'d pages</div>')
    cards = []
    for p in d.worst:
        label = escape(page_label(p.page_index, p.side))
        picture = (f'<img alt="{label}" src="{p.thumbnail}">' if p.thumbnail
                   else f'<div class="missing">no thumbnail: {escape(p.thumbnail_error or "not rendered")}</div>')
        cards.append(f'<div class="page">{picture}<div><span class="conf">{p.confidence:.3f}</span> · '
                     f'{label}<div class="uri">{escape(p.source_uri)}</div>'
                     f'<pre>{escape(p.text, keep_newlines=True) or "(empty)"}</pre></div></div>')
    return _section(f"Lowest-confidence pages ({len(d.worst)})", f'<div class="pages">{"".join(cards)}</div>',
                    "Thumbnails re-rendered from the source; the text is what the engine read (first characters).")


def _accuracy(d: ReportData) -> str:
    a = d.accuracy
    if not a:
        return ""
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    rows = [("all", a["overall"])] + list(a["books"].items())
    table = ("<table><tr><th>book</th><th>pages</th><th>CER mean</th><th>CER median</th><th>CER pooled</th><th>WER mean</th></tr>"
             + "".join(f"<tr><td>{escape(name)}</td><td>{f['pages']}</td><td>{pct(f['cer_mean'])}</td><td>{pct(f['cer_median'])}</td>"
                       f"<td>{pct(f['cer_pooled'])}</td><td>{pct(f['wer_mean'])}</td></tr>" for name, f in rows[:21])
             + (f'<tr><td colspan="6">{len(rows) - 21} more books: OUTPUT/_eval/latest.json</td></tr>' if len(rows) > 21 else "")
             + "</table>")
    t = a["threshold"]
    auroc = "n/a (needs good and bad pages)" if a["auroc"] is None else f"{a['auroc']:.3f}"
    keep = (f"no threshold keeps bad pages at or under {pct(a['max_bad_share'])}" if t["threshold"] is None else
            f"accepting confidence &ge; {t['threshold']:.3f} keeps {t['accepted_pages']} pages ({100 * t['accepted_share']:.1f}%), "
            f"{pct(t['bad_share_accepted'])} of them bad")
    rel = ("<table><tr><th>confidence</th><th>pages</th><th>mean confidence</th><th>share good</th></tr>"
           + "".join(f"<tr><td>{r['bin']}</td><td>{r['pages']}</td><td>{r['mean_confidence']:.3f}</td><td>{r['share_good']:.3f}</td></tr>"
                     for r in a["reliability"]) + "</table>")
    body = (f"{table}<p>bad pages (CER &gt; {pct(a['bad_above'])}): {a['bad_pages']}; confidence AUROC {escape(auroc)}; "
            f"{keep}.</p>{rel}")
    return _section("Accuracy", body, f"From folioscan eval of {escape(a['created'])} against {escape(a['truth'])}: "
                                      f"{a['overall']['pages']} pages with ground truth; normalisation: {escape(a['normalisation']['always'])}"
                                      f"{', case folded' if a['normalisation']['fold_case'] else ''}"
                                      f"{', punctuation folded' if a['normalisation']['fold_punctuation'] else ''}.")


def render(d: ReportData) -> str:
    docs = sum(d.doc_status.values())
    latest = max(d.runs, default="")
    tiles = [
        _tile(f"{docs:,}", f"books ({d.doc_status.get('ok', 0):,} ok, {d.doc_status.get('partial', 0):,} partial, "
                           f"{d.doc_status.get('error', 0):,} error)"),
        _tile(f"{d.pages:,}", f"pages ({d.page_status.get('blank', 0):,} blank, {d.page_status.get('error', 0):,} error)"),
        _tile(f"{d.flagged:,}", f"pages under confidence {d.flag_below:.2f}"),
        _tile(f"{len(d.runs):,}", "runs"),
    ]
    if d.routed:
        tiles.append(_tile(f"{d.routed / max(d.pages, 1):.1%}", f"pages routed ({d.routed:,}; {d.routed_kept:,} kept the second reading)"))
    summary = (d.runs[latest].record or {}).get("summary") if latest else None
    if summary and summary.get("pages_per_s") is not None:
        tiles.append(_tile(f"{summary['pages_per_s']:.2f}", f"pages/s, run {latest}"))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f'<main><h1>folioscan run report</h1><div class="sub">{escape(d.output)} · generated {generated} by '
            f'folioscan {escape(__version__)}</div><div class="tiles">{"".join(tiles)}</div>'
            f'<div class="grid">{_accuracy(d)}{_throughput(d)}{_stages(d)}{_confidence(d)}{_errors(d)}{_routing(d)}{_vlm(d)}</div>'
            f'<div style="margin-top:14px">{_worst(d)}</div></main>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>folioscan report: {escape(d.output)}</title>'
            f'<style>{_CSS}</style></head><body>{body}</body></html>')
