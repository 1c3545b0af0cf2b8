"""Sort the sentences of a CT report into chest, abdomen and pelvis by the organs they name.

The AMOS-MM baselines used named-entity recognition for this; here an organ lexicon does it, with no model:

* **Sentences.** Lines are split at ``.``, ``!`` and ``?`` followed by a space, except after a decimal point
  ("3.5 cm" has no space), after common abbreviations ("approx.", "e.g.", "i.e.", "Dr.", "vs.", "Fig.", ...)
  and before a lower-case word ("approx. three"). Line breaks always end a sentence. Leading list numbers
  ("1.", "2)") are dropped.
* **Organs.** Each word is looked up (lower case, plurals folded: "kidneys", "ovaries") in a lexicon of
  organs, structures and region words with their adjectives ("pulmonary", "hepatic", "renal", "splenic",
  "pleural", "cardiac", "vesical", "pelvic", "thoracic"...), two- and three-word phrases first ("renal pelvis"
  is abdomen, not pelvis; "thoracic aorta" is chest; "small bowel" is abdomen), then whole words, then a few
  stems matched inside words ("peribronchial", "hydronephrosis", "cholecystectomy").
* **Two regions.** A sentence naming organs of several regions goes to each of them ("The liver is normal
  and there is no pleural effusion." is in the chest and the abdomen text).
* **No organ.** A sentence that names none ("No mass is seen.") goes where the previous sentence went. Before
  the first organ-naming sentence (and after a heading that names no region, such as "FINDINGS:") there is no
  previous region: those sentences are dropped, or kept under ``"unassigned"`` with ``keep_unassigned=True``.
* **Headings.** A line that is only a heading ("ABDOMEN:", "Lungs and pleura:") is glued to the next sentence
  when it names a region, and otherwise resets the context (it is not itself copied).

Known limits (a lexicon reads words, not meaning):

* Negation and comparison are not understood: "No abdominal lymph nodes." goes to the abdomen (usually what is
  wanted), but so does "Compared with the abdominal CT of 2019, the nodule is stable." even if the nodule is
  in the lung (the sentence goes to both regions it names).
* References ("see above", "as described", "the lesion mentioned previously") carry no organ: they follow the
  previous sentence, which is not always the region they refer to.
* Structures that span regions are deliberately *not* in the lexicon and so never decide a region on their
  own: "aorta" (unless "thoracic/ascending/abdominal/infrarenal..."), "vena cava" (unless superior/inferior),
  "lymph nodes", "bowel", "colon" (unless ascending/transverse/descending: abdomen; sigmoid/rectum: pelvis),
  "spine", "vertebrae", "bones", "soft tissues", "skin", "muscles", "vessels". "The aorta is normal in
  calibre." therefore follows the previous sentence.
* Some choices are conventions, not anatomy: thyroid, breasts and axillae are chest (they are reported on
  chest CT); diaphragm is chest; ureters, lumbar spine and appendix are abdomen; inguinal regions, hips,
  sacrum and iliac bones are pelvis.
* Words are matched without their context, so an organ named in passing ("status post cholecystectomy",
  "kidney-shaped mass in the lung") counts as that organ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from napari_radreport.engine.prompts import REGIONS

UNASSIGNED = "unassigned"

_C, _A, _P = ("chest",), ("abdomen",), ("pelvis",)

# Whole words (lower case, singular where a plural exists; the lookup also folds -s, -es and -ies plurals).
_WORDS: dict[str, tuple[str, ...]] = {}
for _regions, _words in (
    (_C, """chest thorax thoracic intrathoracic hemithorax lung pulmonary lingula lingular airway trachea
         carina subcarinal hilum hila hilar mediastinum heart cardiomegaly atrium atria atrial ventricle
         ventricular coronary mitral tricuspid thymus thymic thyroid breast mammary axilla axillae
         axillary rib sternum sternal clavicle clavicular scapula scapular costophrenic diaphragm
         diaphragmatic hiatal hiatus azygos brachiocephalic subclavian innominate emphysema emphysematous
         consolidation alveolar bulla bullae bullous interlobular centrilobular pneumonia pneumothorax"""),
    (_A, """abdomen abdominal liver gallbladder stomach gastric cardia duodenum duodenal jejunum jejunal
         ileum ileal ileocecal cecum caecum cecal appendix appendiceal appendicitis spleen kidney renal
         perirenal pararenal infrarenal suprarenal juxtarenal adrenal ureter ureteral ureteric mesentery
         mesenteric retroperitoneum retroperitoneal peritoneum peritoneal intraperitoneal pneumoperitoneum
         pneumobilia ascites omentum omental celiac coeliac periportal ivc cbd biliary bile lumbar
         umbilical umbilicus epigastric paraaortic subdiaphragmatic gastroesophageal psoas"""),
    (_P, """pelvis pelvic bladder vesical perivesical prostate prostatic uterus uterine endometrium
         endometrial cervix ovary ovarian adnexa adnexal vagina vaginal rectum rectal perirectal
         mesorectal rectosigmoid anorectal anal anus sigmoid inguinal groin hip acetabulum acetabular
         femoral sacrum sacral sacroiliac presacral coccyx coccygeal iliac ilium pubic pubis symphysis
         ischium ischial ischiorectal obturator testis testes testicular scrotum scrotal seminal vesicle
         douglas ureterovesical"""),
):
    _WORDS.update(dict.fromkeys(_words.split(), _regions))
_WORDS.update({"abdominopelvic": _A + _P, "thoracoabdominal": _C + _A, "thoracolumbar": _C + _A})

# Phrases, tried before single words at each position (longest first); they win over their own words.
_PHRASES: dict[tuple[str, ...], tuple[str, ...]] = {}
for _regions, _phrases in (
    (_C, """thoracic aorta, ascending aorta, descending aorta, aortic arch, aortic root, aortic valve,
         superior vena cava, upper lobe, middle lobe, lower lobe, ground glass, tree in bud, septal
         thickening, mosaic attenuation, chest wall, major fissure, minor fissure, oblique fissure,
         horizontal fissure, interlobar fissure"""),
    (_A, """renal pelvis, renal pelves, renal hilum, renal hilar, splenic hilum, hepatic hilum, gall
         bladder, small bowel, small intestine, ascending colon, transverse colon, descending colon,
         hepatic flexure, splenic flexure, abdominal aorta, inferior vena cava, para aortic, caudate lobe,
         portal vein, portal hypertension, common bile duct"""),
    (_P, "pelvic floor, urinary bladder, femoral head, seminal vesicles"),
):
    _PHRASES.update(dict.fromkeys((tuple(p.split()) for p in _phrases.split(",")), _regions))
del _regions, _words, _phrases
_MAX_PHRASE = max(map(len, _PHRASES))

# Stems matched inside a word when the whole word is not in _WORDS (so "cardia" stays abdomen and
# "pneumoperitoneum" abdomen); the first stem found decides.
_STEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bronch", _C), ("pleur", _C), ("pulmon", _C), ("cardi", _C), ("pneumo", _C), ("mediastin", _C),
    ("trache", _C), ("thorac", _C), ("esophag", _C), ("oesophag", _C), ("atelecta", _C), ("lobectom", _C),
    ("hepat", _A), ("splen", _A), ("pancrea", _A), ("nephr", _A), ("cholecyst", _A), ("choledoch", _A),
    ("cholang", _A), ("cholelith", _A), ("gastr", _A), ("adrenal", _A),
    ("prostat", _P), ("ovar", _P), ("adnex", _P), ("vesic", _P), ("hysterect", _P), ("sacr", _P),
    ("acetabul", _P),
)

# "approx." and friends do not end a sentence; compared in lower case, with their final dot.
ABBREVIATIONS = frozenset("""approx. appr. approx e.g. i.e. eg. ie. dr. drs. mr. mrs. ms. prof. vs. fig. figs.
                          cf. etc. st. max. min. resp. incl. ca. cca. nr. ref. sec. seg. segm.""".split())

_WORD = re.compile(r"[a-z]+")
_BOUNDARY = re.compile(r"[.!?]+(?=\s)")
_ENUMERATOR = re.compile(r"^\(?\d{1,2}[.)]\s+|^[-*\u2022]\s+")
_HEADING = re.compile(r"^[A-Za-z][A-Za-z ,/&()'-]{0,48}:$")


@dataclass(frozen=True)
class Assignment:
    """One sentence, the regions it went to, and whether it named them (False: carried from the previous)."""

    sentence: str
    regions: tuple[str, ...]
    named: bool


def _lookup(word: str) -> tuple[str, ...] | None:
    singulars = (word[:-1] if word.endswith("s") else None, word[:-2] if word.endswith("es") else None,
                 word[:-3] + "y" if word.endswith("ies") else None)
    for candidate in (word, *singulars):
        if candidate and candidate in _WORDS:
            return _WORDS[candidate]
    for stem, regions in _STEMS:
        if stem in word:
            return regions
    return None


def regions_named(sentence: str) -> tuple[str, ...]:
    """The regions whose organs or structures the sentence names, in chest, abdomen, pelvis order."""
    words = _WORD.findall(sentence.lower())
    found: set[str] = set()
    i = 0
    while i < len(words):
        for size in range(min(_MAX_PHRASE, len(words) - i), 1, -1):
            regions = _PHRASES.get(tuple(words[i:i + size]))
            if regions:
                found.update(regions)
                i += size
                break
        else:
            found.update(_lookup(words[i]) or ())
            i += 1
    return tuple(r for r in REGIONS if r in found)


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (see the module docstring for what does and does not end one)."""
    sentences = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            end = match.end()
            words = line[start:end].split()
            last_word = words[-1].lstrip("([{\"'").lower() if words else ""
            following = line[end:].lstrip()[:1]
            if last_word in ABBREVIATIONS or following.islower():
                continue
            sentences.append(line[start:end])
            start = end
        sentences.append(line[start:])
    cleaned = (_ENUMERATOR.sub("", s.strip()).strip() for s in sentences)
    return [s for s in cleaned if s and not re.fullmatch(r"\(?\d{1,2}[.)]?", s)]


