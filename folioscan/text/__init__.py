"""Book-level text: page furniture, dehyphenation, paragraphs, quality signals.

Pure functions over page records, no I/O; `pipeline/assemble.py` calls `book.book_text`.
"""
