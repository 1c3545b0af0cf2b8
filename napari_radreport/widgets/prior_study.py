"""The prior study (issue 22, item 7): choose or open the study the active one is compared with, show the two
side by side with linked slices, and let the report's Comparison section name it.

``PriorRow`` is the Study dock's compact row: "Prior:" with a list of the viewer's other studies, *Open…*
(a file dialog; the study is checked before it is added), the offset in mm and *Side by side*. The pair,
its link and its offset live in the session (``ViewerSession.prior_of``, ``set_prior``, ``prior_link``,
``comparison``); the pure geometry is ``io/prior_link.py``.

``SideBySide`` puts the pair in napari's grid: one row of two cells, the current study on the left and its
prior on the right, every other layer hidden while it lasts. napari 0.9 draws a grid with one camera and one
dims slider for all cells, so the prior cannot be stepped on its own: it is linked by translating its layer
along the axial axis (and, without a shared frame of reference, centring it in-plane), so that the world
slice the slider shows is, in the prior, the slice at the same patient height plus the offset
(``io.prior_link.prior_translate``). With parallel axial axes one translate links every slice; it is
recomputed when the slider moves in case they are not. Outside the prior's extent its cell is empty (napari
draws nothing there). The canvas's bottom corners name the two cells' studies (date; the prior's slice and
offset, short lines that fit a narrow canvas). Leaving side by side puts the grid, the prior's translate and
every layer's visibility back as they were; showing any other layer (a ruler started, say) leaves it too, as
the grid would give that layer a cell of its own.
"""

from __future__ import annotations

import contextlib
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.common import one_line
from napari_radreport.io.identity import identity_line, study_date
from napari_radreport.io.prior_link import (
    PriorRefused,
    axial_axis,
    cannot_link,
    check_prior,
    prior_slice,
    prior_translate,
)
from napari_radreport.widgets.reading_tools import _blocked
from napari_radreport.widgets.session import (
    ViewerSession,
    error_html,
    real_viewer,
    session_for,
    study_of,
    warning_html,
)
from napari_radreport.widgets.status_line import StatusLine

if TYPE_CHECKING:
    import napari

    from napari_radreport.io import Study

NO_PRIOR = "None"
PRIOR_TIP = "The earlier study this one is compared with: the report's Comparison section names it"
OFFSET_RANGE_MM = 2000.0  # two scanners' heights (z) of one anatomy may differ by a metre or more
GRID_SPACING_PX = 4
# Each cell's label: a canvas text overlay (not gridded) in the canvas's bottom corner under that cell.
ROLE_OVERLAYS = {"current": ("radreport_current", "bottom_left"),
                 "prior": ("radreport_prior", "bottom_right")}
ROLE_COLOR = (1.0, 0.8, 0.35, 1.0)


def _image_layer(viewer: Any, study: Study | None) -> Any:
    """The study's first image layer in the viewer (None when it has none there)."""
    return next((layer for layer in viewer.layers if study is not None and study_of(layer) is study), None)


def _when(study: Study) -> str:
    tags = study.tags
    return study_date(tags.study_date or tags.series_date or tags.acquisition_date)


