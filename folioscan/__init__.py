"""folioscan: batch digitization of scanned books into Parquet text datasets."""

__version__ = "0.1.0"
