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
