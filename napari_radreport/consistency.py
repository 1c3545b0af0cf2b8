"""Where a report contradicts itself or the model's own diagnosis of the same study.

``read_statements`` finds, clause by clause, each finding a report speaks of (a table of chest findings,
``FINDINGS``, keyed by the CT-RATE / CheXpert label it answers to), whether the clause states it present,
denies it or hedges ("possible", "cannot be excluded"), and the side, lobe and size it gives.
``find_conflicts`` then flags:

- ``size`` / ``side`` / ``lobe``: a finding the Impression states with a size, side or lobe that no statement
  of the same finding in the Findings section gives (a "26 mm" nodule in Findings, "12 mm" in the Impression);
- ``presence``: one finding stated present and denied in the same report (a denial that names another side
  or lobe does not count: "no right effusion" and "left effusion" agree);
- ``diagnosis``: a finding stated present while the model's diagnosis gives its label ``P(yes) <
  DISAGREE_BELOW``, or denied while it gives ``P(yes) > DISAGREE_ABOVE``.

Hedged statements never conflict. The reading is lexical (no model): it knows the findings in ``FINDINGS``
and English report wording; a finding outside the table is not checked. Pure text, no Qt, no torch: the
engine runs it on a fresh report, the Report dock on every edit, the exports on the final text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# Probabilities at which the model's own diagnosis clearly disagrees with a sentence (away from 0.5, so
# that a finding near the decision threshold is not flagged).
DISAGREE_BELOW, DISAGREE_ABOVE = 0.25, 0.75
SIZE_TOLERANCE_MM = 2.0  # two sizes of one finding further apart than this (and than 20 %) disagree

# Each finding: the pattern that names it in a clause, and the diagnosis labels (case-insensitive) that ask
# about it (CT-RATE's 18, CheXpert's 14, the phantoms' six).
FINDINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nodule": (r"\bnodul(?:e|es|ar)\b", ("lung nodule", "lung lesion")),
    "pleural effusion": (r"\bpleural (?:effusions?|fluid)\b|(?<!pericardial )\beffusions?\b",
                         ("pleural effusion",)),
    "pericardial effusion": (r"\bpericardial (?:effusion|fluid)\b", ("pericardial effusion",)),
    "cardiomegaly": (r"\bcardiomegaly\b|\bheart\b[^.;,]*\b(?:enlarged|normal in size|size is normal)\b|"
                     r"\benlarged heart\b|\bheart size\b|\bcardiac (?:enlargement|silhouette is enlarged)\b",
                     ("cardiomegaly", "enlarged cardiomediastinum")),
    "emphysema": (r"\bemphysema(?:tous)?\b", ("emphysema",)),
    "consolidation": (r"\bconsolidat(?:ion|ions|ed)\b", ("consolidation",)),
    "atelectasis": (r"\batelecta(?:sis|tic)\b", ("atelectasis",)),
    "pneumothorax": (r"\bpneumothora(?:x|ces)\b", ("pneumothorax",)),
    "edema": (r"\b(?:pulmonary )?o?edema\b", ("edema",)),
    "pneumonia": (r"\bpneumonia\b", ("pneumonia",)),
    "opacity": (r"\bopacit(?:y|ies)\b|\bground[- ]glass\b", ("lung opacity",)),
    "bronchiectasis": (r"\bbronchiecta(?:sis|tic)\b", ("bronchiectasis",)),
    "hiatal hernia": (r"\bhiat(?:al|us) hernia\b", ("hiatal hernia",)),
    "lymphadenopathy": (r"\blymphadenopathy\b|\benlarged (?:lymph )?nodes\b", ("lymphadenopathy",)),
    "fibrosis": (r"\bfibro(?:sis|tic)\b", ("pulmonary fibrotic sequela",)),
    "mosaic attenuation": (r"\bmosaic attenuation\b", ("mosaic attenuation pattern",)),
    "peribronchial thickening": (r"\bperibronchial (?:wall )?thickening\b", ("peribronchial thickening",)),
    "septal thickening": (r"\bseptal thickening\b", ("interlobular septal thickening",)),
    "coronary calcification": (r"\bcoronary (?:artery )?(?:wall )?calcifications?\b",
                               ("coronary artery wall calcification",)),
    "fracture": (r"\bfractures?\b", ("fracture",)),
}
_PATTERNS = {name: re.compile(pattern) for name, (pattern, _) in FINDINGS.items()}
_LABEL_FINDING = {label: name for name, (_, labels) in FINDINGS.items() for label in labels}

_SECTION = re.compile(r"^[ \t]*(findings|impressions?|conclusions?)\b[^:\n]{0,40}:[ \t]*", re.I | re.M)
# A sentence ends at . ! ? before white space (not inside "1.2 cm") or at the end of a line.
_SENTENCE = re.compile(r"\S[^\n]*?(?:[.!?]+(?=\s|$)|$)", re.M)
_CLAUSE_BREAK = re.compile(r";|,?\s+\b(?:but|however|whereas)\b|,\s+(?=(?:no|without|there is no)\b)|"
                           r"\s+and\s+(?=there\b)")
_PHRASE_BREAK = re.compile(r",|\band\b|\bwith\b")  # where a finding's side, lobe and size stop
_NEGATION_BEFORE = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|normal heart size)\b")
_NEGATION_AFTER = re.compile(r"\b(?:is|are) (?:not (?:seen|present|identified|evident)|absent)\b|"
                             r"\bhas resolved\b|\bnormal in size\b|\bsize is normal\b")
_PSEUDO_NEGATION = re.compile(r"\bno (?:significant |interval )?(?:change|increase|decrease)\b|\bnot only\b")
_HEDGE = re.compile(r"\b(?:possible|possibly|probable|probably|may|might|could|cannot be excluded|"
                    r"can ?not be excluded|not excluded|questionable|suspicious|suspected|likely|"
                    r"versus|vs\.?|differential)\b")
_SIDE = re.compile(r"\b(right|left|bilateral|both)\b")
_LOBE = re.compile(r"\b(upper|middle|lower)\b")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)((?:\s*[x×]\s*\d+(?:\.\d+)?)*)\s*(mm|cm)\b")


@dataclass(frozen=True)
class Statement:
    """One finding as one clause of the report speaks of it."""

    finding: str  # a key of FINDINGS
    stance: str  # "present", "absent" or "uncertain"
    section: str  # "findings", "impression" or "" (text before any heading)
    start: int  # the sentence's span in the report text
    end: int
    side: str | None = None  # "right", "left", "bilateral"
    lobe: str | None = None  # "upper", "middle", "lower"
    size_mm: float | None = None  # the largest dimension given


@dataclass(frozen=True)
class Conflict:
    """A contradiction: its kind, the finding, one line saying it, and the sentences' spans in the text."""

    kind: str  # "size", "side", "lobe", "presence" or "diagnosis"
    finding: str
    message: str
    spans: tuple[tuple[int, int], ...]
    sentences: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spans"] = [list(span) for span in self.spans]
        data["sentences"] = list(self.sentences)
        return data


