"""A minimal text-only PDF writer, so the project can write the PDFs it ships and tests.

One Helvetica font, one text block per page, real cross-reference table: enough for any
PDF reader (and ``pypdf``) to show and extract the text and its page numbers.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

LINE_WIDTH = 90
LINES_PER_PAGE = 52


def _escape(text: str) -> str:
    ascii_text = text.encode("latin-1", "replace").decode("latin-1")
    return ascii_text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrap(text: str) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines():
        lines += textwrap.wrap(paragraph, LINE_WIDTH) or [""]
    return lines


def write_pdf(path: Path, pages: list[str], title: str = "") -> None:
    """Write ``pages`` (one string each, wrapped and cut to fit) as a PDF at ``path``."""
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: page tree (filled in below)
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")  # 3
    page_ids: list[int] = []
    for page in pages:
        lines = _wrap(page)[:LINES_PER_PAGE]
        body = (
            "BT /F1 10 Tf 14 TL 50 790 Td "
            + " ".join(f"({_escape(line)}) '" for line in lines)
            + " ET"
        )
        stream = body.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_id
        )
        page_ids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids).encode()
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info_id = None
    if title:
        objects.append(b"<< /Title (%s) >>" % _escape(title).encode("latin-1"))
        info_id = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, entry in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + entry + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if info_id:
        trailer += b" /Info %d 0 R" % info_id
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
