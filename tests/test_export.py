"""Report export: every format written and read back, never-overwrite, atomic writes, one-line errors, no
source paths unless asked, incomplete reports marked as such."""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from napari_radreport.export import (
    FORMATS,
    ExportError,
    Provenance,
    ReportRecord,
    StudyReference,
    export_report,
    writers,
)
from napari_radreport.export import pdf as pdf_module
from napari_radreport.export.content import sections

FINDINGS = "3.2 cm spiculated mass in the left lower lobe, density ≥ 40 HU ± 5 — café 5 µm.\n" \
    "No pleural effusion."
IMPRESSION = "Suspicious for primary lung malignancy; 37 °C."
FINAL = f"Findings: {FINDINGS}\nImpression: {IMPRESSION}"
DRAFT = "Findings: 3 cm mass in the left lower lobe.\nNo pleural effusion.\n" \
    "Impression: Suspicious for malignancy."
HASH = "0123456789abcdef" * 4
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _provenance() -> Provenance:
    return Provenance(model_name="M3D-LaMed-Phi-3-4B", weights_sha256=HASH, task="report:findings+impression",
                      generated_at="2025-05-01T10:00:00+00:00", software_version="0.1.0")


@pytest.fixture
def chest_record(chest_study) -> ReportRecord:
    return ReportRecord(final_text=FINAL, ai_draft=DRAFT, study=StudyReference.from_study(chest_study),
                        provenance=_provenance())


@pytest.fixture(scope="module")
def nifti_study(abdomen_nifti):
    from napari_radreport import load_study

    return load_study(abdomen_nifti)


@pytest.fixture
def nifti_record(nifti_study) -> ReportRecord:
    return ReportRecord(final_text=FINAL, ai_draft=DRAFT, reviewed=True,
                        study=StudyReference.from_study(nifti_study), provenance=_provenance())


# -- a small PDF text extractor (no pypdf): page streams, decoded through the font's ToUnicode map -

def _streams(data: bytes) -> dict[int, bytes]:
    """Object number -> decoded stream bytes (objects are walked in order, skipping over stream data)."""
    found, pos = {}, 0
    while match := re.compile(rb"(\d+) 0 obj\b").search(data, pos):
        head_end = data.find(b"endobj", match.end())
        start = data.find(b"stream", match.end(), head_end)
        pos = head_end + 6
        if start < 0:
            continue
        head = data[match.end():start]
        length = int(re.search(rb"/Length (\d+)", head).group(1))
        body_start = start + 6 + (2 if data[start + 6:start + 8] == b"\r\n" else 1)
        raw = data[body_start:body_start + length]
        found[int(match.group(1))] = zlib.decompress(raw) if b"/FlateDecode" in head else raw
        pos = data.find(b"endobj", body_start + length) + 6
    return found


def _literal_strings(content: bytes) -> list[bytes]:
    """The (...) strings of a content stream, unescaped."""
    escapes = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}
    out, i = [], 0
    while (i := content.find(b"(", i)) >= 0:
        buf, depth, i = bytearray(), 1, i + 1
        while depth:
            c = content[i]
            if c == 0x5C:  # backslash
                nxt = content[i + 1]
                if 0x30 <= nxt <= 0x37:
                    digits = re.match(rb"[0-7]{1,3}", content[i + 1:i + 4]).group(0)
                    buf.append(int(digits, 8) & 0xFF)
                    i += 1 + len(digits)
                    continue
                buf += escapes.get(nxt, bytes([nxt]) if nxt != 0x0A else b"")
                i += 2
                continue
            depth += (c == 0x28) - (c == 0x29)
            if depth:
                buf.append(c)
            i += 1
        out.append(bytes(buf))
    return out


def pdf_text(data: bytes) -> str:
    """Text shown on the pages, whitespace collapsed (lines wrapped by the PDF join with one space)."""
    streams = _streams(data)
    cmap: dict[int, str] = {}
    for body in streams.values():
        if b"beginbfchar" in body:
            pairs = re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", body.split(b"endcodespacerange")[1])
            cmap.update((int(src, 16), bytes.fromhex(dst.decode()).decode("utf-16-be")) for src, dst in pairs)
    pages = [streams[int(n)] for n in re.findall(rb"/Contents (\d+) 0 R", data)]
    lines = []
    for content in pages:
        for s in _literal_strings(content):
            if cmap:  # a TrueType font: two-byte glyph codes
                codes = (int.from_bytes(s[k:k + 2], "big") for k in range(0, len(s), 2))
                lines.append("".join(cmap.get(code, "\ufffd") for code in codes))
            else:
                lines.append(s.decode("latin-1"))
    return " ".join(" ".join(lines).split())


