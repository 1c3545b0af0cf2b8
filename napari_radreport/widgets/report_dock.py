"""The Report dock: choose study and model, Generate / Stop, watch the draft stream in, edit, export.

The draft is saved while it streams (at most once every ``STREAM_SAVE_S``), so a crash or a kill keeps the
text written so far; its ``stop_reason`` says how the generation ended ("generating" until it does), and an
export of a stopped or unfinished draft says it is incomplete.

Generating again keeps the current text in the draft's history (the editor's History…); a draft the user
edited or signed off is replaced only after asking (``ask_replace_draft``, No by default).

A draft follows the chosen report template (``report_templates``: the one that suits the study is chosen when
it opens): its INDICATION (typed beside it), TECHNIQUE (from the headers) and COMPARISON are written first,
then the model's findings and impression stream in under the template's headings. The indication reaches the
model only where its prompt spec reads one (``indication_template``); otherwise the dock says so once.
"""

from __future__ import annotations

import copy
import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_radreport import report_templates
from napari_radreport.common import one_line
from napari_radreport.drafts import Draft, DraftCorrupted
from napari_radreport.engine.events import Progress, ScopeChecked, SectionStarted, Token
from napari_radreport.engine.prompts import REGIONS
from napari_radreport.export.formats import dialog_filters
from napari_radreport.widgets.draft_editor import DraftEditor
from napari_radreport.widgets.grounding_controls import GroundingControls
from napari_radreport.widgets.scope_note import ScopeNote
from napari_radreport.widgets.session import error_html, session_for
from napari_radreport.widgets.shortcuts import add_shortcut, shortcut_text
from napari_radreport.widgets.status_line import StatusLine
from napari_radreport.widgets.study_picker import StudyPicker

if TYPE_CHECKING:
    import napari

SECTION_CHOICES = {"Findings and impression": ("findings", "impression"), "Findings": ("findings",),
                   "Impression": ("impression",)}
NOTICE = ("Reports written here are machine-generated drafts. They can be wrong or miss findings and must be "
          "reviewed by a qualified reader before any use.")
GENERATE_KEY, STOP_KEY, EXPORT_KEY = "Ctrl+Return", "Escape", "Ctrl+E"
GENERATE_TIP = "Write a draft report of the active study"
STREAM_SAVE_S = 1.0  # while a draft streams in, it is saved at most this often
NO_TEMPLATE = "No template"
INDICATION_UNREAD = "This model does not read the indication: it is kept in the draft only."


