"""Take a screenshot of napari with the plugin's docks and a study (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot.py OUT.png [PATH ...] \\
        [--size 1920x1080] [--window lung] [--model FOLDER --generate] [--ask "question"] [--diagnose]
        [--tab Chat] [--allow-out-of-scope] [--models-folder DIR] [--also PATH [--select-first]]
        [--prior PATH [--offset MM] [--side-by-side] [--slice N]] [--three-planes [--cursor Z,Y,X]]
        [--generate --locate FINDING] [--draw-box Z,Y0,X0,Y1,X1 [--slice N]] [--diagnose --where LABEL]

The window takes ``--size``: check every UI change at 1366x768 and 1920x1080 (on a screen at least as large).
"""

from __future__ import annotations

import argparse
import time


def _wait(session, timeout: float = 120.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.time() + timeout
    QApplication.processEvents()
    while session.busy and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def _open_prior(row, args) -> None:
    """Open ``args.prior`` through the Study dock's Prior row, then its offset and side by side."""
    from qtpy.QtWidgets import QApplication

    row.open_prior(args.prior)
    end = time.time() + 120
    while row.session.prior_of(row.study) is None and "Not opened" not in row.status.text():
        if time.time() > end:
            break
        QApplication.processEvents()
        time.sleep(0.01)
    if row.session.prior_of(row.study) is None:
        raise SystemExit(f"the prior was not opened: {row.status.text()}")
    row.offset.setValue(args.offset)
    if args.side_by_side:
        row.side_button.setChecked(True)


def _draw_box(viewer, session, numbers: list[float]) -> None:
    """A rectangle on a new Shapes layer over the active study: slice, first row and column, last ones."""
    import numpy as np

    from napari_radreport.viewer import study_image_layers

    z, y0, x0, y1, x1 = numbers
    (layer, *_) = study_image_layers(viewer, session.study)
    corners = [[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]
    viewer.add_shapes([np.array([layer.data_to_world(c) for c in corners])], shape_type="rectangle",
                      edge_color="#00e5ff", face_color="transparent", edge_width=2, name="drawn box",
                      units=layer.units)
    viewer.layers.selection.active = layer


def _scroll_to(widget) -> None:
    """Scroll the scroll area around ``widget`` (a dock shorter than its content) so that it is in view."""
    from qtpy.QtWidgets import QScrollArea

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(widget, 0, 8)


def _show_slice(viewer, session, number: int) -> None:
    """Put the slider on slice ``number`` (1-based) of the active study's first layer."""
    import numpy as np

    from napari_radreport.widgets.session import study_of

    layer = next(layer for layer in viewer.layers if study_of(layer) is session.study)
    data = np.asarray(layer.world_to_data(np.asarray(viewer.dims.point)), dtype=float)
    data[-3] = number - 1
    world = layer.data_to_world(data)
    viewer.dims.set_point(range(len(world)), world)


def _three_planes(tools, cursor: str | None) -> None:
    """Switch the three planes on (the Study dock's button), the linked cursor on voxel ``cursor``."""
    import numpy as np

    tools.three_button.click()
    if not tools.three_planes.shown:
        raise SystemExit(f"the three planes did not open: {tools.three_button.toolTip()}")
    if cursor:
        voxel = np.array([float(v) for v in cursor.split(",")])
        tools.set_cursor(tools.layer.data_to_world(voxel))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--window", help="CT window preset to apply in the Study dock")
    parser.add_argument("--sample", default="ct")
    parser.add_argument("--model", help="model folder to load (default: the settings' model)")
    parser.add_argument("--generate", action="store_true", help="generate a report before the screenshot")
    parser.add_argument("--regions", action="store_true", help="per-region findings (CT)")
    parser.add_argument("--ask", help="ask this question in the Chat dock")
    parser.add_argument("--diagnose", action="store_true", help="run the Findings dock")
    parser.add_argument("--tab", default="Report", help="dock tab to show in front")
    parser.add_argument("--size", default="1600x1000", help="window size WIDTHxHEIGHT, e.g. 1366x768")
    parser.add_argument("--also", help="open this study too, after the first (it becomes the active study)")
    parser.add_argument("--select-first", action="store_true",
                        help="with --also: select the first study's layer again (the docks follow it)")
    parser.add_argument("--keep-layout", action="store_true",
                        help="keep the arrangement restored from the user's settings (default: the reading "
                             "layout)")
    parser.add_argument("--models-folder", help="list the models in this folder in the Settings dock")
    parser.add_argument("--show-model-list", action="store_true",
                        help="open the Settings dock's model list (the picture is then the whole screen)")
    parser.add_argument("--prior", help="open this study as the prior of the first (Study dock's Prior row)")
    parser.add_argument("--offset", type=float, default=0.0, help="with --prior: its offset in mm")
    parser.add_argument("--side-by-side", action="store_true", help="with --prior: show the two side by side")
    parser.add_argument("--slice", type=int, help="show this slice of the active study (1-based)")
    parser.add_argument("--three-planes", action="store_true",
                        help="the Study dock's 3 planes: coronal and sagittal under the axial canvas")
    parser.add_argument("--cursor", help="with --three-planes: the linked cursor on voxel Z,Y,X (from 0)")
    parser.add_argument("--locate", metavar="FINDING",
                        help="with --generate: show where the draft's first located sentence of FINDING is "
                             "(as a click on it does)")
    parser.add_argument("--draw-box", metavar="Z,Y0,X0,Y1,X1",
                        help="draw a rectangle on slice Z (rows Y0-Y1, columns X0-X1, study voxels), then "
                             "press the Chat dock's Ask about box")
    parser.add_argument("--where", metavar="LABEL",
                        help="with --diagnose: show where this label's Findings row is (its double click)")
    parser.add_argument("--allow-out-of-scope", action="store_true",
                        help="run studies outside the model's scope (the Settings switch)")
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    from napari_radreport.paths import use_private_user_files

    # default settings, no earlier drafts, and nothing written back to the user's own files
    use_private_user_files(Path(tempfile.mkdtemp(prefix="radreport-screenshot-")))

    from qtpy.QtWidgets import QApplication

    from napari_radreport.viewer import open_viewer
    from napari_radreport.widgets.session import session_for

    viewer = open_viewer(args.paths or None, sample=args.sample, run=False)
    width, height = (int(n) for n in args.size.lower().split("x"))
    viewer.window._qt_window.resize(width, height)
    if not args.keep_layout:  # the reading layout sized for this window, as a user who opens it at this size
        from napari_radreport.widgets.layout import reset

        reset(viewer)
    docks = viewer.window.dock_widgets
    if args.window:
        docks["Study (napari-radreport)"].apply_window(args.window)
    session = session_for(viewer)
    session.settings.notice_acknowledged = True
    if args.model:
        session.settings.model_folder = args.model
    session.settings.allow_out_of_scope = args.allow_out_of_scope
    if args.models_folder:
        settings_dock = docks["Settings (napari-radreport)"]
        settings_dock.models_folder.value = args.models_folder  # as the folder dialog sets it: scans it
        end = time.time() + 60
        while len(settings_dock.model_choice.choices) < 2 and time.time() < end:
            QApplication.processEvents()
            time.sleep(0.01)
    report = docks["Report (napari-radreport)"]
    report.notice.setVisible(False)  # acknowledged, as after the first run
    if args.also:
        from napari_radreport.io import load_study
        from napari_radreport.viewer import add_study

        first = list(viewer.layers)[0]
        add_study(viewer, load_study(args.also))
        if args.select_first:
            viewer.layers.selection.active = first
    if args.prior:
        _open_prior(docks["Study (napari-radreport)"].prior, args)
    if args.generate or args.ask or args.diagnose or args.draw_box:
        report.load_model()
        _wait(session)
    if args.generate:
        for box in report.region_boxes.values():
            box.setChecked(args.regions)
        report.generate()
        _wait(session)
    if args.ask:
        docks["Chat (napari-radreport)"].ask(args.ask)
        _wait(session)
    if args.diagnose:
        docks["Findings (napari-radreport)"].run()
        _wait(session)
    if args.draw_box:
        _draw_box(viewer, session, [float(v) for v in args.draw_box.split(",")])
        docks["Chat (napari-radreport)"].ask_about_box()
        _wait(session)
    viewer.window._wrapped_dock_widgets[f"{args.tab} (napari-radreport)"].raise_()
    for _ in range(20):
        QApplication.processEvents()
    if args.prior:  # the Study dock scrolled to its Prior row
        _scroll_to(docks["Study (napari-radreport)"].prior)
    viewer.reset_view()  # frame the layers in the resized canvas
    if args.slice:
        _show_slice(viewer, session, args.slice)
    if args.three_planes:
        _three_planes(docks["Study (napari-radreport)"].tools, args.cursor)
        for _ in range(20):
            QApplication.processEvents()
    if args.where:
        findings = docks["Findings (napari-radreport)"]
        labels = [findings.table.item(r, 0).text() for r in range(findings.table.rowCount())]
        if args.where not in labels:
            raise SystemExit(f"no Findings row {args.where!r}; the rows are {', '.join(labels)}")
        findings.table.cellDoubleClicked.emit(labels.index(args.where), 0)
        _wait(session)
        for _ in range(20):
            QApplication.processEvents()
    if args.locate:
        _wait(session)  # the grounding that follows a report
        located = [s for _start, _end, s in report.editor.editor.located if s.get("finding") == args.locate]
        if not located:
            raise SystemExit(f"no located sentence of {args.locate!r} in the draft")
        report.grounding.show(located[0])
        for _ in range(20):
            QApplication.processEvents()
    QApplication.processEvents()
    if args.show_model_list:  # a popup is a window of its own: grab the screen
        docks["Settings (napari-radreport)"].model_choice.native.showPopup()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.02)
        QApplication.primaryScreen().grabWindow(0, 0, 0, width, height).save(args.out)
        viewer.close()
        return
    viewer.screenshot(args.out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
