"""Three planes at once (issue 22, item 6): the main canvas and two extra canvases under it, one plane each,
with a linked crosshair.

napari 0.9 draws one canvas per viewer, so each extra plane is a viewer model of its own (``ViewerModel``)
drawn by a ``QtViewer`` of its own, showing an Image layer made on the very array of the active study's
layer (no copy, nothing read again) with the same scale, translate, transform, colormap and window. The two
canvases sit side by side in a panel that ``ThreePlanes`` adds below the main canvas, inside napari's own
central splitter: the report, study and chat columns keep their width and height, and the user can drag the
split. The main canvas shows the axial plane; the panel the two other planes (coronal and sagittal; if the
main canvas is switched to another plane, the two it does not show).

**The link.** One point in world coordinates (mm) is the crosshair of all three canvases: the main viewer's
``dims.point``. Its changes move the extra canvases' points (each canvas slices its own plane through it), and
redraw the crosshairs: two lines through the point in every canvas, with a gap around it, each line in the
colour of the plane it is (axial red, coronal green, sagittal yellow, as 3D Slicer colours them), a constant
width on screen. A click (without dragging) in an extra canvas, or a change of its own slice (its slider or
Ctrl+wheel), hands the new point to the main viewer through ``set_cursor`` (the reading tools' linked
cursor), so that everything follows from one place; scrolling one plane changes that plane's slice only.

Each extra canvas has its orientation letters and "Coronal 301/512" in its plane's colour. The panel's height
suits its planes and what the main canvas can use; the main canvas is framed again when it comes or goes.
Switching off closes the two canvases (their GL resources, viewer models and layers) and removes the
crosshair layer from the main viewer. Volumes only: a radiograph has one plane (``cannot_show`` says why).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QSplitter, QWidget

from napari_radreport.io.measurements import has_spacing
from napari_radreport.io.orientation_letters import EdgeLetters, edge_letters, plane_axes, plane_of_axis
from napari_radreport.widgets.session import image_of, study_of

if TYPE_CHECKING:
    import napari

    from napari_radreport.io.study import ImageData

PLANES = ("axial", "coronal", "sagittal")
PLANE_TITLES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
# 3D Slicer's colours: red axial, green coronal, yellow sagittal.
PLANE_COLORS = {"axial": (0.95, 0.35, 0.35, 1.0), "coronal": (0.45, 0.85, 0.35, 1.0),
                "sagittal": (0.95, 0.85, 0.3, 1.0)}
LETTER_COLOR = (0.55, 0.85, 1.0, 1.0)
LABEL_BOX = (0.0, 0.0, 0.0, 0.6)  # behind a canvas's plane label: legible over the image
FIT_MARGIN = 0.08  # of a canvas, around the fitted volume (room for the letters)
LETTER_ROOM_PX = 64  # above and below a plane across its canvas's width: its top and bottom letters
PANEL_SHARE = (0.25, 0.5)  # the least and most of the central column's height the two extra canvases take
PANEL_MIN_HEIGHT = 120
CANVAS_MIN_SIZE = (80, 80)
CROSSHAIR_WIDTH_PX = 1.5  # on screen, at any zoom
CROSSHAIR_GAP_PX = 12.0  # the lines stop short of the point, so that they do not hide what it marks
CROSSHAIR_KEY = "radreport_crosshair"
# A layer's attributes the extra canvases mirror from the main canvas's layer (the window among them).
MIRRORED = ("contrast_limits_range", "contrast_limits", "colormap", "gamma", "interpolation2d", "opacity")
EDGE_OVERLAYS = {"left": "middle_left", "right": "middle_right", "top": "top_center",
                 "bottom": "bottom_center"}


def cannot_show(layer: Any) -> str:
    """Why the three planes cannot show ``layer`` ("" when they can)."""
    study, image = study_of(layer), image_of(layer)
    if image is None:
        return "no study is open"
    if not study.is_volume or image.spatial_ndim < 3:
        return "a radiograph has one plane only; three planes need a CT or MR volume"
    if image.direction is None:
        return "the volume's orientation is unknown"
    return ""


# -- geometry shared with the reading tools (no Qt) ---------------------------------------------------------
def released_in_place(event: Any, on_click: Callable[[np.ndarray], None]) -> Iterator[None]:
    """The rest of a napari mouse-drag callback after a press: ``on_click(position of the press)`` when the
    button comes up without the mouse having moved (a drag pans instead)."""
    position = np.asarray(event.position, dtype=float)
    yield
    moved = False
    while event.type == "mouse_move":
        moved = True
        yield
    if not moved:
        on_click(position)


def slice_axis_of(dims: Any, image: ImageData | None) -> int | None:
    """The spatial axis (array order) a 2D view with ``dims`` slices along; None in 3D or without a volume."""
    if image is None or image.spatial_ndim < 3 or dims.ndisplay != 2:
        return None
    first = dims.ndim - image.spatial_ndim  # world axis of spatial axis 0
    hidden = [a - first for a in dims.not_displayed if a >= first]
    return hidden[0] if len(hidden) == 1 else None


def canvas_letters(layer: Any, image: ImageData | None, dims: Any, camera: Any) -> EdgeLetters | None:
    """The patient direction each edge of a 2D view of ``layer`` faces (None when they do not apply): from the
    study's direction, the layer's transform, the displayed axes and the camera's axis flips."""
    if (image is None or image.direction is None or not has_spacing(image)
            or slice_axis_of(dims, image) is None):
        return None
    point = np.asarray(dims.point, dtype=float)
    vertical, horizontal = dims.displayed
    flip_v, flip_h = (str(x) for x in camera.orientation2d)

    def data_step(world_axis: int, sign: float) -> np.ndarray:
        moved = point.copy()
        moved[world_axis] += sign
        step = layer.world_to_data(moved) - layer.world_to_data(point)
        return np.asarray(step)[-image.spatial_ndim:]

    down = data_step(vertical, -1.0 if flip_v == "up" else 1.0)
    right = data_step(horizontal, -1.0 if flip_h == "left" else 1.0)
    return edge_letters(image.direction, image.spacing, right, down)


