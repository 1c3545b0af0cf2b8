"""A report or an answer cut into sentences, each with its section and the finding it states.

Sentences, sections and findings are read as ``consistency.py`` reads them (one reading of report text in
the project): a sentence is grounded when it states a finding present or possible; a denial ("No pleural
effusion.") or a sentence naming no known finding has nothing to point at.
"""

from __future__ import annotations

from napari_radreport.consistency import read_statements, sentence_spans
from napari_radreport.grounding.location import GroundedSentence


def report_sentences(text: str, section: str | None = None) -> list[GroundedSentence]:
    """Every sentence of ``text`` in order; ``section`` replaces the sections read from headings (an answer
    has none)."""
    stated: dict[int, str] = {}
    for statement in read_statements(text):
        if statement.stance != "absent":
            stated.setdefault(statement.start, statement.finding)
    return [GroundedSentence(section if section is not None else found, text[start:end], start, end,
                             stated.get(start))
            for found, start, end in sentence_spans(text)]
