"""Book-level text: page furniture, dehyphenation, paragraphs, quality signals; and `safe`: file
names and OCR text made safe for XML/HTML files and for terminals.

Pure functions over page records, no I/O; `pipeline/assemble.py` calls `book.book_text`.
"""
