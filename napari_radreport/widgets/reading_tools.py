"""Reading tools on the canvas, as a 3D Slicer/OHIF reader expects them (issue 22, item 6).

``ReadingTools(viewer, session)`` is one compact widget (two rows of small buttons) that follows the session's
active study:

* **Overlay**: orientation letters at the four edges of the canvas (the patient direction each edge faces,
  derived from the study's direction, the layer's transform, napari's displayed axes and the camera's axis
  flips), and "W 1500 L -600" over "slice 18/64 · z -123.5 mm" at the top left. napari 0.9 lets a plugin add
  its own canvas text overlays (``viewer.canvas.overlays``, positions such as ``middle_left``), so each letter
  sits at its edge.
* **Axial / Coronal / Sagittal**: one click shows that plane (``viewer.dims.order``). napari 0.9 draws one
  canvas with one camera and one dims order, and its grid mode only tiles layers in that same plane, so the
  main canvas shows one plane at a time (the three at once need canvases of their own: *3 planes*), with a
  linked cursor: a click (without dragging) on the canvas sets the cursor point, and switching planes keeps
  it as the slice position (``set_cursor``); scrolling a plane moves the cursor with it.
* **3 planes**: the axial plane on the main canvas and the coronal and sagittal planes in two extra canvases
  under it, all three on the linked cursor, with a crosshair (``widgets/three_plane.py``). Volumes only: for
  a radiograph the button is disabled and its tooltip says why.
* **Linear**: linear display interpolation of the study's layers (``interpolation2d``).
* **Ruler / ROI**: a Shapes layer per image layer, sharing its scale and translate so that shapes hold voxel
  indices; lengths, areas and statistics come from ``io.measurements`` with the study's own geometry, and
  each shape shows its value on the canvas. ROI: ellipse by default (napari's rectangle tool works too).
* **Insert**: emits ``measurement_text(str)`` with the selected (else the latest) measurement's report line,
  e.g. "12.4 mm (series 3, image 18)".

Radiographs get the W/L overlay, Linear, and Ruler/ROI when their pixel spacing is known ("spacing unknown"
otherwise); without a study the widget is disabled.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from napari_radreport.io.measurements import (
    Distance,
    MeasurementError,
    distance,
    distance_text,
    has_spacing,
    location_text,
    roi_statistics,
    roi_text,
    series_label,
)
from napari_radreport.io.orientation_letters import plane_axes, plane_of_axis
from napari_radreport.widgets.session import ViewerSession, image_of, real_viewer, session_for, study_of
from napari_radreport.widgets.three_plane import (
    ThreePlanes,
    cannot_show,
    canvas_letters,
    released_in_place,
    slice_axis_of,
)

if TYPE_CHECKING:
    import napari

    from napari_radreport.io.study import Study

PLANES = ("axial", "coronal", "sagittal")
PLANE_LABELS = {"axial": "Ax", "coronal": "Cor", "sagittal": "Sag"}
TOOL_MODES = {"ruler": "add_line", "roi": "add_ellipse"}
ROI_SHAPES = ("rectangle", "ellipse")
LETTER_COLOR = (0.55, 0.85, 1.0, 1.0)
INFO_COLOR = (0.95, 0.95, 0.6, 1.0)
MEASURE_COLOR = "yellow"
# The canvas text overlays this widget adds (key in viewer.canvas.overlays -> position).
OVERLAY_POSITIONS = {"radreport_info": "top_left", "radreport_left": "middle_left",
                     "radreport_right": "middle_right", "radreport_top": "top_center",
                     "radreport_bottom": "bottom_center"}


THREE_PLANES_TIP = "Axial here, coronal and sagittal in two canvases under it, on one linked crosshair"


class ReadingTools(QWidget):
    """Overlay, planes, interpolation, ruler and ROI for the session's active study (see the module doc).

    Signals: ``measurement_text(str)``, a measurement's report line, on "Insert into report".
    Methods the dock and tests use: ``set_overlay``, ``set_plane``, ``current_plane``, ``set_cursor``,
    ``set_three_planes`` (``three_planes`` is its ThreePlanes), ``set_linear``,
    ``set_tool``, ``measurement_layer``, ``measurement_line``, ``current_measurement``,
    ``insert_measurement``, ``teardown`` (also run when the widget is destroyed); ``overlay_text()`` gives
    the on-canvas texts, ``last_text`` the latest measurement's report line."""

    measurement_text = Signal(str)

    def __init__(self, viewer: napari.Viewer, session: ViewerSession | None = None, *,
                 overlay: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = real_viewer(viewer)
        self.session = session if session is not None else session_for(self.viewer)
        self.layer: Any = None  # the image layer the overlay follows
        self.last_text = ""
        self.cursor: np.ndarray | None = None  # linked cursor, world coordinates
        self._overlays: dict[str, Any] = {}
        self._watched: set[int] = set()  # ids of measurement layers whose data events are connected
        self._tool: str | None = None

        def button(text: str, tip: str, checkable: bool = True) -> QPushButton:
            b = QPushButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(checkable)
            b.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            return b

        self.overlay_button = button("Overlay", "Orientation letters, window/level and slice position on the "
                                                "canvas")
        self.plane_buttons = {p: button(PLANE_LABELS[p], f"Show the {p} plane (keeps the clicked point)")
                              for p in PLANES}
        self.plane_group = QButtonGroup(self)
        self.plane_group.setExclusive(True)
        for plane, b in self.plane_buttons.items():
            self.plane_group.addButton(b)
            b.clicked.connect(lambda _=False, p=plane: self.set_plane(p))
        self.three_button = button("3 planes", THREE_PLANES_TIP)
        self.three_button.setObjectName("radreport-three-planes")
        self.three_planes = ThreePlanes(self.viewer, set_cursor=self.set_cursor, parent=self)
        self.three_planes.changed.connect(self._three_planes_changed)
        self.three_button.toggled.connect(self.set_three_planes)
        self.linear_button = button("Linear", "Linear display interpolation (off: nearest voxel)")
        self.ruler_button = button("Ruler", "Draw a line: its length in mm")
        self.roi_button = button("ROI", "Draw an ellipse (or a rectangle, in the layer controls): mean, SD, "
                                        "min, max and area")
        self.insert_button = button("Insert into report", "Insert the selected (else the latest) "
                                                          "measurement into the report", checkable=False)
        self.status = QLabel("")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

        self.overlay_button.setChecked(overlay)
        self.overlay_button.toggled.connect(self.set_overlay)
        self.linear_button.toggled.connect(self.set_linear)
        self.ruler_button.toggled.connect(lambda on: self.set_tool("ruler" if on else None))
        self.roi_button.toggled.connect(lambda on: self.set_tool("roi" if on else None))
        self.insert_button.clicked.connect(self.insert_measurement)

        first, second = QHBoxLayout(), QHBoxLayout()
        for row in (first, second):
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(2)
        for b in (self.overlay_button, *self.plane_buttons.values(), self.three_button, self.linear_button):
            first.addWidget(b)
        first.addStretch(1)
        for b in (self.ruler_button, self.roi_button, self.insert_button):
            second.addWidget(b)
        second.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(first)
        layout.addLayout(second)

        v = self.viewer
        self._viewer_events = [
            (v.dims.events.current_step, self._refresh_overlay),
            (v.dims.events.current_step, self._cursor_follows_slice),
            (v.dims.events.order, self._on_view_changed),
            (v.dims.events.ndisplay, self._on_view_changed),
            (v.scene.camera.events.orientation, self._refresh_overlay),
            (v.layers.selection.events.active, self._on_active_layer),
            (v.layers.events.removed, self._on_layer_removed),
        ]
        for emitter, callback in self._viewer_events:
            emitter.connect(callback)
        v.mouse_drag_callbacks.append(self._cursor_click)
        for layer in v.layers:  # measurements made before this widget (a dock closed and opened again)
            if self._owner_of(layer) is not None:
                self._connect_measurements(layer)
        self.session.study_changed.connect(self._follow_study)
        self.destroyed.connect(lambda *_, teardown=self.teardown: teardown())
        self._follow_study()

    # -- following the study ---------------------------------------------------------------------------
    @property
    def study(self) -> Study | None:
        return self.session.study

    def study_layers(self) -> list:
        """The image layers of the active study."""
        from napari_radreport.viewer import study_image_layers

        return [] if self.study is None else study_image_layers(self.viewer, self.study)

    def image_layer(self) -> Any:
        """The active study's image layer: the selected one of its layers, else its first."""
        layers = self.study_layers()
        active = self.viewer.layers.selection.active
        if active in layers:
            return active
        owner = self._owner_of(active)
        if owner in layers:
            return owner
        return self.layer if self.layer in layers else (layers[0] if layers else None)

    def _watch(self, layer: Any) -> None:
        if layer is self.layer:
            return
        if self.layer is not None:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                self.layer.events.contrast_limits.disconnect(self._refresh_overlay)
        self.layer = layer
        if layer is not None:
            layer.events.contrast_limits.connect(self._refresh_overlay)

    def _follow_study(self, *_args: Any) -> None:
        """Set the buttons for the active study and watch its layer (the session's study changed)."""
        layer = self.image_layer()
        if self._tool is not None and self._owner_of(self._tool_layer()) is not layer:
            previous = self._tool_layer()
            if previous is not None:
                previous.mode = "pan_zoom"
            self._set_tool_buttons(None)
        self._watch(layer)
        image = image_of(layer)
        volume = self.study is not None and self.study.is_volume and image is not None
        self.setEnabled(image is not None)
        for b in self.plane_buttons.values():
            b.setVisible(volume)
        self._follow_three_planes(layer)
        measurable = image is not None and has_spacing(image)
        self.ruler_button.setEnabled(measurable)
        self.roi_button.setEnabled(measurable)
        self.insert_button.setEnabled(measurable)
        self.status.setText("" if measurable or image is None else "spacing unknown")
        with _blocked(self.linear_button):
            self.linear_button.setChecked(layer is not None and str(layer.interpolation2d) == "linear")
        self._show_own_measurements()
        self._on_view_changed()

    def _on_active_layer(self, *_args: Any) -> None:
        if self.study is not None and self.image_layer() is not self.layer:
            self._follow_study()

    def _on_layer_removed(self, event: Any) -> None:
        self._watched.discard(id(event.value))
        orphans = [layer for layer in self.viewer.layers if self._owner_of(layer) is event.value]
        if orphans:  # measurements of a closed image go with it (and let go of its data), once napari is done
            QTimer.singleShot(0, lambda: self._remove_layers(orphans))
        if event.value is self.layer:
            self._watch(None)
            self._follow_study()

    def _remove_layers(self, layers: list) -> None:
        for layer in layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def _show_own_measurements(self) -> None:
        """Measurement layers of other studies hide with their study (as the session hides its layers)."""
        if self.viewer.canvas.grid.enabled:
            return
        for layer in self.viewer.layers:
            owner = self._owner_of(layer)
            if owner is not None:
                layer.visible = study_of(owner) is self.study

    # -- overlay ---------------------------------------------------------------------------------------
    def set_overlay(self, on: bool) -> None:
        """Show or hide the orientation letters and the window/slice line."""
        with _blocked(self.overlay_button):
            self.overlay_button.setChecked(on)
        self._refresh_overlay()

    def _overlay(self, key: str) -> Any:
        overlay = self._overlays.get(key)
        if overlay is None:
            from napari.components.overlays import TextOverlay

            letter = key != "radreport_info"
            overlay = TextOverlay(position=OVERLAY_POSITIONS[key], box=False, visible=False,
                                  color=LETTER_COLOR if letter else INFO_COLOR,
                                  font_size=14 if letter else 10)
            self.viewer.canvas.overlays[key] = overlay
            self._overlays[key] = overlay
        return overlay

    def overlay_text(self) -> dict[str, str]:
        """The visible overlay texts by place: "info", "left", "right", "top", "bottom"."""
        return {key.removeprefix("radreport_"): o.text for key, o in self._overlays.items() if o.visible}

    def _slice_axis(self) -> int | None:
        """The spatial axis (array order) the 2D view slices along; None in 3D or without a volume."""
        return slice_axis_of(self.viewer.dims, image_of(self.layer))

    def _slice_index(self, axis: int) -> int:
        """The displayed slice along spatial ``axis`` (0-based voxel index)."""
        image = image_of(self.layer)
        data = self.layer.world_to_data(np.asarray(self.viewer.dims.point))
        return int(np.rint(data[len(data) - image.spatial_ndim + axis]))

    def _letters(self) -> Any:
        """The edge letters of the 2D view of the watched volume (None when they do not apply)."""
        return canvas_letters(self.layer, image_of(self.layer), self.viewer.dims, self.viewer.scene.camera)

    def _info_line(self) -> str:
        """"W 1500 L -600" over "slice 18/64 · z -123.5 mm" for the watched layer (two short lines stay clear
        of the top letter on a narrow canvas)."""
        layer = self.layer
        lo, hi = (float(x) for x in layer.contrast_limits)
        parts = [f"W {hi - lo:.0f} L {(hi + lo) / 2:.0f}"]
        axis = self._slice_axis()
        image = image_of(layer)
        if axis is not None:
            index = self._slice_index(axis)
            size = image.array.shape[image.array.ndim - image.spatial_ndim + axis]
            # another study on screen may widen the sliders past this volume
            parts.append(f"slice {index + 1}/{size}" if 0 <= index < size else f"outside the {size} slices")
            if image.direction is not None and has_spacing(image):
                centre = (np.asarray(image.array.shape[-image.spatial_ndim:], dtype=float) - 1) / 2
                centre[axis] = index
                position = image.index_to_patient(centre)
                k = int(np.argmax(np.abs(np.asarray(image.direction)[axis])))
                parts.append(f"{'xyz'[k]} {position[k]:.1f} mm")
        return "\n".join([parts[0], " · ".join(parts[1:])]) if len(parts) > 1 else parts[0]  # narrow canvases

    def _refresh_overlay(self, *_args: Any) -> None:
        on = self.overlay_button.isChecked() and self.layer is not None and image_of(self.layer) is not None
        if not on and not self._overlays:
            return
        letters = self._letters() if on else None
        texts = {"radreport_info": self._info_line() if on else ""}
        if letters is not None:
            texts.update(radreport_left=letters.left, radreport_right=letters.right,
                         radreport_top=letters.top, radreport_bottom=letters.bottom)
        for key in OVERLAY_POSITIONS:
            text = texts.get(key, "")
            if not text and key not in self._overlays:
                continue
            overlay = self._overlay(key)
            overlay.text = text
            overlay.visible = bool(text)

    # -- planes and the linked cursor --------------------------------------------------------------------
    def _spatial_world_axes(self) -> list[int]:
        image = image_of(self.layer)
        first = self.viewer.dims.ndim - image.spatial_ndim
        return list(range(first, self.viewer.dims.ndim))

    def current_plane(self) -> str | None:
        """The standard plane on screen ("axial", "coronal", "sagittal"), None in 3D or without a volume."""
        axis, image = self._slice_axis(), image_of(self.layer)
        if axis is None or image.direction is None:
            return None
        return plane_of_axis(image.direction, axis)

    def set_plane(self, plane: str) -> None:
        """Show ``plane`` of the watched volume; the slice position is the linked cursor's (the clicked point
        stays on screen: napari keeps ``dims.point`` when the order changes)."""
        image = image_of(self.layer)
        if image is None or image.direction is None or image.spatial_ndim < 3:
            return
        spatial = self._spatial_world_axes()
        slice_axis = spatial[plane_axes(image.direction)[plane]]
        in_plane = [a for a in spatial if a != slice_axis]
        others = [a for a in self.viewer.dims.order if a not in spatial]
        if self.cursor is not None:
            self.viewer.dims.set_point(spatial, self.cursor[spatial])
        self.viewer.dims.order = (*others, slice_axis, *in_plane)
        self._on_view_changed()

    def set_cursor(self, world_position: Any) -> None:
        """Make ``world_position`` (a full viewer point) the linked cursor: the slice in every plane."""
        point = np.asarray(world_position, dtype=float)
        if point.shape != (self.viewer.dims.ndim,):
            return
        self.cursor = point
        if image_of(self.layer) is not None:
            spatial = self._spatial_world_axes()
            self.viewer.dims.set_point(spatial, point[spatial])

    def _cursor_follows_slice(self, *_args: Any) -> None:
        """Scrolling the canvas's slice moves the linked cursor with it (a plane shown later keeps it)."""
        axis = self._slice_axis()
        if self.cursor is not None and axis is not None and self.cursor.shape == (self.viewer.dims.ndim,):
            world = self._spatial_world_axes()[axis]
            self.cursor[world] = self.viewer.dims.point[world]

    def _cursor_click(self, viewer: Any, event: Any):
        """A click without dragging on the canvas (and not while drawing) sets the linked cursor."""
        if event.type != "mouse_press" or event.modifiers or self._tool is not None:
            return
        yield from released_in_place(event, self.set_cursor)

    def _on_view_changed(self, *_args: Any) -> None:
        plane = self.current_plane() if self.layer is not None else None
        self.plane_group.setExclusive(False)
        for name, b in self.plane_buttons.items():
            with _blocked(b):
                b.setChecked(name == plane)
        self.plane_group.setExclusive(True)
        self._refresh_overlay()

    # -- three planes ------------------------------------------------------------------------------------
    def set_three_planes(self, on: bool) -> None:
        """Show (the main canvas axial, coronal and sagittal under it) or hide the three planes."""
        if on:
            if cannot_show(self.layer):
                on = False
            else:
                self.set_plane("axial")
                self.three_planes.show(self.layer)
        else:
            self.three_planes.hide()
        with _blocked(self.three_button):
            self.three_button.setChecked(on and self.three_planes.shown)

    def _three_planes_changed(self, shown: bool) -> None:
        with _blocked(self.three_button):
            self.three_button.setChecked(shown)

    def _follow_three_planes(self, layer: Any) -> None:
        """The button's state and tooltip for the active study; the shown planes follow its layer."""
        reason = cannot_show(layer)
        self.three_button.setEnabled(not reason)
        self.three_button.setToolTip(THREE_PLANES_TIP if not reason else f"3 planes: {reason}")
        if self.three_planes.shown:
            if reason:
                self.three_planes.hide()
            else:
                self.three_planes.set_source(layer)

    # -- interpolation ---------------------------------------------------------------------------------
    def set_linear(self, on: bool) -> None:
        """Linear (on) or nearest-voxel (off) display interpolation of the active study's layers."""
        with _blocked(self.linear_button):
            self.linear_button.setChecked(on)
        for layer in self.study_layers():
            layer.interpolation2d = "linear" if on else "nearest"

    # -- ruler and ROI ---------------------------------------------------------------------------------
    @staticmethod
    def _owner_of(layer: Any) -> Any:
        """The image layer a measurement layer measures (None for any other layer)."""
        return getattr(layer, "metadata", {}).get("radreport_measures") if layer is not None else None

    def measurement_layer(self, tool: str, image_layer: Any = None, *, create: bool = True) -> Any:
        """The Shapes layer of ``tool`` ("ruler" or "roi") on ``image_layer`` (default: the watched one)."""
        image_layer = self.layer if image_layer is None else image_layer
        if image_layer is None:
            return None
        for layer in self.viewer.layers:
            meta = getattr(layer, "metadata", {})
            if meta.get("radreport_measures") is image_layer and meta.get("radreport_tool") == tool:
                self._connect_measurements(layer)
                return layer
        if not create:
            return None
        title = "Ruler" if tool == "ruler" else "ROI"
        layer = self.viewer.add_shapes(
            ndim=image_layer.ndim, scale=image_layer.scale, translate=image_layer.translate,
            units=image_layer.units, axis_labels=image_layer.axis_labels, name=f"{title} {image_layer.name}",
            edge_color=MEASURE_COLOR, face_color="transparent", edge_width=1,
            features={"measure": np.array([], dtype=object)}, feature_defaults={"measure": ""},
            text={"string": "{measure}", "color": MEASURE_COLOR, "size": 10, "anchor": "upper_left"},
            metadata={"radreport_measures": image_layer, "radreport_tool": tool},
        )
        self._connect_measurements(layer)
        return layer

    def _connect_measurements(self, layer: Any) -> None:
        if id(layer) not in self._watched:
            self._watched.add(id(layer))
            layer.events.data.connect(self._on_measurement_data)

    def _tool_layer(self) -> Any:
        return None if self._tool is None else self.measurement_layer(self._tool, create=False)

    def _set_tool_buttons(self, tool: str | None) -> None:
        for name, b in (("ruler", self.ruler_button), ("roi", self.roi_button)):
            with _blocked(b):
                b.setChecked(name == tool)
        self._tool = tool

    def set_tool(self, tool: str | None) -> None:
        """Start drawing with ``tool`` ("ruler", "roi") on the watched layer, or stop (None)."""
        previous = self._tool_layer()
        if previous is not None:
            previous.mode = "pan_zoom"
        image = image_of(self.layer)
        if tool is not None and (image is None or not has_spacing(image)):
            tool = None
        self._set_tool_buttons(tool)
        if tool is None:
            if self.layer is not None and self.layer in self.viewer.layers:
                self.viewer.layers.selection.active = self.layer
            return
        layer = self.measurement_layer(tool)
        layer.visible = True
        self.viewer.layers.selection.active = layer
        layer.mode = TOOL_MODES[tool]

    def _on_measurement_data(self, event: Any) -> None:
        from napari.layers.base._base_constants import ActionType

        if event.action not in (ActionType.ADDED, ActionType.CHANGED, ActionType.REMOVED):
            return
        layer = event.source
        measured = [self._measure(layer, i) for i in range(layer.nshapes)]
        layer.features["measure"] = [short for _, short in measured]
        layer.refresh_text()
        if event.action != ActionType.REMOVED and measured:
            indices = [i if i >= 0 else layer.nshapes + i for i in event.data_indices] or [layer.nshapes - 1]
            line = measured[max(i for i in indices if 0 <= i < len(measured))][0]
            if line:
                self.last_text = line
                self.status.setText(line)
                self.status.setToolTip(line)

    def measurement_line(self, layer: Any, index: int) -> str:
        """The report line of shape ``index`` of a measurement layer ("" when it measures nothing)."""
        return self._measure(layer, index)[0]

    def _measure(self, layer: Any, index: int) -> tuple[str, str]:
        """(report line, short value shown by the shape on the canvas) of shape ``index``."""
        owner = self._owner_of(layer)
        image, study = image_of(owner), study_of(owner)
        if image is None:
            return "", ""
        data = np.asarray(layer.data[index], dtype=float)
        spatial = data[:, data.shape[1] - image.spatial_ndim:]
        lead = tuple(int(np.rint(x)) for x in data[0, :data.shape[1] - image.spatial_ndim])
        kind = layer.shape_type[index]
        axis = self._slice_axis() if owner is self.layer else None
        try:
            if kind in ("line", "path") and len(spatial) == 2:
                measured = distance(image, spatial[0], spatial[1], slice_axis=axis)
                short = f"{measured.mm:.1f} mm"
            elif kind in ROI_SHAPES:
                measured = roi_statistics(image, spatial, kind, slice_axis=axis, lead=lead)
                unit = f" {measured.unit}" if measured.unit else ""
                short = f"{measured.area_mm2:.1f} mm² · {measured.mean:.1f} ± {measured.sd:.1f}{unit}"
            else:
                return "", ""
        except MeasurementError as exc:
            return "", f"not measured: {exc}"
        number = None if measured.slice_index is None else measured.slice_index + 1
        plane = (plane_of_axis(image.direction, measured.slice_axis)
                 if measured.slice_axis is not None and image.direction is not None else None)
        index_in_study = owner.metadata.get("radreport_image_index", 0)
        where = location_text(series_label(study, index_in_study, fallback=owner.name), number, plane)
        line = distance_text(measured, where) if isinstance(measured, Distance) else roi_text(measured, where)
        return line, short

    def current_measurement(self) -> str:
        """The selected shape's report line in the active measurement layer, else the latest one's."""
        active = self.viewer.layers.selection.active
        if self._owner_of(active) is not None and active.selected_data:
            line = self.measurement_line(active, max(active.selected_data))
            if line:
                return line
        return self.last_text

    def insert_measurement(self) -> None:
        """Emit ``measurement_text`` with the current measurement's report line (nothing without one)."""
        text = self.current_measurement()
        if text:
            self.measurement_text.emit(text)

    # -- teardown ----------------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Undo this widget's connections to the viewer and the session, and remove its canvas texts (runs
        when the widget is destroyed; touches no Qt object of its own)."""
        viewer = self.viewer
        with contextlib.suppress(RuntimeError):
            self.three_planes.teardown()
        for emitter, callback in self._viewer_events:
            with contextlib.suppress(Exception):
                emitter.disconnect(callback)
        with contextlib.suppress(ValueError):
            viewer.mouse_drag_callbacks.remove(self._cursor_click)
        with contextlib.suppress(TypeError, RuntimeError):
            self.session.study_changed.disconnect(self._follow_study)
        if self.layer is not None:
            with contextlib.suppress(Exception):
                self.layer.events.contrast_limits.disconnect(self._refresh_overlay)
        for layer in list(viewer.layers):
            if id(layer) in self._watched:
                with contextlib.suppress(Exception):
                    layer.events.data.disconnect(self._on_measurement_data)
        self._watched.clear()
        for key in list(self._overlays):
            with contextlib.suppress(Exception):
                viewer.canvas.overlays.pop(key)
        self._overlays.clear()


class _blocked(contextlib.AbstractContextManager):
    """Block a Qt object's signals for the ``with`` body."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __enter__(self) -> Any:
        self._was = self.obj.blockSignals(True)
        return self.obj

    def __exit__(self, *exc: Any) -> None:
        self.obj.blockSignals(self._was)
