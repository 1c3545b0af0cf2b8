"""Reports, questions and labels written from a phantom's findings, and the parser that reads findings back.

Each sentence has several wordings chosen at random, so a model has to learn the finding, not one string.
``read_findings`` turns any report or answer in this vocabulary back into ``Findings``; the evaluation uses it
to score what a model wrote against the truth (tests check it inverts every wording).
"""

from __future__ import annotations

import re

import numpy as np

from napari_radreport.data.phantoms.anatomy import LOBES, Findings

# CT-RATE label names of the six phantom findings (modeling.prompt_spec.CT_RATE_LABELS spelling).
LABELS = {"nodule": "Lung nodule", "effusion": "Pleural effusion", "cardiomegaly": "Cardiomegaly",
          "emphysema": "Emphysema", "consolidation": "Consolidation",
          "pericardial_effusion": "Pericardial effusion"}
FINDING_NAMES = tuple(LABELS)

_NODULE = ("There is a {size} mm nodule in the {side} {lobe} lobe.",
           "A {size} mm solid nodule is seen in the {side} {lobe} lobe.",
           "{Side} {lobe} lobe nodule measuring {size} mm.")
_NO_NODULE = ("No pulmonary nodule.", "No lung nodules are seen.", "There is no suspicious pulmonary nodule.")
_CONSOLIDATION = ("Consolidation in the {side} {lobe} lobe.",
                  "There is an area of consolidation in the {side} {lobe} lobe.",
                  "Airspace consolidation is seen in the {side} {lobe} lobe.")
_NO_CONSOLIDATION = ("No consolidation.", "No focal consolidation is seen.",
                     "The lungs show no consolidation.")
_EMPHYSEMA = ("Centrilobular emphysema with upper zone predominance.", "There is emphysema in both lungs.",
              "Emphysematous changes are present, predominantly in the upper lobes.")
_NO_EMPHYSEMA = ("No emphysema.", "No emphysematous changes.", "The lung parenchyma shows no emphysema.")
_EFFUSION = ("There is a {side} pleural effusion.", "{Side} pleural effusion is present.",
             "A small {side} pleural effusion is seen.")
_BILATERAL = ("Bilateral pleural effusions.", "There are bilateral pleural effusions.",
              "Small bilateral pleural effusions are seen.")
_NO_EFFUSION = ("No pleural effusion.", "There is no pleural effusion.", "No pleural fluid.")
_CARDIOMEGALY = ("The heart is enlarged.", "Cardiomegaly.", "There is cardiomegaly.")
_NO_CARDIOMEGALY = ("Heart size is normal.", "The heart is normal in size.", "No cardiomegaly.")
_PERICARDIAL = ("There is a pericardial effusion.", "Small pericardial effusion.",
                "Pericardial fluid is present.")
_NO_PERICARDIAL = ("No pericardial effusion.", "There is no pericardial effusion.", "No pericardial fluid.")
_NORMAL_IMPRESSION = ("No acute abnormality.", "Normal chest CT.", "No significant abnormality in the chest.")


def _pick(rng: np.random.Generator, options: tuple[str, ...], **values) -> str:
    text = str(options[int(rng.integers(len(options)))])
    for key, value in values.items():
        text = (text.replace("{" + key + "}", str(value))
                .replace("{" + key.capitalize() + "}", str(value).capitalize()))
    return text