class ReportDock(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.session = session = session_for(napari_viewer)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)  # no stretch below
        self.drafts: dict[str, Draft] = {}
        self.job_study = None  # the study the running generation writes for
        self._stream_saved_at = 0.0  # time.monotonic() of the last save while streaming
        self._generate_after_load = False
        self._replace_agreed: Draft | None = None  # the draft the user agreed to replace, before a model load
        self.ask_replace_draft: Callable[[Draft], bool] = self._ask_replace_draft

        self.notice = QWidget()
        notice_text = QLabel(f"<b>Please note.</b> {NOTICE}")
        notice_text.setWordWrap(True)
        ok = QPushButton("I understand")
        ok.clicked.connect(self._acknowledge)
        notice_layout = QVBoxLayout(self.notice)
        notice_layout.addWidget(notice_text)
        notice_layout.addWidget(ok)
        self.notice.setStyleSheet("background:#5a3a00;border-radius:4px")
        self.notice.setVisible(not session.settings.notice_acknowledged)

        self.picker = StudyPicker(session)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.sections = QComboBox()
        self.sections.addItems(list(SECTION_CHOICES))
        self.region_boxes = {r: QCheckBox(r) for r in REGIONS}
        self.region_row = QWidget()
        regions = QHBoxLayout(self.region_row)
        regions.setContentsMargins(0, 0, 0, 0)
        regions.addWidget(QLabel("Findings per region:"))
        for box in self.region_boxes.values():
            box.setToolTip("Write the findings region by region (as the AMOS-MM seed does)")
            regions.addWidget(box)
        self.template = QComboBox()
        self.template.setToolTip("The report template: its sections, with the findings and impression "
                                 "written by the model")
        self._fill_templates()
        self.indication = QLineEdit()
        self.indication.setPlaceholderText("clinical question (optional)")
        self._template: report_templates.Template | None = None  # of the running generation
        self._preamble = ""  # the template's sections before FINDINGS, written when the model starts
        self._said_unread = False  # "this model does not read the indication", said once
        self._unread_note = False  # said after this generation
        self.generate_button = QPushButton("Generate report")
        self.generate_button.setObjectName("radreport-generate")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("radreport-stop")
        self.stop_button.clicked.connect(session.stop)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.status = StatusLine()
        self.scope_note = ScopeNote(session)
        self._kept: Draft | None = None  # the draft as it was before a generation that has not written yet
        self.speed = StatusLine()
        self._section = ""  # the section being written, for the speed line
        self.editor = DraftEditor(lambda: self.session.drafts, lambda: self.session.settings.reviewer_name,
                                  lambda name: self.session.update_settings(reviewer_name=name))
        self.editor.save_failed.connect(self._show_error)
        self.export_button = QPushButton("Export…")
        self.export_button.setObjectName("radreport-export")
        self.export_button.clicked.connect(self._ask_export)
        self.grounding = GroundingControls(self, session, self.draft_for, self.status.setText,
                                           self._refresh_marks, self._save)
        self.editor.editor.location_clicked.connect(self.grounding.show)
        self._ground_next: tuple[Any, dict[str, str]] | None = None  # (study, questions) after a report
        add_shortcut(self, GENERATE_KEY, self._generate_if_enabled, window=True)  # its tooltip: _busy_changed
        add_shortcut(self, STOP_KEY, session.stop, self.stop_button)
        add_shortcut(self, EXPORT_KEY, self._ask_export, self.export_button, window=True)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.load_button)
        template_row = QHBoxLayout()
        template_row.addWidget(QLabel("Template"))
        template_row.addWidget(self.template)
        template_row.addWidget(QLabel("Indication"))
        template_row.addWidget(self.indication, 1)
        buttons = QHBoxLayout()  # what to write, then write it: one row
        buttons.addWidget(self.sections)
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addWidget(self.notice)
        layout.addWidget(self.picker)
        layout.addLayout(model_row)
        layout.addWidget(self.region_row)
        layout.addLayout(template_row)
        progress_row = QHBoxLayout()  # the bar shares the speed line: no extra height while it shows
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.speed)
        self.editor.actions.addWidget(self.grounding.locate)
        self.editor.actions.addWidget(self.grounding.show_all)
        self.editor.actions.addWidget(self.export_button)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.scope_note)
        layout.addLayout(progress_row)
        layout.addWidget(self.editor, 1)

        session.study_changed.connect(self._study_changed)
        session.insert_into_report.connect(self.insert_text)  # a measurement from the reading tools
        session.model_changed.connect(self._model_changed)
        session.busy_changed.connect(self._busy_changed)
        for signal in (session.readability_known, session.settings_changed, session.model_changed):
            signal.connect(self._recheck)
        self.destroyed.connect(lambda *_, s=session: s.shutdown(timeout=0))
        self._model_changed(session.engine.info)
        self._busy_changed(session.busy)
        self._study_changed(session.study)

    # -- state ------------------------------------------------------------------------------
    def _acknowledge(self) -> None:
        self.session.update_settings(notice_acknowledged=True)
        self.notice.setVisible(False)

    def _fill_templates(self) -> None:
        self.template.clear()
        self.template.addItem(NO_TEMPLATE, None)
        for name in report_templates.list_templates():
            self.template.addItem(name.replace("_", " "), name)

    def _choose_template(self, study) -> None:
        """The template that suits ``study`` (its kind and body regions), else none."""
        name = report_templates.suggest(study, [n for n in (self.template.itemData(i)
                                                            for i in range(self.template.count())) if n])
        self.template.setCurrentIndex(max(0, self.template.findData(name)) if name else 0)

    def _model_changed(self, info) -> None:
        self.indication.setToolTip(INDICATION_UNREAD if info is not None and not info.reads_indication else
                                   "The clinical indication: written in the draft, and given to the model "
                                   "where it reads one")
        if info is None:
            folder = self.session.settings.model_folder or "the demo model"
            self.model_label.setText(f"Model: <i>not loaded</i> ({html.escape(folder)})")
        else:
            adapters = f", adapters {', '.join(info.adapters)}" if info.adapters else ""
            self.model_label.setText(
                f"Model: <b>{html.escape(info.name)}</b> ({info.device}, {info.precision}{adapters})")

    def _recheck(self, *_args: Any) -> None:
        """The buttons again, after the model, the settings or what the model can read changed."""
        self._busy_changed(self.session.busy)

    def _busy_changed(self, busy: bool) -> None:
        mine = busy and self.session.job_owner is self
        study = self.session.study
        refusal = self.session.cannot_read(study) if study is not None else ""
        self.generate_button.setEnabled(not busy and study is not None and not refusal)
        self.generate_button.setToolTip(f"This model cannot read this study: {refusal}" if refusal else
                                        f"{GENERATE_TIP} ({shortcut_text(GENERATE_KEY)})")
        self.load_button.setEnabled(not busy)
        self.stop_button.setEnabled(mine)
        self.editor.set_streaming(mine and self.job_study is self.session.study)
        self.grounding.update(busy)

    def _study_changed(self, study) -> None:
        self.region_row.setVisible(study is not None and study.kind == "ct")
        if study is not None:
            self._choose_template(study)
        self.editor.show_draft(self.draft_for(study) if study is not None else None)
        self._busy_changed(self.session.busy)

    def draft_for(self, study) -> Draft:
        key = study.key
        if key not in self.drafts:
            try:
                draft = self.session.drafts.load(key)
            except DraftCorrupted as exc:
                self._show_error(str(exc))
                draft = None
            name = next((n for n, s in self.session.studies() if s is study), "")
            self.drafts[key] = draft or Draft(study_key=key, study_label=name)
        return self.drafts[key]

    def _show_error(self, text: str) -> None:
        self.status.setText(error_html(text))

    # -- model ------------------------------------------------------------------------------
    def load_model(self) -> None:
        self.status.setText("Loading the model…")
        self.session.run(self, "load", on_events=self._on_events, on_result=self._loaded,
                         on_error=self._load_failed, progress=self.progress,
                         error_prefix="Could not load the model", **self.session.load_args())

    def _load_failed(self, text: str) -> None:
        self._generate_after_load, self._replace_agreed = False, None
        self._show_error(text)

    def _loaded(self, info) -> None:
        self.status.setText("; ".join(info.warnings) or "Model loaded.")
        if self._generate_after_load:
            self._generate_after_load = False
            self.generate()

    def insert_text(self, text: str) -> None:
        """Put ``text`` (a measurement) into the draft at the cursor, as typed text (autosaved, undoable); not
        while a report streams in."""
        if self.session.study is None:
            self._show_error("Open a study first.")
            return
        if self.editor.editor.isReadOnly():
            self._show_error("Not inserted: the report is still being written (Stop it or wait).")
            return
        self.editor.editor.insertPlainText(text)
        self.editor.editor.setFocus()

    # -- generating ---------------------------------------------------------------------------
    def _generate_if_enabled(self) -> None:
        """The shortcut does what the button would: nothing while it is disabled (busy, or a refusal)."""
        if self.generate_button.isEnabled():
            self.generate()

    def generate(self) -> None:
        from napari_radreport.engine.provenance import report_provenance, report_task

        study = self.session.study
        if study is None:
            self._show_error("Open a study first.")
            return
        refusal = self.session.cannot_read(study)
        if refusal:  # from the model's config: nothing loads for a study it cannot read
            self._show_error(f"Not generated: this model cannot read this study ({refusal}).")
            return
        draft = self.draft_for(study)
        if ((draft.edited or draft.reviewed) and draft is not self._replace_agreed
                and not self.ask_replace_draft(draft)):
            self.status.setText("Not generated: your draft is unchanged.")
            return
        if not self.session.engine.loaded:
            self._generate_after_load, self._replace_agreed = True, draft  # asked once, before the load
            self.load_model()
            return
        name = self.template.currentData()
        try:
            template = report_templates.load(name) if name else None
        except report_templates.TemplateError as exc:
            self._show_error(f"Not generated: {one_line(exc)}")
            return
        self._replace_agreed = None
        info, settings = self.session.engine.info, self.session.settings.generation()
        indication = " ".join(self.indication.text().split())
        regions = [r for r, box in self.region_boxes.items() if box.isChecked()] if study.kind == "ct" else []
        sections = SECTION_CHOICES[self.sections.currentText()]
        watcher = self.session.run(self, "report", study, sections=sections, regions=regions or None,
                                   settings=settings, indication=indication, on_events=self._on_events,
                                   on_result=self._generated, on_error=self._generation_failed,
                                   on_end=self._generation_ended,
                                   progress=self.progress, error_prefix="Generation failed")
        if watcher is None:  # busy: said why, nothing started
            return
        self._kept = copy.deepcopy(draft)
        draft.start_new_ai_draft(report_provenance(info, report_task(sections, regions), settings).as_dict())
        draft.stop_reason = "generating"  # until the job ends: a draft left so by a crash is incomplete
        if template is not None:
            draft.provenance["template"] = template.name
        self._template = template
        self._preamble = (report_templates.preamble(template, study, indication,
                                                    comparison=self.session.comparison(study))
                          if template else "")
        self.job_study = study
        self._stream_saved_at = 0.0  # the first streamed text is saved at once
        self.editor.show_draft(draft)
        self._unread_note = bool(indication) and not info.reads_indication and not self._said_unread
        self._said_unread = self._said_unread or self._unread_note
        self.status.setText("Starting…")
        self._busy_changed(True)

    def replace_draft_box(self, draft: Draft) -> QMessageBox:
        """The question before generating over an edited or signed-off draft; No is the default."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Generate again?")
        box.setText(f"Replace your {'edited' if draft.edited else 'reviewed'} draft? It is kept in History.")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        return box

    def _ask_replace_draft(self, draft: Draft) -> bool:
        return self.replace_draft_box(draft).exec() == QMessageBox.StandardButton.Yes

    def _write(self, text: str) -> None:
        """Streamed text goes to the draft of the study it came from (shown only if that study is shown)."""
        draft = self.drafts[self.job_study.key]
        draft.ai_draft += text
        draft.text += text
        if self.editor.draft is draft:
            self.editor.append(text)
        now = time.monotonic()
        if now - self._stream_saved_at >= STREAM_SAVE_S:
            self._stream_saved_at = now
            self._save(draft)

    def _save(self, draft: Draft) -> None:
        try:
            self.session.drafts.save(draft)
        except OSError as exc:
            self._show_error(f"could not save the draft: {one_line(exc)}")

    def _on_events(self, events: list[Any]) -> None:
        pieces: list[str] = []
        speed = ""  # the batch's last: one label update per poll, not one per token
        for event in events:
            if isinstance(event, Token):
                pieces.append(event.text)
                if event.tokens_per_s:  # the count is per section: each section is its own generation
                    where = f" in {self._section}" if self._section else ""
                    speed = f"{event.tokens_per_s:.1f} tokens/s · {event.count} tokens{where}"
            elif isinstance(event, SectionStarted):
                self._section = event.title  # the template's sections before FINDINGS come first
                pieces.append(self._preamble + report_templates.map_heading(self._template, event.heading))
                self._preamble = ""
                self.status.setText(f"Writing {event.title}…")
            elif isinstance(event, Progress):
                self.status.setText(html.escape(event.message or event.stage))
            elif isinstance(event, ScopeChecked) and self.job_study is not None:  # exported with the draft
                self.drafts[self.job_study.key].provenance["scope"] = event.verdict.as_dict()
        if speed:
            self.speed.setText(speed)
        if pieces and self.job_study is not None:
            self._write("".join(pieces))

    def _generated(self, result) -> None:
        """The draft keeps the text it streamed (the engine's ``result.text`` is the same text)."""
        stopped = " (stopped)" if result.stop_reason == "stopped" else ""
        if self.job_study is not None:
            draft = self.drafts[self.job_study.key]
            draft.stop_reason, draft.diagnosis = result.stop_reason, dict(result.diagnosis)
            draft.questions = dict(result.questions)
            in_scope = result.scope is None or result.scope.in_scope  # out of scope: only when asked (Locate)
            if result.stop_reason != "stopped" and in_scope and not self.grounding.refusal(self.job_study):
                self._ground_next = (self.job_study, dict(result.questions))
        found = len(result.conflicts)
        conflicts = f" It contradicts itself or the model's diagnosis in {found} place{'s' * (found != 1)} " \
                    f"(highlighted)." if found else ""
        name = html.escape((self.job_study and self.session.name_of(self.job_study)) or "the study")
        unread = f" {INDICATION_UNREAD}" if self._unread_note else ""
        self.status.setText(f"Draft of {name} ready{stopped}.{conflicts} Review and edit it before use."
                            f"{unread}")

    def _generation_failed(self, text: str) -> None:
        """One line; a draft the failed job had not written to yet is put back as it was (a refused study,
        e.g. outside the model's scope, keeps its earlier draft)."""
        draft = self.drafts.get(self.job_study.key) if self.job_study is not None else None
        if draft is not None and self._kept is not None and not draft.ai_draft:
            self.drafts[self.job_study.key] = draft = self._kept
            if self.editor.draft is not draft and self.job_study is self.session.study:
                self.editor.show_draft(draft)
        scope = self.session.scopes.get(self.job_study.key) if self.job_study is not None else None
        if scope and not scope["in_scope"] and draft is self._kept:  # refused: the note below says why
            text = ("Not generated: the study is outside this model's scope (below). Settings → \"Allow "
                    "studies outside the model's scope\" runs it anyway." if scope.get("readable", True) else
                    "Not generated: this model cannot read this kind of study (below).")
        self._show_error(text)

    def _generation_ended(self) -> None:
        """After the result or the error: the draft is saved and editable again."""
        study, self.job_study = self.job_study, None
        if study is None:
            return
        draft, self._kept = self.drafts[study.key], None
        if draft.stop_reason == "generating":  # no result: the job failed
            draft.stop_reason = "failed"
        if self.editor.draft is draft:
            self.editor.refresh()
        self.editor.set_streaming(False)
        self._save(draft)
        follow, self._ground_next = self._ground_next, None
        if follow is not None and follow[0] is study:
            self.grounding.ground(*follow, keep=self.status.text())  # on the engine thread, after the report

    def _refresh_marks(self) -> None:
        """The editor's underlines and the buttons again, after the draft's grounding changed."""
        self.editor.show_locations()
        self.grounding.update(self.session.busy)

    # -- export -----------------------------------------------------------------------------
    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the report", "", dialog_filters())
        if path:
            self.export_to(path, overwrite=True)  # the file dialog has asked about replacing

    def record(self):
        from napari_radreport.export import Provenance, ReportRecord, StudyReference

        study = self.session.study
        draft = self.draft_for(study)
        known = {k: v for k, v in draft.provenance.items() if k in Provenance.__dataclass_fields__}
        return ReportRecord(final_text=draft.text, ai_draft=draft.ai_draft, reviewed=draft.reviewed,
                            reviewer=draft.reviewer, reviewed_at=draft.reviewed_at,
                            study=StudyReference.from_study(study), provenance=Provenance(**known),
                            stop_reason=draft.stop_reason, diagnosis=dict(draft.diagnosis),
                            grounding=list(draft.grounding))

    def export_to(self, path: str, overwrite: bool = False, ask=None) -> str | None:
        """Write the current draft; asks before replacing a file (``ask`` answers in tests)."""
        from napari_radreport.export import ExportError, ExportExists, export_report

        if self.session.study is None:
            self._show_error("Open a study first.")
            return None
        self.editor.save_now()
        try:
            written = export_report(self.record(), path, overwrite=overwrite)
        except ExportExists:  # only without overwrite
            if ask is not None:
                answer = ask(path)
            else:
                answer = QMessageBox.question(self, "Replace file?", f"{path} exists. Replace it?")
            if answer not in (True, QMessageBox.StandardButton.Yes):
                self.status.setText("Export cancelled; the existing file was kept.")
                return None
            return self.export_to(path, overwrite=True)
        except (ExportError, OSError) as exc:
            self._show_error(f"Export failed: {one_line(exc)}")
            return None
        self.status.setText(f"Exported {html.escape(str(written))}")
        return str(written)
