"""The locations of a report's final text: each sentence of its Findings and Impression with the location
found for the same sentence when the draft was grounded (sentences edited since have none, and say so).

Pure text: the exports call it with what the draft stored (``GroundedSentence.as_dict`` of each sentence).
"""

from __future__ import annotations

from typing import Any

from napari_radreport.grounding.sentences import report_sentences

REPORT_SECTIONS = ("findings", "impression")
NOT_GROUNDED = "not grounded"
EDITED = "written or edited after grounding"


def _key(section: str, text: str) -> tuple[str, str]:
    return section, " ".join(text.split()).casefold()


def export_sentences(final_text: str, grounded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{"section", "text", "finding", "location"}`` (plus ``why_none`` where a stated finding has no
    location) for each Findings and Impression sentence of ``final_text``."""
    known = {_key(g.get("section", ""), g.get("text", "")): g for g in grounded}
    out = []
    for sentence in report_sentences(final_text):
        if sentence.section not in REPORT_SECTIONS:
            continue
        entry: dict[str, Any] = {"section": sentence.section, "text": sentence.text,
                                 "finding": sentence.finding, "location": None}
        match = known.get(_key(sentence.section, sentence.text))
        if match is not None:
            entry["location"] = match.get("location")
            if match.get("why_none"):
                entry["why_none"] = match["why_none"]
        elif sentence.finding:
            entry["why_none"] = EDITED if grounded else NOT_GROUNDED
        out.append(entry)
    return out


def located_spans(text: str, grounded: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """(start, end, grounded sentence) for each sentence of ``text`` that was located as it now reads: what
    the editor marks and a click shows."""
    known = {_key(g.get("section", ""), g.get("text", "")): g for g in grounded if g.get("location")}
    found = []
    for sentence in report_sentences(text):
        match = known.get(_key(sentence.section, sentence.text))
        if match is not None:
            found.append((sentence.start, sentence.end, match))
    return found
