"""PDF rendering of a ``ReportRecord`` with fpdf2, Unicode-safe.

The PDF core fonts only encode latin-1, while reports carry "±", "≥", "µ", "—" and names with accents. A
TrueType font with wide coverage is therefore looked for (matplotlib's bundled DejaVu Sans, then common
system fonts); when none is found, the core font Helvetica is used and characters it cannot show are
replaced by close ASCII spellings ("≥" -> ">="), never dropped silently and never an error.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from napari_radreport.export.content import identifiers, provenance_items, reviewed_by, status_line
from napari_radreport.export.record import ReportRecord

FONT_FAMILY = "ReportSans"
GRAY = (90, 90, 90)
_SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora (newer)
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",  # macOS
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
    "C:/Windows/Fonts/segoeui.ttf",
)
# Close spellings for characters a font lacks (dashes and quotes as escapes: they look like ASCII ones).
_ASCII = {
    "\u2014": "-", "\u2013": "-", "\u2010": "-", "\u2212": "-",  # em dash, en dash, hyphen, minus
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "≥": ">=", "≤": "<=", "≠": "!=", "≈": "~", "\u223c": "~", "→": "->", "←": "<-", "…": "...", "•": "*",
    "‰": "o/oo",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def unicode_font_path() -> Path | None:
    """A TrueType font with wide Unicode coverage found on this machine, or None."""
    candidates = []
    spec = importlib.util.find_spec("matplotlib")  # find, do not import: the font is a plain file
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    candidates += [Path(p) for p in _SYSTEM_FONTS]
    return next((p for p in candidates if p.is_file()), None)


def printable(text: str, has_glyph: Callable[[str], bool]) -> str:
    """``text`` with tabs expanded, control characters dropped and characters the font lacks spelled out."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4))
    out = []
    for char in text:
        if char == "\n" or has_glyph(char):
            out.append(char)
        elif char in _ASCII:
            out.append(_ASCII[char])
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(has_glyph(c) for c in base) else "?")
    return "".join(out)


def _latin1(char: str) -> bool:
    return ord(char) < 256


def render_pdf(record: ReportRecord, *, font: Path | bool | None = True, compress: bool = True) -> bytes:
    """The report as PDF bytes (A4): title, status, identifiers, text, the reviewer's sign-off line,
    provenance; a status footer per page.

    ``font``: True looks for a Unicode TrueType font, a path uses that one, False/None forces the latin-1
    core font. ``compress=False`` leaves the page streams readable (for tests).
    """
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    font_path = unicode_font_path() if font is True else (Path(font) if font else None)
    status = status_line(record)

    class _ReportPDF(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(size=8)
            self.set_text_color(110)
            self.cell(0, 5, text(f"{record.title} - {status} - page {self.page_no()}/{{nb}}"), align="C")

    pdf = _ReportPDF(format="A4")
    pdf.set_compression(compress)
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(True, margin=18)
    if font_path is not None:
        pdf.add_font(FONT_FAMILY, "", str(font_path))
        pdf.set_font(FONT_FAMILY, size=11)
        loaded = pdf.current_font  # an object from fpdf2 2.7.x on, a dict before
        cmap = loaded["cmap"] if isinstance(loaded, dict) else loaded.cmap

        def has_glyph(char: str) -> bool:
            return ord(char) in cmap
    else:
        pdf.set_font("Helvetica", size=11)
        has_glyph = _latin1

    def text(value: str) -> str:
        return printable(value, has_glyph)

    pdf.set_title(text(record.title))
    pdf.set_subject(text(status))
    pdf.set_creator("napari-radreport")
    pdf.add_page()

    def paragraph(value: str, size: float, height: float, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        pdf.set_font(size=size)
        pdf.set_text_color(*color)
        pdf.multi_cell(0, height, text(value), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    paragraph(record.title, 17, 9)
    pdf.ln(1)
    settled = record.reviewed and record.complete
    paragraph(f"Status: {status}", 11, 6, color=(0, 0, 0) if settled else (170, 0, 0))
    pdf.ln(2)
    for label, value in identifiers(record):
        paragraph(f"{label}: {value}", 9.5, 5)
    pdf.ln(3)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(4)
    paragraph(record.final_text.strip(), 11, 6)
    if record.reviewed:  # the signature under the text
        pdf.ln(4)
        paragraph(reviewed_by(record.reviewer, record.reviewed_at), 11, 6)
    pdf.ln(6)
    paragraph("Provenance", 9, 5, color=GRAY)
    for label, value in provenance_items(record):
        paragraph(f"{label}: {value}", 8.5, 4.5, color=GRAY)
    return bytes(pdf.output())
