"""ECG exam PDF anonymisation: the anonymiser library and its Ray Data / process-pool pipeline."""

import os

# Tesseract (inside PyMuPDF) would start an OpenMP thread per core for every OCR call; with one
# anonymising process per core that only adds contention. libgomp reads this when PyMuPDF loads,
# and this package is imported before any of its modules import pymupdf.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