# -- text formats ----------------------------------------------------------------------------------

def test_formats():
    assert FORMATS == ("txt", "md", "json", "pdf", "sr")


def test_txt_has_title_status_identifiers_text_and_provenance(tmp_path, chest_record):
    out = export_report(chest_record, tmp_path / "report.txt")
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "report.txt"
    assert text.startswith("Radiology report (draft)\n")
    assert "AI draft, not reviewed" in text and "Reviewed by the user" not in text
    assert FINAL in text
    assert "1.3.6.1.4.1.14519.5.2.1.6655.2359.165554066086145834377508507990" in text
    assert "2007-04-04" in text and "CT" in text and "Lung_Dx-A0001" in text
    assert "M3D-LaMed-Phi-3-4B" in text and HASH[:12] in text and HASH[:13] not in text
    assert "2025-05-01T10:00:00+00:00" in text and "0.1.0" in text
    assert "Accession" not in text  # empty identifiers are left out


def test_txt_reviewed_status(tmp_path, nifti_record):
    text = export_report(nifti_record, tmp_path / "r.txt").read_text(encoding="utf-8")
    assert "Reviewed by the user" in text and "not reviewed" not in text
    assert "Study UID" not in text  # NIfTI: no UID to show


def test_md_heading_table_text_and_provenance_list(tmp_path, chest_record):
    md = export_report(chest_record, tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Radiology report (draft)\n")
    assert "**Status:** AI draft, not reviewed" in md
    assert "| Study UID | 1.3.6.1.4.1.14519.5.2.1.6655.2359.165554066086145834377508507990 |" in md
    for line in FINAL.splitlines():
        assert f"\n{line}  \n" in md  # hard line breaks keep the report's lines apart when rendered
    assert "- Model: M3D-LaMed-Phi-3-4B\n" in md and f"`{HASH[:12]}`" in md


def test_json_round_trip_with_diff_and_provenance(tmp_path, chest_record):
    data = json.loads((export_report(chest_record, tmp_path / "report.json")).read_text(encoding="utf-8"))
    assert data["format"] == "napari-radreport report" and data["format_version"] == 3
    exported = datetime.fromisoformat(data["exported_at"])
    assert exported.utcoffset() == timedelta(0)
    assert {k: data[k] for k in chest_record.as_dict()} == chest_record.as_dict()
    assert data["provenance"]["weights_sha256"] == HASH
    assert data["study"]["patient_id"] == "Lung_Dx-A0001"
    assert data["complete"] is True and data["status"] == "AI draft, not reviewed"
    diff = data["diff"].splitlines()
    assert diff[:2] == ["--- ai_draft", "+++ final_text"]
    assert "-Findings: 3 cm mass in the left lower lobe." in diff
    assert f"+Findings: {FINDINGS.splitlines()[0]}" in diff
    assert " No pleural effusion." in diff  # unchanged context line
    assert "≥" in (tmp_path / "report.json").read_text(encoding="utf-8")  # ensure_ascii off


def test_json_diff_empty_when_unchanged(tmp_path):
    record = ReportRecord(final_text=DRAFT, ai_draft=DRAFT)
    assert json.loads(export_report(record, tmp_path / "r.json").read_text())["diff"] == ""


def test_sections_split_on_findings_and_impression():
    assert sections(FINAL) == [("Findings", FINDINGS), ("Impression", IMPRESSION)]
    assert sections("Normal chest.\n") == [("Findings", "Normal chest.")]
    assert sections("Technique: CT.\nIMPRESSIONS:\nNormal.") == [("Findings", "Technique: CT."),
                                                                 ("Impression", "Normal.")]


# -- PDF -------------------------------------------------------------------------------------------

def test_pdf_with_unicode_font(tmp_path, chest_record):
    if pdf_module.unicode_font_path() is None:
        pytest.skip("no Unicode TrueType font on this machine (DejaVu Sans, Arial...)")
    chest_record.final_text += "\nComment: 肺 nodule."  # no glyph in DejaVu Sans: replaced, not a crash
    data = export_report(chest_record, tmp_path / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    assert "Radiology report (draft)" in text and "Status: AI draft, not reviewed" in text
    for phrase in (*FINAL.splitlines(), "Study date: 2007-04-04", f"Weights SHA-256: {HASH[:12]}",
                   "Comment: ? nodule."):
        assert phrase in text, phrase


def test_pdf_latin1_fallback_replaces_what_it_cannot_encode(tmp_path, chest_record, monkeypatch):
    monkeypatch.setattr(pdf_module, "unicode_font_path", lambda: None)
    chest_record.final_text += "\nComment: 肺 nodule ≤ 3 mm."
    data = export_report(chest_record, tmp_path / "report.pdf").read_bytes()
    text = pdf_text(data)
    assert b"/BaseFont /Helvetica" in data
    assert "density >= 40 HU ± 5 - café 5 µm." in text
    assert "Comment: ? nodule <= 3 mm." in text and IMPRESSION in text


def test_pdf_long_report_breaks_pages(tmp_path):
    lines = [f"Line {i}: no acute abnormality in this region." for i in range(150)]
    data = export_report(ReportRecord(final_text="\n".join(lines)), tmp_path / "long.pdf").read_bytes()
    assert len(re.findall(rb"/Type /Page\b", data)) >= 3
    text = pdf_text(data)
    assert "Line 0: no acute" in text and "Line 149: no acute abnormality in this region." in text
    assert "page 3/" in text


# -- DICOM SR --------------------------------------------------------------------------------------

def _text_items(item, path=()) -> list[tuple[tuple[str, ...], str]]:
    """(concept meanings from the root, text) for every TEXT content item."""
    found = []
    for child in item.get("ContentSequence", []):
        names = (*path, child.ConceptNameCodeSequence[0].CodeMeaning)
        if child.ValueType == "TEXT":
            found.append((names, child.TextValue))
        found += _text_items(child, names)
    return found


def test_sr_joins_the_source_study_and_references_every_instance(tmp_path, chest_record, chest_series):
    ds = pydicom.dcmread(export_report(chest_record, tmp_path / "report.dcm"))
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(chest_series.glob("*.dcm"))]
    assert ds.Modality == "SR" and ds.SOPClassUID == COMPREHENSIVE_SR
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.PatientID == "Lung_Dx-A0001" == sources[0].PatientID
    assert ds.PatientSex == sources[0].PatientSex and ds.StudyDate == "20070404"
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert ds.Manufacturer == "napari-radreport" and ds.SeriesDescription == "AI draft report"
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"

    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    assert study.StudyInstanceUID == ds.StudyInstanceUID
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    referenced = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in series.ReferencedSOPSequence]
    assert sorted(referenced) == sorted((s.SOPClassUID, s.SOPInstanceUID) for s in sources)
    assert len(referenced) == 64 and "PertinentOtherEvidenceSequence" not in ds

    assert ds.ConceptNameCodeSequence[0].CodeValue == "11528-7"
    texts = _text_items(ds)
    assert texts[:2] == [(("Findings", "Finding"), FINDINGS), (("Impressions", "Impression"), IMPRESSION)]
    comments = [t for names, t in texts if names == ("Comment",)]
    assert any("AI-generated" in c and "AI draft, not reviewed" in c for c in comments)
    assert any(HASH in c and "M3D-LaMed-Phi-3-4B" in c and "0.1.0" in c for c in comments)


