"""Exams that attack the anonymiser's resources, built from raw PDF objects with PyMuPDF's
low-level object API (not the synthetic generator's drawing code): a huge page-2 media box, a huge
Flate image on page 1, a line that would make a backtracking pattern explode."""

from __future__ import annotations

import zlib

import pymupdf

from medserve.anonymize.synthetic import generate_exam


# "crm" + spaces + "ab" + spaces: the line that took 58 s (2,000 spaces) in the CRM pattern of
# the first anonymiser (`crm\s*[-/:.]?\s*(?:[a-z]{2}\s*...)?`, three overlapping `\s*`).
def crm_line(spaces: int) -> str:
    return "crm" + " " * spaces + "ab" + " " * spaces


def _base(seed: int) -> pymupdf.Document:
    return pymupdf.open("pdf", generate_exam(seed=seed).pdf)


def with_page_two_media_box(width_pt: float, height_pt: float, seed: int = 7) -> bytes:
    """A valid exam whose page 2 has a media box (and no crop box) of this size."""
    document = _base(seed)
    xref = document[1].xref
    document.xref_set_key(xref, "CropBox", "null")
    document.xref_set_key(xref, "MediaBox", f"[0 0 {width_pt} {height_pt}]")
    return document.tobytes()


def _zeros_flate(size: int) -> bytes:
    """zlib of `size` zero bytes, compressed in 16 MiB steps (the bytes never exist at once)."""
    compressor = zlib.compressobj(9)
    step = 16 * 1024 * 1024
    chunks = [compressor.compress(bytes(min(step, size - done))) for done in range(0, size, step)]
    return b"".join(chunks) + compressor.flush()


def with_page_one_image(side_px: int, seed: int = 7) -> bytes:
    """A valid exam with a `side_px`² 8-bit grey Flate image (all black) drawn on page 1."""
    document = _base(seed)
    page = document[0]
    xref = document.get_new_xref()
    document.update_object(
        xref,
        f"<< /Type /XObject /Subtype /Image /Width {side_px} /Height {side_px} "
        "/ColorSpace /DeviceGray /BitsPerComponent 8 >>",
    )
    # compress=False: the stream goes in as given, its Filter is set by hand.
    document.update_stream(xref, _zeros_flate(side_px * side_px), compress=False)
    document.xref_set_key(xref, "Filter", "/FlateDecode")
    resources = document.xref_get_key(page.xref, "Resources")
    if resources[0] == "xref":
        holder = int(resources[1].split()[0])
        document.xref_set_key(holder, "XObject/ImBomb", f"{xref} 0 R")
    else:
        document.xref_set_key(page.xref, "Resources/XObject/ImBomb", f"{xref} 0 R")
    stream = document.get_new_xref()
    document.update_object(stream, "<< >>")
    document.update_stream(stream, b"q 200 0 0 100 40 300 cm /ImBomb Do Q")
    contents = document.xref_get_key(page.xref, "Contents")
    existing = contents[1].strip("[]") if contents[0] == "array" else contents[1]
    document.xref_set_key(page.xref, "Contents", f"[{existing} {stream} 0 R]")
    return document.tobytes()


def with_inline_image(side_px: int, seed: int = 7) -> bytes:
    """A valid exam whose page 1 draws a `side_px`² grey inline image (`BI ... ID ... EI` in a
    content stream of its own: no image object, nothing for an object scan to find)."""
    document = _base(seed)
    page = document[0]
    head = f"q 200 0 0 100 40 300 cm BI /W {side_px} /H {side_px} /CS /G /BPC 8 /F /Fl ID "
    content = head.encode() + _zeros_flate(side_px * side_px) + b"\nEI Q"
    stream = document.get_new_xref()
    document.update_object(stream, "<< >>")
    document.update_stream(stream, content)
    contents = document.xref_get_key(page.xref, "Contents")
    existing = contents[1].strip("[]") if contents[0] == "array" else contents[1]
    document.xref_set_key(page.xref, "Contents", f"[{existing} {stream} 0 R]")
    return document.tobytes()


def with_inflating_content(decoded_bytes: int, seed: int = 7) -> bytes:
    """A valid exam whose page 1 has one more content stream: `decoded_bytes` spaces (valid
    content that draws nothing), Flate-compressed to about a thousandth of that."""
    document = _base(seed)
    page = document[0]
    compressor = zlib.compressobj(9)
    step = 16 * 1024 * 1024
    data = b"".join(
        compressor.compress(b" " * min(step, decoded_bytes - done))
        for done in range(0, decoded_bytes, step)
    )
    stream = document.get_new_xref()
    document.update_object(stream, "<< >>")
    document.update_stream(stream, data + compressor.flush(), compress=False)
    document.xref_set_key(stream, "Filter", "/FlateDecode")
    contents = document.xref_get_key(page.xref, "Contents")
    existing = contents[1].strip("[]") if contents[0] == "array" else contents[1]
    document.xref_set_key(page.xref, "Contents", f"[{existing} {stream} 0 R]")
    return document.tobytes()


def with_tiny_text(line: str, seed: int = 7) -> bytes:
    """A valid exam with `line` drawn in 0.05 pt text in its report region on page 1."""
    document = _base(seed)
    page = document[0]
    # Below the "Laudo" label: inside the report region, where the recognisers run on it.
    (label,) = page.search_for("Laudo")[:1]
    page.insert_text(pymupdf.Point(label.x0, label.y1 + 8), line, fontsize=0.05)
    return document.tobytes()
