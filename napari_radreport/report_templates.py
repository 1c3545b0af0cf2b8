"""Report templates: one plain text file per exam, its sections filled from the study and the reader's input.

The shipped templates are ``napari_radreport/templates/*.txt``; every ``*.txt`` in the user's templates
folder (``paths.templates_dir()``, ``RADREPORT_TEMPLATES``) is offered too, and one named like a shipped file
replaces it. A template file holds:

* comment lines starting with ``#``: the first is the template's title; one ``# exam: KIND REGION...`` says
  which studies it suits (KIND ``ct``, ``xray``, ``mr``...; regions among ``io.body_region.BODY_REGIONS``);
* sections, each a heading line in capitals ending with a colon (``TECHNIQUE:``) and its text below. FINDINGS
  and IMPRESSION are required, in that order, as the last two sections: the model writes them, so their text
  is empty or ``{findings}`` / ``{impression}``. The other sections' text may hold the fields of ``FIELDS``.

No Qt, no torch.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_radreport.io.body_region import BODY_REGIONS, body_regions
from napari_radreport.paths import templates_dir

FIELDS = ("indication", "technique", "comparison", "findings", "impression", "study_description",
          "series_description", "modality")
MODEL_SECTIONS = ("FINDINGS", "IMPRESSION")  # written by the model, in this order, last
NOT_GIVEN = {"indication": "Not given.", "comparison": "None."}
_HEADING = re.compile(r"^([A-Z][A-Z0-9 /&()-]*):\s*$")
_CONTRAST = re.compile(r"(?<![A-Z0-9])(CONTRAST|W/O|WO|W/|WITHOUT|NON-?CON|NONCONTRAST|C\+|ENHANCED|"
                       r"UNENHANCED|ARTERIAL|PORTAL|VENOUS|NATIVE)(?![A-Z0-9])", re.IGNORECASE)
_KIND_WORDS = {"ct": "ct", "xray_set": "xray", "mr": "mr", "pt": "pt"}
_MODALITY_NAMES = {"ct": "CT", "xray": "Radiograph", "mr": "MR", "pt": "PET"}


class TemplateError(ValueError):
    """A template file that cannot be used; the message is one line naming the file and the fault."""


@dataclass(frozen=True)
class Template:
    name: str  # the file's stem: "chest_ct"
    title: str  # "CT chest"
    kind: str  # "ct", "xray"... ("" : any)
    regions: tuple[str, ...]  # the body regions it is for
    sections: tuple[tuple[str, str], ...]  # (heading, text) in file order
    path: Path | None = None

    def heading(self, section: str) -> str:
        """The template's own heading of a model section ("findings" -> "FINDINGS")."""
        return next(h for h, _ in self.sections if h.upper() == section.upper())


def _shipped_dir() -> Path:
    return Path(str(resources.files("napari_radreport") / "templates"))


def template_files() -> dict[str, Path]:
    """Template name -> file: the shipped ones, then the user's (a user file replaces a shipped namesake)."""
    found = {p.stem: p for p in sorted(_shipped_dir().glob("*.txt"))}
    user = templates_dir()
    if user.is_dir():
        found.update({p.stem: p for p in sorted(user.glob("*.txt"))})
    return dict(sorted(found.items()))


def list_templates() -> list[str]:
    return list(template_files())


def parse(text: str, name: str, path: Path | None = None) -> Template:
    """A template from its file's text; TemplateError (one line) for a malformed one."""
    where = str(path or name)
    title, kind, regions = "", "", ()
    sections: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            comment = line.lstrip("#").strip()
            if comment.lower().startswith("exam:"):
                words = comment[5:].lower().split()
                kind, regions = (words[0] if words else ""), tuple(words[1:])
                unknown = [r for r in regions if r not in BODY_REGIONS]
                if unknown:
                    raise TemplateError(f"{where}: line {number}: unknown body region {unknown[0]!r}; "
                                        f"use {', '.join(BODY_REGIONS)}")
            elif not title:
                title = comment
            continue
        heading = _HEADING.match(line)
        if heading:
            sections.append([heading.group(1).strip(), ""])
        elif sections:
            sections[-1][1] += line + "\n"
        elif line.strip():
            raise TemplateError(f"{where}: line {number}: text before the first section heading")
    headings = [h.upper() for h, _ in sections]
    for required in MODEL_SECTIONS:
        if required not in headings:
            raise TemplateError(f"{where}: no {required} section (a heading line '{required}:')")
    if headings[-2:] != list(MODEL_SECTIONS):
        raise TemplateError(f"{where}: FINDINGS and IMPRESSION must be the last two sections, in that order")
    if len(set(headings)) != len(headings):
        raise TemplateError(f"{where}: a section heading appears twice")
    for heading, body in sections:
        try:
            used = [f for _, f, _, _ in string.Formatter().parse(body) if f is not None]
        except ValueError as exc:
            raise TemplateError(f"{where}: section {heading}: {exc}") from exc
        unknown = [f for f in used if f not in FIELDS]
        if unknown:
            raise TemplateError(f"{where}: section {heading}: unknown field {{{unknown[0]}}}; "
                                f"known: {', '.join(FIELDS)}")
        if heading.upper() in MODEL_SECTIONS and body.strip() not in ("", f"{{{heading.lower()}}}"):
            raise TemplateError(f"{where}: section {heading} is written by the model: leave it empty or "
                                f"{{{heading.lower()}}}")
    return Template(name, title or name.replace("_", " "), kind, regions,
                    tuple((h, b.strip("\n")) for h, b in sections), path)


