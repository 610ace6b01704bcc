"""Output tables, one module per table, each a list of columns declared once (see table.py).

The version is stored in each Parquet file's key-value metadata under ``folioscan.schema``
as ``<table>/<version>``; readers need nothing else.
"""
from folioscan.schemas.documents import DOCUMENTS, DOCUMENTS_SCHEMA, DOCUMENTS_VERSION
from folioscan.schemas.pages import PAGES, PAGES_SCHEMA, PAGES_VERSION
from folioscan.schemas.table import METADATA_KEY, RowError, Table

__all__ = ["DOCUMENTS", "DOCUMENTS_SCHEMA", "DOCUMENTS_VERSION", "PAGES", "PAGES_SCHEMA", "PAGES_VERSION",
           "METADATA_KEY", "RowError", "Table"]