def finding_of_label(label: str) -> str | None:
    """The FINDINGS key of a diagnosis or manifest label ("Lung nodule" -> "nodule", "Pleural effusion
    (right)" -> "pleural effusion", a key itself -> that key); None for an unknown one."""
    base = re.sub(r"\s*\([^)]*\)\s*$", "", label).strip().casefold()
    return base if base in FINDINGS else _LABEL_FINDING.get(base)


def _section_of(heading: str) -> str:
    return "findings" if heading.lower().startswith("finding") else "impression"


def sentence_spans(text: str) -> list[tuple[str, int, int]]:
    """(section, start, end) of each sentence; a section runs from its heading to the next one."""
    headings = [(m.end(), _section_of(m.group(1))) for m in _SECTION.finditer(text)]
    out = []
    for match in _SENTENCE.finditer(text):
        start, end = match.start(), match.end()
        while start < end and text[start].isspace():
            start += 1
        if start == end:
            continue
        if any(start < at <= end for at, _ in headings):  # the sentence opens with a heading
            start = max(at for at, _ in headings if start < at <= end)
            if not text[start:end].strip():
                continue
        section = next((name for at, name in reversed(headings) if at <= start), "")
        out.append((section, start, end))
    return out


def _side(clause: str) -> str | None:
    sides = {m.group(1) for m in _SIDE.finditer(clause)}
    if "bilateral" in sides or "both" in sides or {"right", "left"} <= sides:
        return "bilateral"
    return next(iter(sides), None)


def _size_mm(clause: str) -> float | None:
    sizes = []
    for match in _SIZE.finditer(clause):
        numbers = [float(match.group(1))] + [float(n) for n in re.findall(r"\d+(?:\.\d+)?", match.group(2))]
        sizes.append(max(numbers) * (10.0 if match.group(3) == "cm" else 1.0))
    return max(sizes) if sizes else None


def _phrase(clause: str, at: int) -> str:
    """The part of ``clause`` around position ``at`` between phrase breaks (commas, "and", "with")."""
    starts = [0] + [m.end() for m in _PHRASE_BREAK.finditer(clause) if m.end() <= at]
    ends = [m.start() for m in _PHRASE_BREAK.finditer(clause) if m.start() > at] + [len(clause)]
    return clause[max(starts): min(ends)]