class SideBySide(QObject):
    """The current study and its prior in a one-row grid with linked slices (see the module docstring).

    ``show(study, prior)``, ``hide()``, ``pair`` (the pair on screen or None), ``prior_shown_slice()`` (the
    prior's slice under the slider, None outside it), ``labels()``; ``linked(str)`` says what the prior's
    cell shows, ``changed`` fires when side by side starts or ends."""

    linked = Signal(str)
    changed = Signal()

    def __init__(self, viewer: napari.Viewer, session: ViewerSession, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = real_viewer(viewer)
        self.session = session
        self.pair: tuple[Study, Study] | None = None
        self._layers: tuple[Any, Any] | None = None
        self._visible: list[tuple[Any, bool]] = []  # every layer's visibility before the grid
        self._translate: np.ndarray | None = None  # the prior layer's own translate
        self._grid: dict[str, Any] = {}
        self._relinking = False
        self._arranging = False  # the grid is being set or put back here
        self.viewer.dims.events.current_step.connect(self.relink)
        self.viewer.canvas.grid.events.enabled.connect(self._grid_switched)
        session.prior_changed.connect(self._prior_changed)
        session.study_changed.connect(self._study_changed)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.viewer.layers.events.connect(self._another_shown)

    # -- on and off --------------------------------------------------------------------------------------
    def show(self, study: Study, prior: Study) -> str:
        """Show ``study`` (left) and ``prior`` (right) linked; "" when shown, else why not (one line)."""
        reason = cannot_link(study, prior)
        layers = (_image_layer(self.viewer, study), _image_layer(self.viewer, prior))
        if not reason and None in layers:
            reason = "both studies must be open in the viewer"
        if reason:
            return f"Not side by side: {reason}."
        if self.pair is not None:
            self.hide(put_back=False)
        self.pair, self._layers = (study, prior), layers
        self._visible = [(layer, layer.visible) for layer in self.viewer.layers]
        self._translate = np.array(layers[1].translate, dtype=float)
        grid = self.viewer.canvas.grid
        self._grid = {"enabled": grid.enabled, "shape": grid.shape, "stride": grid.stride,
                      "spacing": grid.spacing}
        index = [self.viewer.layers.index(layer) for layer in layers]
        self._arranging = True
        try:
            for layer in self.viewer.layers:
                layer.visible = layer is layers[0] or layer is layers[1]
            grid.stride = 1 if index[0] < index[1] else -1  # the current study in the left cell
            grid.shape = (1, 2)
            grid.spacing = GRID_SPACING_PX
            grid.enabled = True
        finally:
            self._arranging = False
        self.relink()
        self._label("current", f"CURRENT\n{_when(study)}".strip())
        self.viewer.reset_view()
        self.changed.emit()
        return ""

    def hide(self, *, put_back: bool = True) -> None:
        """Leave side by side: the grid, the prior's translate and the layers' visibility as they were; the
        active study back on screen alone (unless ``put_back`` is False: another pair follows)."""
        if self.pair is None:
            return
        current, prior = self._layers
        present = set(map(id, self.viewer.layers))
        for key, _ in ROLE_OVERLAYS.values():
            with contextlib.suppress(KeyError):
                self.viewer.canvas.overlays.pop(key)
        if id(prior) in present and self._translate is not None:
            prior.translate = self._translate
        self._arranging = True
        try:
            for name, value in self._grid.items():
                setattr(self.viewer.canvas.grid, name, value)
            for layer, visible in self._visible:
                if id(layer) in present:
                    layer.visible = visible
        finally:
            self._arranging = False
        self.pair, self._layers, self._visible, self._translate = None, None, [], None
        if put_back:
            self.session.put_on_screen()
            self.viewer.reset_view()
        with contextlib.suppress(RuntimeError):  # the dock is closing
            self.linked.emit("")
            self.changed.emit()

    # -- linking -----------------------------------------------------------------------------------------
    def _current_index(self) -> float:
        """The current study's continuous axial index under the slider."""
        study, layer = self.pair[0], self._layers[0]
        data = np.asarray(layer.world_to_data(np.asarray(self.viewer.dims.point)), dtype=float)
        return float(data[len(data) - 3 + axial_axis(study.image)])

    def relink(self, *_args: Any) -> None:
        """Translate the prior's layer so that the slider's slice shows the linked prior slice."""
        if self.pair is None or self._relinking:
            return
        study, prior = self.pair
        link = self.session.prior_link(study)
        if link is None or self.session.prior_of(study) is not prior:
            return
        self._relinking = True  # a new translate may change the sliders' range, and with it the step
        try:
            layer = self._layers[1]
            moved = np.array(layer.translate, dtype=float)
            moved[-3:] = prior_translate(study.image, prior.image, link, self._current_index())
            if not np.allclose(moved, layer.translate, atol=1e-6):
                layer.translate = moved
            self._say_where()
        finally:
            self._relinking = False

    def prior_shown_slice(self) -> int | None:
        """The prior's slice (0-based) linked with the current slice under the slider; None outside it."""
        if self.pair is None:
            return None
        study, prior = self.pair
        link = self.session.prior_link(study)
        return None if link is None else prior_slice(study.image, prior.image, self._current_index(), link)

    def _say_where(self) -> None:
        prior = self.pair[1]
        shown = self.prior_shown_slice()
        count = prior.image.array.shape[-3 + axial_axis(prior.image)]
        where = f"slice {shown + 1}/{count}" if shown is not None else "outside its slices"
        offset = self.session.prior_link(self.pair[0]).offset_mm
        where += f"\noffset {offset:+g} mm" if offset else ""
        self._label("prior", f"PRIOR {_when(prior)}".strip() + f"\n{where}")
        self.linked.emit(f"Prior: {where}")

    def _label(self, role: str, text: str) -> None:
        """The label under the ``role`` ("current", "prior") cell."""
        from napari.components.overlays import TextOverlay

        key, position = ROLE_OVERLAYS[role]
        overlay = self.viewer.canvas.overlays.get(key)
        if overlay is None:
            overlay = TextOverlay(position=position, box=False, color=ROLE_COLOR, font_size=10)
            self.viewer.canvas.overlays[key] = overlay
        overlay.text = text
        overlay.visible = True

    def labels(self) -> dict[str, str]:
        """The cells' labels by role ("current", "prior"), while side by side."""
        shown = {role: self.viewer.canvas.overlays.get(key) for role, (key, _) in ROLE_OVERLAYS.items()}
        return {role: o.text for role, o in shown.items() if o is not None and o.visible}

    # -- following the session ---------------------------------------------------------------------------
    def _prior_changed(self, study: Study) -> None:
        if self.pair is None or study is not self.pair[0]:
            return
        prior = self.session.prior_of(study)
        if prior is None:
            self.hide()
        elif prior is not self.pair[1]:
            self.show(study, prior)
        else:
            self.relink()

    def _study_changed(self, study: Study | None) -> None:
        """The pair stays while either of its studies is the active one; another study shows its own pair,
        or leaves side by side."""
        if self.pair is None or study is None or any(study is s for s in self.pair):
            return
        prior = self.session.prior_of(study)
        if prior is None or self.show(study, prior):
            self.hide()

    def _grid_switched(self, *_args: Any) -> None:
        """napari's own grid button turned the grid off: side by side ends with it."""
        if self.pair is not None and not self._arranging and not self.viewer.canvas.grid.enabled:
            self.hide()

    def _another_shown(self, event: Any) -> None:
        """Another layer shown (a ruler started, a layer ticked in the list): napari's grid would give it a
        cell of its own and move the pair's, so side by side ends first."""
        if (self.pair is None or self._arranging or getattr(event, "type", "") not in ("visible", "inserted")
                or not any(layer.visible and all(layer is not p for p in self._layers)
                           for layer in self.viewer.layers)):
            return
        self.hide()

    def _layer_removed(self, event: Any) -> None:
        if self._layers is not None and any(event.value is layer for layer in self._layers):
            self.hide()

    def teardown(self) -> None:
        """Leave side by side and let go of the viewer and the session (the dock closes)."""
        self.hide()
        for emitter, callback in ((self.viewer.dims.events.current_step, self.relink),
                                  (self.viewer.canvas.grid.events.enabled, self._grid_switched),
                                  (self.viewer.layers.events.removed, self._layer_removed),
                                  (self.viewer.layers.events, self._another_shown)):
            with contextlib.suppress(Exception):
                emitter.disconnect(callback)
        for signal, slot in ((self.session.prior_changed, self._prior_changed),
                             (self.session.study_changed, self._study_changed)):
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)