def test_sr_for_nifti_has_a_new_study_and_no_patient(tmp_path, nifti_record):
    assert nifti_record.study.dicom_files == []
    first = pydicom.dcmread(export_report(nifti_record, tmp_path / "a.dcm"))
    second = pydicom.dcmread(export_report(nifti_record, tmp_path / "b.dcm"))
    assert first.Modality == "SR"
    assert re.fullmatch(r"[0-9.]{10,64}", first.StudyInstanceUID)
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.PatientID == "" and str(first.PatientName) == ""
    assert "CurrentRequestedProcedureEvidenceSequence" not in first
    assert "PertinentOtherEvidenceSequence" not in first
    assert first.CompletionFlag == "COMPLETE"  # reviewed
    texts = _text_items(first)
    assert texts[0] == (("Findings", "Finding"), FINDINGS)
    assert any(names == ("Comment",) and "Reviewed by the user" in t for names, t in texts)


def test_sr_from_dicom_without_uids(tmp_path, j2k_series):
    """The J2K series has empty Study/Series/SOP Instance UIDs: nothing to reference, a new study."""
    files = sorted(str(p) for p in j2k_series.iterdir() if p.is_file())
    record = ReportRecord(final_text="Normal abdomen.", study=StudyReference(dicom_files=files))
    ds = pydicom.dcmread(export_report(record, tmp_path / "r.dcm"))
    assert ds.StudyInstanceUID and "CurrentRequestedProcedureEvidenceSequence" not in ds
    assert ds.StudyDate == "20221208"
    assert dict(_text_items(ds))[("Findings", "Finding")] == "Normal abdomen."