def assign_regions(text: str) -> list[Assignment]:
    """Every sentence of ``text`` with the regions it goes to (empty before any region is known)."""
    assignments: list[Assignment] = []
    context: tuple[str, ...] = ()
    heading = ""
    for sentence in split_sentences(text):
        if _HEADING.match(sentence):
            heading = sentence if regions_named(sentence) else ""
            context = regions_named(sentence)
            continue
        if heading:
            sentence, heading = f"{heading} {sentence}", ""
        named = regions_named(sentence)
        if named:
            context = named
        assignments.append(Assignment(sentence, named or context, bool(named)))
    return assignments


def split_by_region(text: str, *, keep_unassigned: bool = False) -> dict[str, str]:
    """``{region: its sentences joined by spaces}`` for the regions that got any, in chest, abdomen, pelvis
    order.

    Sentences before any region is known are dropped, or returned under ``"unassigned"`` when
    ``keep_unassigned`` is true. A sentence naming two regions appears in both.
    """
    buckets: dict[str, list[str]] = {r: [] for r in (*REGIONS, UNASSIGNED)}
    for item in assign_regions(text or ""):
        for region in item.regions or (UNASSIGNED,):
            buckets[region].append(item.sentence)
    if not keep_unassigned:
        buckets.pop(UNASSIGNED)
    return {region: " ".join(sentences) for region, sentences in buckets.items() if sentences}
