"""One definition per column: a table is a list of named, typed, documented columns.

The Arrow schema, the Parquet metadata and the row check are all derived from it, so a
column misspelt or forgotten by the code that builds rows is an error, never a silent null.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"folioscan.schema"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str = ""


def col(name: str, type: pa.DataType, doc: str = "") -> Column:
    return Column(name, type, doc)


class RowError(ValueError):
    """A row does not have exactly the table's columns."""


class Table:
    def __init__(self, name: str, version: int, columns: Sequence[Column]):
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table {name}: columns declared twice: {dupes}")
        self.name, self.version, self.columns = name, version, tuple(columns)
        self.names = tuple(names)
        self._names = frozenset(names)
        self.schema = pa.schema([pa.field(c.name, c.type, metadata={b"doc": c.doc.encode()} if c.doc else None)
                                 for c in columns])

    @property
    def tag(self) -> bytes:
        return f"{self.name}/{self.version}".encode()

    def check(self, row: dict) -> dict:
        keys = row.keys()
        if keys != self._names:
            missing, extra = sorted(self._names - keys), sorted(keys - self._names)
            raise RowError(f"{self.name} row: missing columns {missing}, unknown columns {extra}")
        return row

    @property
    def tagged_schema(self) -> pa.Schema:
        """The Arrow schema as written to Parquet: with the table's name and version in its metadata."""
        return self.schema.with_metadata({METADATA_KEY: self.tag})

    def to_arrow(self, rows: Iterable[dict]) -> pa.Table:
        return pa.Table.from_pylist([self.check(r) for r in rows], schema=self.tagged_schema)

    def to_parquet_bytes(self, rows: Iterable[dict]) -> bytes:
        buf = io.BytesIO()
        pq.write_table(self.to_arrow(rows), buf, compression="zstd")
        return buf.getvalue()

    def docs(self) -> list[tuple[str, str, str]]:
        """(name, type, doc) per column, for the README and `folioscan schema`."""
        return [(c.name, str(c.type), c.doc) for c in self.columns]