def test_sr_with_a_missing_source_file_is_one_line_error(tmp_path, chest_record):
    chest_record.study.dicom_files = [str(tmp_path / "gone.dcm")]
    with pytest.raises(ExportError) as err:
        export_report(chest_record, tmp_path / "r.dcm")
    assert "gone.dcm" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "r.dcm").exists()


def test_study_reference_sniffs_dicom_files(chest_study, nifti_record, chest_series):
    ref = StudyReference.from_study(chest_study)
    assert sorted(Path(f).name for f in ref.dicom_files) == sorted(p.name for p in chest_series.glob("*.dcm"))
    assert nifti_record.study.dicom_files == [] and nifti_record.study.source


# -- file handling ---------------------------------------------------------------------------------

def test_never_overwrites_unless_asked(tmp_path, chest_record):
    path = export_report(chest_record, tmp_path / "report.txt")
    before = path.read_bytes()
    changed = ReportRecord(final_text="Completely different text.")
    with pytest.raises(ExportError, match="exists; not overwritten") as err:
        export_report(changed, path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert path.read_bytes() == before
    export_report(changed, path, overwrite=True)
    assert "Completely different text." in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]  # no temporary file left


@pytest.mark.parametrize("name", ["report.docx", "report"])
def test_unknown_suffix_is_one_line_error(tmp_path, chest_record, name):
    with pytest.raises(ExportError) as err:
        export_report(chest_record, tmp_path / name)
    message = str(err.value)
    assert "\n" not in message and name in message and ".txt .md .json .pdf .dcm" in message
    assert list(tmp_path.iterdir()) == []


def test_explicit_format_overrides_suffix(tmp_path, chest_record):
    path = export_report(chest_record, tmp_path / "report.out", fmt="json")
    assert json.loads(path.read_text(encoding="utf-8"))["final_text"] == FINAL
    with pytest.raises(ExportError, match="unknown export format"):
        export_report(chest_record, tmp_path / "x.txt", fmt="docx")


def test_missing_folder_is_one_line_error_and_not_created(tmp_path, chest_record):
    with pytest.raises(ExportError) as err:
        export_report(chest_record, tmp_path / "missing" / "report.pdf")
    assert "\n" not in str(err.value) and str(tmp_path / "missing") in str(err.value)
    assert not (tmp_path / "missing").exists()


def test_empty_report_is_refused(tmp_path):
    with pytest.raises(ExportError, match="empty"):
        export_report(ReportRecord(final_text="  \n"), tmp_path / "r.txt")


def test_failed_render_leaves_no_file(tmp_path, chest_record, monkeypatch):
    def broken(record):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(writers.RENDERERS, "txt", broken)
    with pytest.raises(ExportError, match=r"txt export failed \(RuntimeError: boom\)$"):
        export_report(chest_record, tmp_path / "r.txt")
    assert list(tmp_path.iterdir()) == []


def test_sr_lists_another_study_as_other_evidence(tmp_path, chest_series, cr_monochrome1):
    ct = pydicom.dcmread(chest_series / "1-01.dcm", stop_before_pixels=True)
    prior = pydicom.dcmread(cr_monochrome1)  # a prior radiograph of the CT's patient: an SR is one patient's
    prior.PatientID, prior.PatientName = ct.PatientID, ct.PatientName
    prior.save_as(tmp_path / "prior_cr.dcm")
    files = [*sorted(str(p) for p in chest_series.glob("*.dcm")), str(tmp_path / "prior_cr.dcm")]
    record = ReportRecord(final_text="Normal.", study=StudyReference(dicom_files=files))
    ds = pydicom.dcmread(export_report(record, tmp_path / "r.dcm"))
    cr = pydicom.dcmread(tmp_path / "prior_cr.dcm", stop_before_pixels=True)
    assert ds.PatientID == "Lung_Dx-A0001"  # identity from the first file
    (current,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert len(current.ReferencedSeriesSequence[0].ReferencedSOPSequence) == 64
    (other,) = ds.PertinentOtherEvidenceSequence
    assert other.StudyInstanceUID == cr.StudyInstanceUID != ds.StudyInstanceUID
    (series,) = other.ReferencedSeriesSequence
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence] == [cr.SOPInstanceUID]