def plane_order(ndim: int, image: ImageData, plane: str) -> tuple[int, ...]:
    """A dims order (world axes of an ``ndim`` viewer) that shows ``plane`` of ``image``: the leading axes,
    the slice axis, then the two in-plane axes in array order (as the reading tools' plane buttons)."""
    first = ndim - image.spatial_ndim
    spatial = list(range(first, ndim))
    slice_axis = spatial[plane_axes(image.direction)[plane]]
    return (*range(first), slice_axis, *(a for a in spatial if a != slice_axis))


def crosshair(layer: Any, image: ImageData, point: Any, displayed: tuple[int, int],
              zoom: float = 1.0) -> dict[str, Any]:
    """The crosshair of a 2D view of ``layer`` through the world ``point``: four line segments in the layer's
    data coordinates (two lines through the point along the ``displayed`` data axes, a gap around the point),
    each with its width and the colour of the plane it is. Width and gap are screen pixels at the camera's
    ``zoom`` (screen pixels per world unit), as napari draws shapes in data units. Kept inside the volume, so
    that the crosshair never widens the viewer's sliders."""
    data = np.asarray(layer.world_to_data(np.asarray(point, dtype=float)), dtype=float)[-layer.ndim:]
    shape = np.asarray(layer.data.shape, dtype=float)
    scale = np.abs(np.asarray(layer.scale, dtype=float))
    data = np.clip(data, 0.0, shape - 1)
    lead = layer.ndim - image.spatial_ndim
    segments, widths, colors = [], [], []
    for along, across in (displayed, displayed[::-1]):
        plane = plane_of_axis(image.direction, across - lead)
        gap = CROSSHAIR_GAP_PX / zoom / scale[along]
        top = shape[along] - 1
        for start, end in ((0.0, data[along] - gap), (data[along] + gap, top)):
            start, end = min(max(start, 0.0), top), min(max(end, 0.0), top)
            end = max(end, start + 1e-3)  # a line of no length has no direction to draw it by
            a, b = data.copy(), data.copy()
            a[along], b[along] = start, end
            segments.append(np.stack([a, b]))
            widths.append(CROSSHAIR_WIDTH_PX / zoom / scale[across])
            colors.append(PLANE_COLORS[plane])
    return {"data": segments, "edge_width": widths, "edge_color": colors}