def read_statements(text: str) -> list[Statement]:
    """Every finding of ``FINDINGS`` the text speaks of, clause by clause, in order."""
    statements = []
    for section, start, end in sentence_spans(text):
        sentence = text[start:end].lower()
        for clause in _CLAUSE_BREAK.split(sentence):
            negations = _PSEUDO_NEGATION.sub(lambda m: " " * len(m.group()), clause)  # same length
            for name, pattern in _PATTERNS.items():
                mention = pattern.search(clause)
                if mention is None:
                    continue
                if _HEDGE.search(clause):
                    stance = "uncertain"
                elif (_NEGATION_BEFORE.search(negations[: mention.start()])
                      or _NEGATION_AFTER.search(clause, mention.start())):
                    stance = "absent"
                else:
                    stance = "present"
                phrase = _phrase(clause, mention.start())
                lobe = _LOBE.search(phrase)
                statements.append(Statement(name, stance, section, start, end, _side(phrase),
                                            lobe.group(1) if lobe else None, _size_mm(phrase)))
    return statements


def _sizes_differ(a: float, b: float) -> bool:
    return abs(a - b) > max(SIZE_TOLERANCE_MM, 0.2 * max(a, b))


def _mismatch(summary: Statement, detail: Statement) -> str | None:
    """The first attribute both give differently ("size", "side", "lobe"), or None when they agree."""
    if summary.side and detail.side and summary.side != detail.side:
        return "side"
    if summary.lobe and detail.lobe and summary.lobe != detail.lobe:
        return "lobe"
    if summary.size_mm is not None and detail.size_mm is not None and _sizes_differ(summary.size_mm,
                                                                                     detail.size_mm):
        return "size"
    return None


def _describe(statement: Statement, attribute: str) -> str:
    if attribute == "size":
        return f"{statement.size_mm:g} mm"
    return statement.side if attribute == "side" else f"{statement.lobe} lobe"


def _conflict(kind: str, statements: list[Statement], message: str, text: str) -> Conflict:
    spans = tuple(dict.fromkeys((s.start, s.end) for s in statements))
    return Conflict(kind, statements[0].finding, message, spans,
                    tuple(text[a:b].strip() for a, b in spans))


def _section_conflicts(statements: list[Statement], text: str) -> list[Conflict]:
    found = []
    positive = [s for s in statements if s.stance == "present"]
    for summary in (s for s in positive if s.section == "impression"):
        details = [s for s in positive if s.section == "findings" and s.finding == summary.finding]
        mismatches = [(_mismatch(summary, d), d) for d in details]
        if not details or any(m is None for m, _ in mismatches):
            continue  # the Findings section does not speak of it, or one statement agrees
        # the closest statement: same place, another size, before another lobe, before another side
        attribute, detail = min(mismatches, key=lambda m: ("size", "lobe", "side").index(m[0]))
        found.append(_conflict(attribute, [detail, summary],
                               f"{summary.finding}: {attribute} {_describe(detail, attribute)} in Findings, "
                               f"{_describe(summary, attribute)} in the Impression", text))
    return found


def _presence_conflicts(statements: list[Statement], text: str) -> list[Conflict]:
    found = []
    for denial in (s for s in statements if s.stance == "absent"):
        for stated in (s for s in statements if s.stance == "present" and s.finding == denial.finding):
            if (denial.side and stated.side and denial.side != stated.side) or \
                    (denial.lobe and stated.lobe and denial.lobe != stated.lobe):
                continue  # "no right effusion" and "left effusion" agree
            found.append(_conflict("presence", [stated, denial],
                                   f"{stated.finding}: stated present and denied in the same report", text))
            break
    return found


def _diagnosis_conflicts(statements: list[Statement], diagnosis: dict[str, float],
                         text: str) -> list[Conflict]:
    by_finding: dict[str, tuple[str, float]] = {}
    for label, probability in diagnosis.items():
        name = _LABEL_FINDING.get(label.strip().casefold())
        if name is not None and name not in by_finding:
            by_finding[name] = (label, probability)
    found, seen = [], set()
    for statement in statements:
        if statement.finding not in by_finding or statement.stance == "uncertain":
            continue
        label, p = by_finding[statement.finding]
        if statement.stance == "present" and p < DISAGREE_BELOW:
            message = f"{statement.finding}: stated present, but the model's diagnosis gives {label} {p:.0%}"
        elif statement.stance == "absent" and p > DISAGREE_ABOVE:
            message = f"{statement.finding}: denied, but the model's diagnosis gives {label} {p:.0%}"
        else:
            continue
        if (statement.finding, statement.start) not in seen:
            seen.add((statement.finding, statement.start))
            found.append(_conflict("diagnosis", [statement], message, text))
    return found


def find_conflicts(text: str, diagnosis: dict[str, float] | None = None) -> list[Conflict]:
    """The contradictions in ``text`` (and against ``diagnosis``: label -> P(yes)), in text order."""
    statements = read_statements(text)
    found = _section_conflicts(statements, text) + _presence_conflicts(statements, text)
    if diagnosis:
        found += _diagnosis_conflicts(statements, diagnosis, text)
    return sorted(found, key=lambda c: (c.spans[0], c.kind))
