"""Hand-assembled PDFs for tests and benchmarks (no PDF writer needed)."""

from __future__ import annotations


def assemble_pdf(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    """A PDF from raw object bodies (object 1 is the catalog), with a correct xref table.

    >>> assemble_pdf([b"<< /Type /Catalog >>"]).splitlines()[:3]
    [b'%PDF-1.4', b'1 0 obj', b'<< /Type /Catalog >>']
    """
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (len(objects) + 1, trailer_extra)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def blank_pdf(pages: int, width: float = 612, height: float = 792) -> bytes:
    """A PDF of ``pages`` empty pages of ``width`` × ``height`` points (a few bytes each, however
    large the pages: what a hostile request sends to make a server render megapixels).

    >>> import pypdfium2
    >>> document = pypdfium2.PdfDocument(blank_pdf(3, 1000, 1000))
    >>> len(document), document.get_page_size(0)
    (3, (1000.0, 1000.0))
    """
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] >>" % (width, height)
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            *[page] * pages,
        ]
    )