def _aspect(layer: Any, dims: Any) -> float:
    """Height over width (world units) of a layer's extent as a viewer with ``dims`` shows it."""
    extent = np.asarray(layer.extent.world, dtype=float)
    first = dims.ndim - layer.ndim  # napari aligns a layer's axes with the viewer's last ones
    rows, columns = (extent[1, a - first] - extent[0, a - first] for a in dims.displayed[-2:])
    return float(rows / max(columns, 1e-6))


def _placement(layer: Any) -> dict[str, Any]:
    """Where a layer's data sits in the world: the keyword arguments that put another layer on it."""
    names = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")
    return {name: getattr(layer, name) for name in names}


def _crosshair_layer(layer: Any, lines: dict[str, Any], name: str) -> Any:
    from napari.layers import Shapes

    return Shapes(lines["data"], shape_type="line", edge_width=lines["edge_width"],
                  edge_color=lines["edge_color"], face_color="transparent", ndim=layer.ndim, name=name,
                  opacity=0.85, metadata={CROSSHAIR_KEY: True}, **_placement(layer))


def _set_crosshair(target: Any, lines: dict[str, Any]) -> None:
    """Move a crosshair layer's lines (their number never changes; widths and colours only with the plane)."""
    target.data = lines["data"]
    if not np.allclose(target.edge_width, lines["edge_width"]):
        target.edge_width = list(lines["edge_width"])
    if not np.allclose(target.edge_color, np.asarray(lines["edge_color"])):
        target.edge_color = list(lines["edge_color"])


def mirror_layer(source: Any) -> Any:
    """An Image layer on ``source``'s very array, placed and windowed as ``source``."""
    from napari.layers import Image

    layer = Image(source.data, name=source.name, colormap=source.colormap,
                  contrast_limits=source.contrast_limits, gamma=source.gamma,
                  interpolation2d=source.interpolation2d, opacity=source.opacity, blending=source.blending,
                  metadata={"radreport_mirrors": source.name}, **_placement(source))
    layer.contrast_limits_range = source.contrast_limits_range
    layer.contrast_limits = source.contrast_limits
    return layer


