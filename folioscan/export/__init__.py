"""`folioscan export OUTPUT DEST --format F`: an output dataset in other formats, one module per format.

Each exporter is `export(output, dest, source_store, dest_store) -> dict` (a summary); it is
looked up here by format name and imported only when used.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

FORMATS: dict[str, str] = {
    "jsonl": "folioscan.export.jsonl:export",
}


def exporter(fmt: str) -> Callable:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {sorted(FORMATS)}")
    module, name = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def run_export(output: str, dest: str, fmt: str, endpoint_url: Optional[str] = None,
               region: Optional[str] = None) -> dict:
    from folioscan.pipeline.storage import store_for

    export = exporter(fmt)
    return export(output, dest, store_for(output, endpoint_url, region), store_for(dest, endpoint_url, region))