def findings_text(f: Findings, rng: np.random.Generator) -> str:
    """The Findings section: lungs, pleura, heart, pericardium, in that order."""
    parts = [
        _pick(rng, _NODULE, side=f.nodule[0], lobe=f.nodule[1], size=f.nodule[2]) if f.nodule
        else _pick(rng, _NO_NODULE),
        _pick(rng, _CONSOLIDATION, side=f.consolidation[0], lobe=f.consolidation[1]) if f.consolidation
        else _pick(rng, _NO_CONSOLIDATION),
        _pick(rng, _EMPHYSEMA) if f.emphysema else _pick(rng, _NO_EMPHYSEMA),
        (_pick(rng, _BILATERAL) if f.effusion == "bilateral" else _pick(rng, _EFFUSION, side=f.effusion))
        if f.effusion else _pick(rng, _NO_EFFUSION),
        _pick(rng, _CARDIOMEGALY) if f.cardiomegaly else _pick(rng, _NO_CARDIOMEGALY),
        _pick(rng, _PERICARDIAL) if f.pericardial_effusion else _pick(rng, _NO_PERICARDIAL),
    ]
    return " ".join(parts)


def impression_text(f: Findings, rng: np.random.Generator) -> str:
    """The Impression: the positive findings in brief, or a normal statement."""
    parts = []
    if f.nodule:
        parts.append(f"{f.nodule[2]} mm {f.nodule[0]} {f.nodule[1]} lobe nodule.".capitalize())
    if f.consolidation:
        parts.append(f"{f.consolidation[0]} {f.consolidation[1]} lobe consolidation.".capitalize())
    if f.emphysema:
        parts.append("Emphysema.")
    if f.effusion:
        parts.append(f"{f.effusion} pleural effusion{'s' if f.effusion == 'bilateral' else ''}.".capitalize())
    if f.cardiomegaly:
        parts.append("Cardiomegaly.")
    if f.pericardial_effusion:
        parts.append("Pericardial effusion.")
    return " ".join(parts) if parts else _pick(rng, _NORMAL_IMPRESSION)


def labels(f: Findings) -> dict[str, int]:
    return {LABELS[name]: int(bool(getattr(f, name))) for name in FINDING_NAMES}


YES_NO_QUESTIONS = {
    "nodule": ("Is there a lung nodule?", "Are there any pulmonary nodules?"),
    "consolidation": ("Is there consolidation?", "Is there any consolidation in the lungs?"),
    "emphysema": ("Is there emphysema?", "Are there emphysematous changes?"),
    "effusion": ("Is there a pleural effusion?", "Is there pleural fluid?"),
    "cardiomegaly": ("Is the heart enlarged?", "Is there cardiomegaly?"),
    "pericardial_effusion": ("Is there a pericardial effusion?", "Is there pericardial fluid?"),
}


def _yes_no_answer(name: str, f: Findings) -> str:
    value = getattr(f, name)
    if not value:
        return {"nodule": "No, there is no lung nodule.", "consolidation": "No, there is no consolidation.",
                "emphysema": "No, there is no emphysema.", "effusion": "No, there is no pleural effusion.",
                "cardiomegaly": "No, the heart is normal in size.",
                "pericardial_effusion": "No, there is no pericardial effusion."}[name]
    if name == "nodule":
        return f"Yes, a {value[2]} mm nodule in the {value[0]} {value[1]} lobe."
    if name == "consolidation":
        return f"Yes, consolidation in the {value[0]} {value[1]} lobe."
    if name == "effusion":
        return ("Yes, bilateral pleural effusions." if value == "bilateral"
                else f"Yes, a {value} pleural effusion.")
    return {"emphysema": "Yes, there is emphysema.", "cardiomegaly": "Yes, the heart is enlarged.",
            "pericardial_effusion": "Yes, there is a pericardial effusion."}[name]


def _lobe_names() -> list[str]:
    return [f"{side} {lobe} lobe" for side, lobes in LOBES.items() for lobe in lobes]


def _choice(rng: np.random.Generator, question: str, truth: str, options: list[str], n: int) -> dict:
    others = [o for o in options if o != truth]
    picked = [truth, *[others[i] for i in rng.permutation(len(others))[: n - 1]]]
    order = rng.permutation(len(picked))
    choices = [picked[i] for i in order]
    return {"question": question, "answer": truth, "choices": choices, "answer_index": choices.index(truth)}