# -- one extra canvas ----------------------------------------------------------------------------------------
class PlaneView(QWidget):
    """One extra canvas: a viewer model of its own, drawn by a QtViewer of its own, showing one plane of the
    main canvas's layer (``show_layer``) through the linked point (``set_point``).

    Signals: ``clicked(PlaneView, position)`` for a click without dragging (world coordinates of this view),
    ``scrolled(PlaneView, point)`` when its own slice changes (its slider, Ctrl+wheel)."""

    clicked = Signal(object, object)
    scrolled = Signal(object, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        from napari.components import ViewerModel
        from napari.qt import QtViewer

        super().__init__(parent)
        self.model = ViewerModel(title="radreport plane")
        self.qt_viewer = QtViewer(self.model, show_welcome_screen=False)
        self.qt_viewer.setAcceptDrops(False)  # files dropped here open in the main viewer's canvas instead
        self.qt_viewer.setMinimumSize(*CANVAS_MIN_SIZE)
        self.qt_viewer.canvas.native.setMinimumSize(*CANVAS_MIN_SIZE)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.qt_viewer)
        self.plane = ""
        self.layer: Any = None  # the mirror of the main layer
        self.crosshair: Any = None
        self.image: ImageData | None = None
        self._quiet = False  # the point is being set from the main viewer
        self.model.mouse_drag_callbacks.append(self._click)
        self._events = [(self.model.dims.events.point, self._point_changed),
                        (self.model.canvas.events.size, self._fit),
                        (self.model.scene.camera.events.zoom, self._redraw)]
        for emitter, callback in self._events:
            emitter.connect(callback)

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Changes of this view's point made here are not the user's: they are not handed on."""
        was, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = was

    def show_layer(self, source: Any, image: ImageData, plane: str, point: Any) -> None:
        """Show ``plane`` of ``source`` (a mirror of it on the same array) through the world ``point``."""
        with self._quietly():
            self.layer = self.crosshair = None  # nothing to redraw while the layers change
            self.model.layers.clear()
            layer, self.image, self.plane = mirror_layer(source), image, plane
            self.model.layers.append(layer)
            self.model.dims.order = plane_order(self.model.dims.ndim, image, plane)
            self.model.dims.set_point(range(self.model.dims.ndim), self._local(point))
            self.layer = layer
            self.crosshair = _crosshair_layer(self.layer, self._lines(), f"Crosshair {PLANE_TITLES[plane]}")
            self.model.layers.append(self.crosshair)
            self.model.layers.selection.active = self.layer
        self._fit()
        self._label()

    def set_plane(self, plane: str) -> None:
        """Show another plane of the same layer."""
        if plane == self.plane or self.layer is None:
            return
        self.plane = plane
        self.model.dims.order = plane_order(self.model.dims.ndim, self.image, plane)
        self.crosshair.name = f"Crosshair {PLANE_TITLES[plane]}"
        self.set_point(self.model.dims.point)
        self._fit()

    def _local(self, point: Any) -> np.ndarray:
        """The last axes of a main viewer's point: this view's world axes (napari aligns axes right)."""
        return np.asarray(point, dtype=float)[-self.model.dims.ndim:]

    def set_point(self, point: Any) -> None:
        """Slice through the world ``point`` (a main viewer point) and put the crosshair on it."""
        if self.layer is None or len(point) < self.model.dims.ndim:  # the main viewer is losing its layers
            return
        with self._quietly():
            self.model.dims.set_point(range(self.model.dims.ndim), self._local(point))
            _set_crosshair(self.crosshair, self._lines(point))
        self._label()

    def _lines(self, point: Any = None) -> dict[str, Any]:
        point = self.model.dims.point if point is None else self._local(point)
        zoom = self.model.scene.camera.zoom
        return crosshair(self.layer, self.image, point, tuple(self.model.dims.displayed), zoom)

    def _redraw(self, *_args: Any) -> None:
        """The crosshair's width and gap are screen pixels: redrawn at each zoom."""
        if self.crosshair is not None:
            with self._quietly():
                _set_crosshair(self.crosshair, self._lines())

    def mirror(self, name: str, value: Any) -> None:
        if self.layer is not None:
            setattr(self.layer, name, value)

    def shown_slice(self) -> tuple[int, int]:
        """(slice index, slice count) of this view's plane (0-based index)."""
        axis = slice_axis_of(self.model.dims, self.image)
        lead = self.layer.ndim - self.image.spatial_ndim
        data = self.layer.world_to_data(np.asarray(self.model.dims.point))
        return int(np.rint(data[lead + axis])), self.layer.data.shape[lead + axis]

    def texts(self) -> dict[str, str]:
        """The visible canvas texts by place ("plane", "left", "right", "top", "bottom")."""
        return {key.removeprefix("radreport_"): o.text for key, o in self.model.canvas.overlays.items()
                if key.startswith("radreport_") and o.visible}

    def _overlay(self, key: str, position: str, color: tuple, size: int, box: bool = False) -> Any:
        from napari.components.overlays import TextOverlay

        overlays = self.model.canvas.overlays
        if key not in overlays:
            overlays[key] = TextOverlay(position=position, box=box, box_color=LABEL_BOX, color=color,
                                        font_size=size)
        return overlays[key]

    def _label(self) -> None:
        """The plane's name and slice at the top left, the orientation letters at the edges."""
        index, count = self.shown_slice()
        where = f"{index + 1}/{count}" if 0 <= index < count else f"outside the {count} slices"
        label = self._overlay("radreport_plane", "top_left", PLANE_COLORS[self.plane], 10, box=True)
        label.color = PLANE_COLORS[self.plane]
        label.text = f"{PLANE_TITLES[self.plane]}\n{where}"  # two short lines clear the top letter
        label.visible = True
        letters = canvas_letters(self.layer, self.image, self.model.dims, self.model.scene.camera)
        for edge, position in EDGE_OVERLAYS.items():
            overlay = self._overlay(f"radreport_{edge}", position, LETTER_COLOR, 12)
            overlay.text = getattr(letters, edge) if letters is not None else ""
            overlay.visible = bool(overlay.text)

    def _fit(self, *_args: Any) -> None:
        """Frame the volume in the canvas (at every size the splitter gives it)."""
        if self.layer is not None:
            self.model.reset_view(layers=[self.layer], margin=FIT_MARGIN)

    def _point_changed(self, *_args: Any) -> None:
        if not self._quiet and self.layer is not None:
            self.scrolled.emit(self, np.asarray(self.model.dims.point, dtype=float))

    def _click(self, _model: Any, event: Any):
        """A click without dragging (dragging pans) hands its position on."""
        if event.type != "mouse_press" or event.modifiers:
            return
        yield from released_in_place(event, lambda position: self.clicked.emit(self, position))

    def close_view(self) -> None:
        """Close the canvas (its GL resources) and let go of the layers."""
        for emitter, callback in self._events:
            with contextlib.suppress(Exception):
                emitter.disconnect(callback)
        with contextlib.suppress(ValueError):
            self.model.mouse_drag_callbacks.remove(self._click)
        self.model.layers.clear()  # while the canvas is there to take its visuals off
        self.layer = self.crosshair = None
        with contextlib.suppress(RuntimeError):  # already gone with the window
            self.qt_viewer.close()


