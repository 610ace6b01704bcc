"""Arrow schemas of the output tables, one module per table, each with its own version.

The version is stored in each Parquet file's key-value metadata under
``folioscan.schema`` as ``<table>/<version>``; readers need nothing else.
"""
from folioscan.schemas.documents import DOCUMENTS_SCHEMA, DOCUMENTS_VERSION
from folioscan.schemas.pages import PAGES_SCHEMA, PAGES_VERSION

METADATA_KEY = b"folioscan.schema"

__all__ = ["DOCUMENTS_SCHEMA", "DOCUMENTS_VERSION", "PAGES_SCHEMA", "PAGES_VERSION", "METADATA_KEY"]
