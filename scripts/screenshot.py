"""Take a screenshot of napari with the plugin's docks and a study (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot.py OUT.png [PATH ...] \\
        [--size 1920x1080] [--window lung] [--model FOLDER --generate] [--ask "question"] [--diagnose]
        [--tab Chat] [--allow-out-of-scope] [--models-folder DIR] [--also PATH [--select-first]]

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
    if args.generate or args.ask or args.diagnose:
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
    viewer.window._wrapped_dock_widgets[f"{args.tab} (napari-radreport)"].raise_()
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()  # frame the layers in the resized canvas
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