# -- the controller ------------------------------------------------------------------------------------------
class ThreePlanes(QObject):
    """The two extra canvases under the main one, linked with it (see the module docstring).

    ``show(layer)`` ("" when shown, else why not), ``hide()``, ``set_source(layer)`` (the active study's layer
    changed), ``shown``, ``views`` (plane -> PlaneView), ``main_crosshair``, ``panel``. ``set_cursor`` takes a
    full main viewer point (the reading tools' linked cursor); without it the main dims point is set.
    ``changed(bool)`` fires when the planes are shown or hidden."""

    changed = Signal(bool)

    def __init__(self, viewer: napari.Viewer, set_cursor: Callable[[np.ndarray], None] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._set_cursor = set_cursor
        self.source: Any = None  # the main canvas's layer
        self.image: ImageData | None = None
        self.panel: QWidget | None = None
        self.views: dict[str, PlaneView] = {}
        self.main_crosshair: Any = None
        self._splitter_sizes: list[int] = []
        self._watching_close: list[weakref.ref] = []  # the window and its canvas (weakly: they may go first)

    @property
    def shown(self) -> bool:
        return self.panel is not None

    # -- on and off ----------------------------------------------------------------------------------------
    def show(self, layer: Any) -> str:
        """Show the two other planes of ``layer`` under the main canvas; "" when shown, else why not."""
        reason = cannot_show(layer)
        if reason:
            return f"No three planes: {reason}."
        if self.shown:
            self.set_source(layer)
            return ""
        splitter = self._splitter()
        self._splitter_sizes = splitter.sizes()
        self.panel = QWidget()
        self.panel.setObjectName("radreport-three-planes-panel")
        self.panel.setMinimumHeight(PANEL_MIN_HEIGHT)
        row = QHBoxLayout(self.panel)
        row.setContentsMargins(0, 2, 0, 0)
        row.setSpacing(4)
        self.views = {}
        for plane in self._side_planes():
            view = PlaneView(self.panel)
            view.clicked.connect(self._clicked)
            view.scrolled.connect(self._scrolled)
            row.addWidget(view)
            self.views[plane] = view
        splitter.addWidget(self.panel)
        self._connect_viewer(True)
        self.set_source(layer)
        total = sum(self._splitter_sizes) or splitter.height()
        panel = self._panel_height(total, splitter.width())
        splitter.setSizes([total - panel, panel])
        self._refit_main()
        self.changed.emit(True)
        return ""

    def _panel_height(self, total: int, width: int) -> int:
        """The panel's height: what its two canvases need to show their planes across their width, or more
        when the main canvas has height to spare (its plane fills its width first), between the least and most
        share of the column."""
        slider = self.viewer.window._qt_viewer.dims.sizeHint().height() + 8
        sides = max(round(width / 2 * _aspect(view.layer, view.model.dims)) for view in self.views.values())
        sides += LETTER_ROOM_PX
        main = round(width * _aspect(self.source, self.viewer.dims)) + slider
        least, most = (round(total * share) for share in PANEL_SHARE)
        return max(PANEL_MIN_HEIGHT, least, min(most, max(sides + slider, total - main)))

    def hide(self) -> None:
        """Close the extra canvases, remove the crosshair from the main viewer, give the canvas its height."""
        if not self.shown:
            return
        self._connect_viewer(False)
        self._watch_source(None)
        for view in self.views.values():
            view.close_view()
        self._remove_main_crosshair()
        panel, self.panel, self.views = self.panel, None, {}
        with contextlib.suppress(RuntimeError):
            panel.setParent(None)
            panel.deleteLater()
            if self._splitter_sizes:
                self._splitter().setSizes(self._splitter_sizes)
                self._refit_main()
        self.source = self.image = None
        with contextlib.suppress(RuntimeError):  # the window is closing
            self.changed.emit(False)

    def _refit_main(self) -> None:
        """Frame the main canvas's layers again once its new height is in place (a third of it came or went:
        kept, its zoom would crop the plane or leave it small)."""
        QTimer.singleShot(0, self._reset_main_view)

    def _reset_main_view(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):  # the window closed meanwhile
            if self.viewer.window._qt_window.isVisible():
                self.viewer.reset_view()

    def set_source(self, layer: Any) -> None:
        """Show ``layer`` (the active study's) in the extra canvases; off when it cannot be shown."""
        if not self.shown or layer is self.source:
            return
        if cannot_show(layer):
            self.hide()
            return
        self._watch_source(layer)
        self.image = image_of(layer)
        point = self.viewer.dims.point
        for plane, view in zip(self._side_planes(), list(self.views.values())):
            view.show_layer(layer, self.image, plane, point)
        self.views = {view.plane: view for view in self.views.values()}
        self._remove_main_crosshair()
        self._add_main_crosshair()

    def teardown(self) -> None:
        """Switch off and forget the viewer's window (the reading tools are closing)."""
        self.hide()
        for ref in self._watching_close:
            watched = ref()
            with contextlib.suppress(RuntimeError, AttributeError):
                watched.removeEventFilter(self)
        self._watching_close = []

    # -- napari's central splitter -------------------------------------------------------------------------
    def _splitter(self) -> QSplitter:
        """napari's central widget: a vertical splitter holding the canvas and its sliders."""
        qt_viewer = self.viewer.window._qt_viewer
        if not any(ref() is qt_viewer for ref in self._watching_close):  # closing closes the planes first
            for watched in (qt_viewer, self.viewer.window._qt_window):
                watched.installEventFilter(self)
                self._watching_close.append(weakref.ref(watched))
        return qt_viewer

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close and self.shown:
            self.hide()
        return False

    # -- the link ------------------------------------------------------------------------------------------
    def _connect_viewer(self, on: bool) -> None:
        v = self.viewer
        pairs = ((v.dims.events.point, self._from_main), (v.dims.events.order, self._replane),
                 (v.dims.events.ndisplay, self._replane), (v.layers.events.removed, self._layer_removed),
                 (v.scene.camera.events.zoom, self._update_main_crosshair))
        for emitter, callback in pairs:
            if on:
                emitter.connect(callback)
            else:
                with contextlib.suppress(Exception):
                    emitter.disconnect(callback)

    def _watch_source(self, layer: Any) -> None:
        for name in MIRRORED:
            if self.source is not None:
                with contextlib.suppress(Exception):
                    getattr(self.source.events, name).disconnect(self._mirror)
            if layer is not None:
                getattr(layer.events, name).connect(self._mirror)
        self.source = layer

    def _mirror(self, event: Any) -> None:
        """The main layer's window (or colormap, gamma, interpolation, opacity) changed: the views follow."""
        name = event.type
        for view in self.views.values():
            if name == "contrast_limits":  # a window outside the range widens it first
                view.mirror("contrast_limits_range", self.source.contrast_limits_range)
            view.mirror(name, getattr(self.source, name))

    def _side_planes(self) -> list[str]:
        """The two planes the main canvas does not show (coronal and sagittal while it shows the axial)."""
        main = None
        if self.image is not None and self.source is not None:
            axis = slice_axis_of(self.viewer.dims, self.image)
            main = plane_of_axis(self.image.direction, axis) if axis is not None else None
        return [p for p in PLANES if p != main][:2] if main else ["coronal", "sagittal"]

    def _replane(self, *_args: Any) -> None:
        """The main canvas shows another plane: the views show the two others."""
        wanted, views = self._side_planes(), list(self.views.values())
        missing = [p for p in wanted if all(v.plane != p for v in views)]
        for view in views:  # each view keeps its place in the panel
            if view.plane not in wanted:
                view.set_plane(missing.pop(0))
        self.views = {view.plane: view for view in views}
        self._update_main_crosshair()

    def _from_main(self, *_args: Any) -> None:
        point = self.viewer.dims.point
        for view in self.views.values():
            view.set_point(point)
        self._update_main_crosshair()

    def _move_to(self, view: PlaneView, local: np.ndarray) -> None:
        """Hand a view's point (its own world axes) to the main viewer as the linked cursor."""
        full = np.asarray(self.viewer.dims.point, dtype=float)
        full[len(full) - len(local):] = local
        if self._set_cursor is not None:
            self._set_cursor(full)
        else:
            self.viewer.dims.set_point(range(len(full)), full)

    def _clicked(self, view: PlaneView, position: Any) -> None:
        self._move_to(view, np.asarray(position, dtype=float))

    def _scrolled(self, view: PlaneView, point: Any) -> None:
        """Only the view's own slice moved: the other axes keep the main viewer's point."""
        axis = slice_axis_of(view.model.dims, view.image)
        if axis is None:
            return
        local = np.asarray(self.viewer.dims.point, dtype=float)[-len(point):].copy()
        world = view.model.dims.ndim - view.image.spatial_ndim + axis
        local[world] = point[world]
        self._move_to(view, local)

    def _layer_removed(self, event: Any) -> None:
        if event.value is self.main_crosshair:
            self.main_crosshair = None
        elif event.value is self.source:
            self.hide()

    # -- the main canvas's crosshair ------------------------------------------------------------------------
    def _main_lines(self) -> dict[str, Any] | None:
        dims, layer = self.viewer.dims, self.source
        if dims.ndisplay != 2 or layer is None:
            return None
        first = dims.ndim - layer.ndim
        displayed = tuple(a - first for a in dims.displayed)
        lead = layer.ndim - self.image.spatial_ndim
        if any(a < lead for a in displayed):
            return None
        return crosshair(layer, self.image, dims.point, displayed, self.viewer.scene.camera.zoom)

    def _add_main_crosshair(self) -> None:
        lines = self._main_lines()
        if lines is None:
            return
        active = self.viewer.layers.selection.active
        self.main_crosshair = _crosshair_layer(self.source, lines, "Crosshair")
        self.viewer.add_layer(self.main_crosshair)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active  # the study's layer stays the selected one

    def _update_main_crosshair(self, *_args: Any) -> None:
        """Move the main canvas's crosshair (its visibility stays the user's, or side by side's, to set; in 3D
        it stays where the 2D view left it)."""
        lines = self._main_lines()
        if self.main_crosshair is not None and lines is not None:
            _set_crosshair(self.main_crosshair, lines)

    def _remove_main_crosshair(self) -> None:
        layer, self.main_crosshair = self.main_crosshair, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