def questions(f: Findings, rng: np.random.Generator) -> list[dict]:
    """Free-text yes/no questions for every finding, where/how large for a nodule, and multiple choice."""
    qa = [{"question": _pick(rng, YES_NO_QUESTIONS[name]), "answer": _yes_no_answer(name, f)}
          for name in FINDING_NAMES]
    if f.nodule:
        side, lobe, size = f.nodule
        qa.append({"question": "Where is the lung nodule?", "answer": f"In the {side} {lobe} lobe."})
        qa.append({"question": "How large is the nodule?", "answer": f"It measures {size} mm."})
        qa.append(_choice(rng, "Which lobe contains the nodule?", f"{side} {lobe} lobe", _lobe_names(), 4))
    if f.effusion:
        truth = "both sides" if f.effusion == "bilateral" else f"{f.effusion} side"
        qa.append(_choice(rng, "On which side is the pleural effusion?", truth,
                          ["right side", "left side", "both sides"], 3))
    qa.append(_choice(rng, "What is the size of the heart?", "enlarged" if f.cardiomegaly else "normal",
                      ["normal", "enlarged"], 2))
    return qa


# -- reading findings back ------------------------------------------------------------------------------
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NEGATION = re.compile(
    r"^(no|there is no|there are no)\b|\bshows? no\b|\bno,|\bnormal in size\b|\bsize is normal\b")


def side_and_lobe(sentence: str) -> tuple[str | None, str | None]:
    """The side (right / left) and lobe (upper / middle / lower) a lower-case sentence names, if any."""
    side = re.search(r"\b(right|left)\b", sentence)
    lobe = re.search(r"\b(upper|middle|lower)\b", sentence)
    return (side.group(1) if side else None), (lobe.group(1) if lobe else None)


def size_mm(text: str) -> int | None:
    """The first size in millimetres a text gives ("14 mm"), if any."""
    match = re.search(r"(\d+)\s*mm", text)
    return int(match.group(1)) if match else None


def read_findings(text: str) -> Findings:
    """The findings a report (or an answer) states; anything not mentioned is read as absent.

    ``extras["mentioned"]`` lists the findings the text speaks of at all (stated present or denied).
    """
    found, mentioned = Findings(), set()
    for sentence in _SENTENCE.split(text.strip().lower()):
        negated = bool(_NEGATION.search(sentence))
        if "nodule" in sentence:
            mentioned.add("nodule")
            if not negated:
                side, lobe = side_and_lobe(sentence)
                size = size_mm(sentence)
                found.nodule = (side or "?", lobe or "?", size if size is not None else -1)
        elif "consolidation" in sentence:
            mentioned.add("consolidation")
            if not negated:
                found.consolidation = side_and_lobe(sentence)  # type: ignore[assignment]
        elif "emphysema" in sentence:
            mentioned.add("emphysema")
            found.emphysema = not negated
        elif "pericardial" in sentence:
            mentioned.add("pericardial_effusion")
            found.pericardial_effusion = not negated
        elif "pleural" in sentence:
            mentioned.add("effusion")
            if not negated:
                side = "bilateral" if "bilateral" in sentence else side_and_lobe(sentence)[0]
                found.effusion = side or "?"
        elif "heart" in sentence or "cardiomegaly" in sentence:
            mentioned.add("cardiomegaly")
            found.cardiomegaly = not negated and ("enlarged" in sentence or "cardiomegaly" in sentence)
    found.extras["mentioned"] = mentioned
    return found


def finding_matches(name: str, truth: Findings, stated: Findings, size_tolerance_mm: int = 4) -> bool:
    """Whether ``stated`` gets finding ``name`` right: presence, and side / lobe / size when present."""
    want, got = getattr(truth, name), getattr(stated, name)
    if not want or not got:
        return bool(want) == bool(got)
    if name == "nodule":
        return want[:2] == got[:2] and abs(want[2] - got[2]) <= size_tolerance_mm
    if name == "consolidation":
        return tuple(want) == tuple(got)
    return want == got
