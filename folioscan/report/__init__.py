"""`folioscan report OUTPUT`: one self-contained HTML file about an output dataset.

Why hand-written SVG rather than a plotting library: the file has no script at all (nothing
to fail in the browser, nothing fetched at view time) and stays small (tens of kilobytes
plus the thumbnails; plotly.js inline alone is several megabytes).
"""
from __future__ import annotations

import os
from typing import Optional

from folioscan.pipeline.storage import store_for


def write_report(output: str, out_file: str, endpoint_url: Optional[str] = None, region: Optional[str] = None,
                 flag_below: Optional[float] = None, worst: int = 12) -> str:
    from folioscan.report.data import collect
    from folioscan.report.render import render
    from folioscan.report.thumbnails import Thumbnailer

    store = store_for(output, endpoint_url, region)
    data = collect(store, output, flag_below=flag_below, worst=worst)
    thumbnail = Thumbnailer(endpoint_url, region)
    for page in data.worst:
        page.thumbnail, page.thumbnail_error = thumbnail(page.source_uri, page.page_index)
    html = render(data)
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as f:
        f.write(html)
    return out_file