class PriorRow(QWidget):
    """The Study dock's "Prior:" row for the session's active study (see the module docstring).

    Methods the dock and tests use: ``choose(prior)`` (None: no prior), ``open_prior(source)`` (reads in the
    background; returns the worker), ``set_offset(mm)``, ``set_side_by_side(on)``; ``status`` says what
    was refused, noted or linked."""

    def __init__(self, viewer: napari.Viewer, session: ViewerSession | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = real_viewer(viewer)
        self.session = session if session is not None else session_for(self.viewer)
        self.side = SideBySide(self.viewer, self.session, self)
        self._choices: list[Study] = []
        self._worker: Any = None
        self._notes = ""

        self.combo = QComboBox()
        self.combo.setObjectName("radreport-prior")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(10)
        self.combo.setToolTip(PRIOR_TIP)
        self.combo.activated.connect(self._chosen)
        self.open_button = QPushButton("Open…")
        self.open_button.setObjectName("radreport-prior-open")
        self.open_button.setToolTip("Open a prior study (a DICOM file of its series, a NIfTI file); it must "
                                    "be of the same patient")
        self.open_button.clicked.connect(self._ask_file)
        self.offset = QDoubleSpinBox()
        self.offset.setObjectName("radreport-prior-offset")
        self.offset.setRange(-OFFSET_RANGE_MM, OFFSET_RANGE_MM)
        self.offset.setDecimals(1)
        self.offset.setSuffix(" mm")
        self.offset.setKeyboardTracking(False)
        self.offset.setToolTip("Offset along the body axis, added to the current slice's height (+ toward "
                               "the head) to find the prior's slice: set it when the same anatomy sits at "
                               "different heights in the two scans. A step is one prior slice.")
        self.offset.valueChanged.connect(self.set_offset)
        self.side_button = QPushButton("Side by side")
        self.side_button.setObjectName("radreport-side-by-side")
        self.side_button.setCheckable(True)
        self.side_button.setToolTip("The current study and its prior in two cells, slices linked")
        self.side_button.toggled.connect(self.set_side_by_side)
        self.status = StatusLine()
        self.status.setObjectName("radreport-prior-status")
        for w in (self.open_button, self.side_button):
            w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        first, second = QHBoxLayout(), QHBoxLayout()
        for row in (first, second):
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(2)
        first.addWidget(QLabel("Prior:"))
        first.addWidget(self.combo, 1)
        first.addWidget(self.open_button)
        second.addWidget(QLabel("Offset"))
        second.addWidget(self.offset, 1)
        second.addWidget(self.side_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.status)

        self.session.studies_changed.connect(self._refill)
        self.session.study_changed.connect(self._follow_study)
        self.session.prior_changed.connect(self._prior_changed)
        self.side.linked.connect(self._show_link)
        self.side.changed.connect(self._show_state)
        self.destroyed.connect(lambda *_, teardown=self.teardown: teardown())
        self._follow_study()

    # -- the active study and its prior ------------------------------------------------------------------
    @property
    def study(self) -> Study | None:
        return self.session.study

    def _refill(self, *_args: Any) -> None:
        """The combo: "None", then every other study open in the viewer; the active study's prior chosen."""
        study = self.study
        self._choices = [s for _, s in self.session.studies() if s is not study]
        names = {id(s): name for name, s in self.session.studies()}
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem(NO_PRIOR)
        for other in self._choices:
            self.combo.addItem(identity_line(other, names.get(id(other), "")))
        prior = self.session.prior_of(study)
        index = next((i + 1 for i, s in enumerate(self._choices) if s is prior), 0)
        self.combo.setCurrentIndex(index)
        self.combo.setToolTip(f"{PRIOR_TIP}:\n{self.combo.currentText()}" if index else PRIOR_TIP)
        self.combo.blockSignals(False)

    def _follow_study(self, *_args: Any) -> None:
        self._notes = ""
        self._refill()
        self._show_state()

    def _prior_changed(self, study: Study) -> None:
        if study is self.study:
            self._refill()
            self._show_state()

    def _show_state(self) -> None:
        """Enable what applies to the active study and its prior; the offset and the link's description."""
        study = self.study
        prior = self.session.prior_of(study)
        link = self.session.prior_link(study)
        self.combo.setEnabled(study is not None)
        self.open_button.setEnabled(study is not None)
        linkable = prior is not None and not cannot_link(study, prior)
        self.offset.setEnabled(linkable)
        with _blocked(self.offset):
            self.offset.setValue(link.offset_mm if link is not None else 0.0)
            step = prior.image.spacing[axial_axis(prior.image)] if linkable else 1.0
            self.offset.setSingleStep(float(step))
        shown = self.side.pair is not None and any(study is s for s in self.side.pair)
        self.side_button.setEnabled(linkable or shown)
        with _blocked(self.side_button):
            self.side_button.setChecked(shown)
        lines = []
        if shown and self.side.pair[1] is study:
            beside = html.escape(self.session.name_of(self.side.pair[0]), quote=False)
            lines.append(f"Shown beside {beside} as its prior.")
        if prior is not None:
            lines.append(html.escape(f"Comparison: {self.session.comparison(study)}", quote=False))
            if linkable:
                lines.append(html.escape(link.describe(), quote=False))
        if self._notes:
            lines.append(warning_html(self._notes))
        self.status.setText("<br>".join(lines))
        self.status.setToolTip(self.status.text())

    def _show_link(self, text: str) -> None:
        self.side_button.setToolTip("The current study and its prior in two cells, slices linked"
                                    + (f"\n{text}" if text else ""))

    # -- choosing ----------------------------------------------------------------------------------------
    def _chosen(self, index: int) -> None:
        self.choose(self._choices[index - 1] if 0 < index <= len(self._choices) else None)

    def choose(self, prior: Study | None) -> bool:
        """Make ``prior`` the active study's prior (None: none); False, with the reason, when refused."""
        study = self.study
        if study is None:
            return False
        try:
            notes = self.session.set_prior(study, prior)
        except PriorRefused as exc:
            self._refill()  # the earlier choice stays
            self._show_state()
            self.status.setText(error_html(str(exc)))
            return False
        text = "; ".join(notes)
        self._notes = text[:1].upper() + text[1:] + ("." if text else "")
        self._show_state()
        return True

    def set_offset(self, offset_mm: float) -> None:
        """The manual offset (mm, + toward the head) of the active study's prior."""
        study = self.study
        if study is not None and self.session.prior_of(study) is not None:
            self.session.set_prior_offset(study, float(offset_mm))
        with _blocked(self.offset):
            self.offset.setValue(float(offset_mm))

    def set_side_by_side(self, on: bool) -> None:
        """Show the active study and its prior side by side (on), or leave side by side (off)."""
        study = self.study
        if not on:
            self.side.hide()
        elif study is not None and self.side.pair is not None and any(study is s for s in self.side.pair):
            pass  # already shown (the active study is its pair's prior)
        else:
            prior = self.session.prior_of(study)
            reason = "Choose a prior first." if prior is None else self.side.show(study, prior)
            if reason:
                self._show_state()
                self.status.setText(error_html(reason))
                return
        self._show_state()

    # -- opening -----------------------------------------------------------------------------------------
    def _ask_file(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open a prior study")
        if paths:
            self.open_prior(paths if len(paths) > 1 else paths[0])

    def open_prior(self, source: Any) -> Any:
        """Read ``source`` in the background; when it may be the active study's prior, add it to the viewer
        and choose it (the active study stays active), else say why and add nothing."""
        from napari.qt.threading import create_worker

        from napari_radreport.io import load_study

        study = self.study
        if study is None:
            return None
        first = source if isinstance(source, (str, Path)) else source[0]
        self.status.setText(f"Reading {html.escape(Path(str(first)).name, quote=False)}…")
        worker = create_worker(load_study, source,
                               allow_mixed_patients=self.session.settings.allow_mixed_patients,
                               _ignore_errors=True)
        worker.returned.connect(lambda prior: self._opened(study, prior))
        worker.errored.connect(lambda exc: self.status.setText(error_html(f"Not opened: {one_line(exc)}")))
        self._worker = worker
        worker.start()
        return worker

    def _opened(self, study: Study, prior: Study) -> None:
        from napari_radreport.viewer import add_study

        try:
            check_prior(study, prior)
        except PriorRefused as exc:
            self.status.setText(error_html(f"Not opened: {exc}"))
            return
        was_beside = self.side.pair is not None and self.side.pair[0] is study
        add_study(self.viewer, prior)  # a new study becomes the active one: the current one stays it
        self.session.set_study(study)
        if self.choose(prior) and was_beside:
            self.set_side_by_side(True)

    def teardown(self) -> None:
        """Leave side by side and let go of the session (runs when the widget is destroyed)."""
        self.side.teardown()
        for signal, slot in ((self.session.studies_changed, self._refill),
                             (self.session.study_changed, self._follow_study),
                             (self.session.prior_changed, self._prior_changed)):
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
