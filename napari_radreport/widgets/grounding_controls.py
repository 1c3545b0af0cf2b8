"""Locating a draft's sentences in the image, for the Report dock: the Locate and Show all buttons, the
grounding job after each report, and what a click on an underlined sentence shows (``location_layers``).

The job runs on the engine's thread after the report (never while it streams). Its result goes into the
draft (``Draft.grounding``, saved and exported); the heatmaps stay in memory for this session only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QPushButton

from napari_radreport.drafts import Draft
from napari_radreport.grounding.support import grounding_refusal
from napari_radreport.widgets.session import error_html

HEATMAP_STUDIES = 2  # studies whose last grounding keeps its heatmaps in memory
LOCATE_TIP = "Find where each finding sentence of the draft is in the image (underlined; click one)"


class GroundingControls:
    """The buttons (``locate``, ``show_all``) and the grounding jobs of one Report dock."""

    def __init__(self, owner, session, draft_for: Callable[[Any], Draft], say: Callable[[str], None],
                 refresh: Callable[[], None], save: Callable[[Draft], None]):
        self.owner, self.session = owner, session
        self._draft_for, self._say, self._refresh, self._save = draft_for, say, refresh, save
        # study key -> (section, text) -> Location with its heatmap: the last grounding of the last
        # HEATMAP_STUDIES studies only (a heatmap is a model grid of floats: 220 MB for CT-CHAT's)
        self.locations: OrderedDict[str, dict[tuple[str, str], Any]] = OrderedDict()
        self.locate = QPushButton("Locate")
        self.locate.setObjectName("radreport-locate")
        self.locate.setToolTip(LOCATE_TIP)
        self.locate.clicked.connect(lambda: self.ground(self.session.study))
        self.show_all = QPushButton("Show all")
        self.show_all.setObjectName("radreport-show-all")
        self.show_all.setToolTip("Draw the box of every located finding on the image, labelled")
        self.show_all.clicked.connect(self.draw_all)

    def refusal(self, study) -> str:
        """Why the loaded model cannot locate sentences in ``study`` ('' when it can, or none is loaded)."""
        info = self.session.engine.info
        return grounding_refusal(info.kind, info.modality, study) if info is not None and study else ""

    def update(self, busy: bool) -> None:
        study = self.session.study
        draft = self._draft_for(study) if study is not None else None
        refusal = self.refusal(study)
        self.locate.setEnabled(not busy and draft is not None and bool(draft.text.strip()) and not refusal
                               and self.session.engine.loaded)
        self.locate.setToolTip(f"Not available: {refusal}" if refusal else LOCATE_TIP)
        self.show_all.setEnabled(bool(draft and any(g.get("location") for g in draft.grounding)))

    def ground(self, study, questions: dict[str, str] | None = None, keep: str = "") -> None:
        """Locate the sentences of ``study``'s draft as it reads now (after a report: at once); the line said
        when it is done follows ``keep`` (the report's own message)."""
        if study is None or not self.session.engine.loaded or self.refusal(study):
            return
        draft = self._draft_for(study)
        questions = questions or draft.questions or None
        text = draft.text

        def done(sentences: list) -> None:
            draft.grounding = [s.as_dict() for s in sentences]
            draft.questions = dict(questions or draft.questions)
            self._keep_locations(study.key, {(s.section, s.text): s.location for s in sentences
                                             if s.location is not None})
            self._save(draft)
            self._refresh()
            methods = sorted({s.location.method for s in sentences if s.location is not None})
            located = sum(1 for s in sentences if s.location is not None)
            stated = sum(1 for s in sentences if s.finding and s.section in ("findings", "impression"))
            said = (f"Located {located} of {stated} finding sentences (underlined: click one to see where; "
                    f"found by {', '.join(methods) or 'no method'}, so check it on the image)." if stated else
                    "No sentence of the draft states a finding to locate.")
            self._say(f"{keep} {said}" if keep else said)

        self.session.run(self.owner, "ground", study, text, questions=questions, on_result=done,
                         on_error=lambda message: self._say(error_html(message)),
                         error_prefix="Could not locate the findings")

    def _keep_locations(self, study_key: str, found: dict[tuple[str, str], Any]) -> None:
        """``found`` replaces the study's earlier locations; the oldest study's go past HEATMAP_STUDIES."""
        self.locations.pop(study_key, None)
        self.locations[study_key] = found
        while len(self.locations) > HEATMAP_STUDIES:
            self.locations.popitem(last=False)

    def show(self, sentence: dict[str, Any]) -> None:
        """Go to where ``sentence`` (a grounded sentence of the active study's draft) is, and draw it."""
        from napari_radreport.widgets.location_layers import show_sentence

        study = self.session.study
        if study is None:
            return
        key = (sentence.get("section", ""), sentence.get("text", ""))
        said = show_sentence(self.session, sentence, self.locations.get(study.key, {}).get(key))
        if said:
            self._say(said)

    def draw_all(self) -> None:
        from napari_radreport.viewer import study_image_layers
        from napari_radreport.widgets.location_layers import show_all

        viewer, study = self.session.viewer_ref(), self.session.study
        layers = study_image_layers(viewer, study) if viewer is not None and study is not None else []
        if layers:
            show_all(viewer, layers, study, self._draft_for(study).grounding)