def load(name: str) -> Template:
    """The template called ``name`` (a file's stem); TemplateError when it is missing or malformed."""
    files = template_files()
    if name not in files:
        raise TemplateError(f"no report template {name!r}; available: {', '.join(files) or 'none'}")
    try:
        text = files[name].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{files[name]}: cannot be read ({exc})") from exc
    return parse(text, name, files[name])


def study_kind(study) -> str:
    return _KIND_WORDS.get(study.kind, study.kind)


def technique(study) -> str:
    """One line of what the study's headers say about how it was acquired (nothing guessed)."""
    kind = study_kind(study)
    tags = study.tags
    parts = [_MODALITY_NAMES.get(kind, study.modality or "Imaging")]
    named = body_regions(study)
    if named.source == "header" and named.regions:
        parts[0] += " of the " + _and(list(named.regions))
    if tags.study_description:
        parts[0] += f' (study "{tags.study_description}")'
    if study.is_volume:
        image = study.image
        count = image.array.shape[-3] if image.array.ndim >= 3 else 1
        spacing = image.spacing[-3] if len(image.spacing) >= 3 else None
        step = f" at {spacing:.3g} mm spacing" if spacing else ""
        parts.append(f"{count} axial images{step}")
    else:
        views = [im.view_position for im in study.images if im.view_position]
        count = len(study.images)
        parts.append(f"{count} image{'s' * (count != 1)}" + (f" ({', '.join(views)})" if views else
                                                              ", view not given in the header"))
    if tags.series_description:
        parts[-1] += f' (series "{tags.series_description}")'
    if not study.is_volume:
        return ", ".join(parts) + "."
    said = [t for t in (tags.study_description, tags.series_description) if t and _CONTRAST.search(t)]
    contrast = (f'contrast as the header describes it: "{said[0]}"' if said
                else "no contrast information in the header")
    return ", ".join(parts) + f"; {contrast}."


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def fields_for(study, indication: str = "", comparison: str = "") -> dict[str, str]:
    """The fields a template's sections may hold, for ``study``."""
    tags = study.tags
    return {"indication": " ".join(indication.split()) or NOT_GIVEN["indication"],
            "comparison": " ".join(comparison.split()) or NOT_GIVEN["comparison"],
            "technique": technique(study), "study_description": tags.study_description,
            "series_description": tags.series_description, "modality": study.modality,
            "findings": "", "impression": ""}


def preamble(template: Template, study, indication: str = "", comparison: str = "") -> str:
    """The filled sections before FINDINGS, each "HEADING:\\ntext", ending in a blank line ('' if none)."""
    values = fields_for(study, indication, comparison)
    parts = [f"{heading}:\n{body.format(**values).strip()}" for heading, body in template.sections
             if heading.upper() not in MODEL_SECTIONS]
    return "".join(part + "\n\n" for part in parts)


def fill(template: Template, study, indication: str = "", comparison: str = "", findings: str = "",
         impression: str = "") -> str:
    """The whole report text: the template's sections filled from the study, the reader's indication and
    comparison, and the findings and impression given."""
    written = {"FINDINGS": findings.strip(), "IMPRESSION": impression.strip()}
    tail = "\n\n".join(f"{template.heading(s)}:\n{written[s]}" for s in MODEL_SECTIONS)
    return preamble(template, study, indication, comparison) + tail


def map_heading(template: Template | None, heading: str) -> str:
    """A streamed section heading ("Findings (chest):\\n", "\\n\\nImpression:\\n") with the template's own
    section name ("FINDINGS (chest):\\n"); unchanged without a template."""
    if template is None:
        return heading
    match = re.match(r"^(\s*)(Findings|Impression)\b", heading)
    if not match:
        return heading
    return match.group(1) + template.heading(match.group(2)) + heading[match.end():]


def suggest(study, names: list[str] | None = None) -> str | None:
    """The template that suits ``study`` best: its kind, then the most body regions in common (fewest
    others); None when no template is for this kind of study."""
    kind = study_kind(study)
    regions = set(body_regions(study).regions)
    best, score = None, None
    for name in names if names is not None else list_templates():
        try:
            template = load(name)
        except TemplateError:
            continue
        if template.kind and template.kind != kind:
            continue
        mine = set(template.regions)
        rank = (len(mine & regions), -len(mine - regions), bool(template.kind))
        if score is None or rank > score:
            best, score = name, rank
    return best
