"""Take a screenshot of napari with the plugin's docks and a study (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py OUT.png [PATH ...] [--window lung]
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--window", help="CT window preset to apply in the Study dock")
    parser.add_argument("--sample", default="ct")
    args = parser.parse_args()

    from qtpy.QtWidgets import QApplication

    from napari_radreport.viewer import open_viewer

    viewer = open_viewer(args.paths or None, sample=args.sample, run=False)
    viewer.window._qt_window.resize(1500, 950)
    dock = viewer.window.dock_widgets["Study (napari-radreport)"]
    if args.window:
        dock.apply_window(args.window)
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()  # frame the layers in the resized canvas
    QApplication.processEvents()
    viewer.screenshot(args.out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