def test_every_export_format_has_a_renderer_a_suffix_and_a_dialog_filter():
    from napari_radreport.export.formats import EXPORT_FORMATS, dialog_filters
    from napari_radreport.export.writers import RENDERERS, format_for

    assert [f.name for f in EXPORT_FORMATS] == list(RENDERERS)
    filters = dialog_filters().split(";;")
    assert len(filters) == len(EXPORT_FORMATS) and "DICOM SR (*.dcm)" in filters
    for row, text in zip(EXPORT_FORMATS, filters):
        assert text == f"{row.label} (*{row.suffix})" and format_for(f"report{row.suffix}") == row.name


# -- privacy and completeness ----------------------------------------------------------------------

def _rendered_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".pdf":
        return pdf_text(data)
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        return " ".join([*(t for _, t in _text_items(ds)), str(ds.get("CompletionFlagDescription", ""))])
    return data.decode("utf-8")


@pytest.mark.parametrize("suffix", [".txt", ".md", ".json", ".pdf", ".dcm"])
def test_no_format_writes_the_source_paths_unless_asked(tmp_path, chest_record, chest_series, suffix):
    out = export_report(chest_record, tmp_path / f"report{suffix}")
    data = out.read_bytes()
    assert chest_series.name.encode() not in data  # folder names often hold patient names
    assert chest_series.name not in _rendered_text(out)
    if suffix == ".dcm":  # the SR still references every source instance, by UID
        ds = pydicom.dcmread(out)
        assert len(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                   .ReferencedSOPSequence) == 64
    if suffix == ".json":
        study = json.loads(data)["study"]
        assert "source" not in study and "dicom_files" not in study and study["series_uids"]
        chest_record.include_paths = True
        kept = json.loads(export_report(chest_record, tmp_path / "kept.json").read_text(encoding="utf-8"))
        assert kept["include_paths"] is True and kept["study"]["source"] == [str(chest_series)]
        assert len(kept["study"]["dicom_files"]) == 64


@pytest.mark.parametrize("suffix", [".txt", ".md", ".json", ".pdf", ".dcm"])
def test_a_stopped_report_says_it_is_incomplete_in_every_format(tmp_path, nifti_record, suffix):
    nifti_record.stop_reason = "stopped"  # reviewed, yet cut short
    out = export_report(nifti_record, tmp_path / f"report{suffix}")
    assert "incomplete: generation was stopped" in _rendered_text(out)
    if suffix == ".json":
        data = json.loads(out.read_text(encoding="utf-8"))
        assert data["complete"] is False and data["stop_reason"] == "stopped"
        assert data["status"] == "Reviewed by the user; incomplete: generation was stopped"
    if suffix == ".dcm":
        ds = pydicom.dcmread(out)
        assert ds.CompletionFlag == "PARTIAL"
        assert ds.CompletionFlagDescription == "incomplete: generation was stopped"
    nifti_record.stop_reason = "eos"
    assert "incomplete" not in _rendered_text(export_report(nifti_record, tmp_path / f"done{suffix}"))


def test_suffix_contradicting_the_format_is_refused_naming_both(tmp_path, chest_record):
    with pytest.raises(ExportError) as err:
        export_report(chest_record, tmp_path / "x.txt", fmt="sr")
    message = str(err.value)
    assert "\n" not in message and ".txt" in message and "sr" in message and ".dcm" in message
    assert list(tmp_path.iterdir()) == []
    assert writers.check_target(tmp_path / "X.DCM", "sr") == (tmp_path / "X.DCM", "sr")  # any case


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in: a 0555 folder, or /sys for root (who ignores the mode bits)."""
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        if candidate.is_dir() and writers._cannot_create_in(candidate):
            return candidate
    pytest.skip("no folder that this user cannot write to")


def test_an_unwritable_folder_or_a_folder_as_target_is_refused(tmp_path, chest_record):
    folder = unwritable_folder(tmp_path)
    with pytest.raises(ExportError, match=r"is not writable \(") as err:
        writers.check_target(folder / "report.txt")
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ExportError, match="is a folder, not a file"):
        writers.check_target(tmp_path, "txt", overwrite=True)
    assert writers.check_target(tmp_path / "r.txt") == (tmp_path / "r.txt", "txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read-only"]  # the probe file was removed
