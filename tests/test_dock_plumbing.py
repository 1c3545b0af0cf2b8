"""The docks' shared job plumbing (``ViewerSession.run``) and the magicgui Settings dock, in a real viewer.

The engine's load task is replaced by a stand-in that sends the events a test feeds it and ends when told,
so busy refusals, errors and progress are checked without torch or a model.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading

import pytest

from napari_radreport.engine.engine import ModelInfo
from napari_radreport.engine.events import Progress

pytestmark = pytest.mark.viewer
WAIT_MS = 10_000


class StandInLoad:
    """Replaces ``Engine._load``: sends queued events until released (or stopped), then returns or raises."""

    def __init__(self, error: BaseException | None = None):
        self.events: queue.Queue = queue.Queue()
        self.release = threading.Event()
        self.error = error
        self.calls = 0

    def __call__(self, source=None, *, device="auto", dtype="auto", quantization="none", on_event,
                 stop) -> ModelInfo:
        self.calls += 1
        while not (self.release.is_set() or stop.is_set()) or not self.events.empty():
            with contextlib.suppress(queue.Empty):
                on_event(self.events.get(timeout=0.01))
        if self.error is not None:
            raise self.error
        return ModelInfo(name="stand-in", path="", kind="test", modality="ct", device="cpu", dtype="float32")


@pytest.fixture()
def docks(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A viewer with the plugin's docks; settings and drafts in tmp_path."""
    from napari_radreport.viewer import add_docks
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    viewer = make_napari_viewer(show=True)
    found = add_docks(viewer)
    found["session"] = session = session_for(viewer)
    yield found
    session.stop()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)


def _stand_in(docks, monkeypatch, **kwargs) -> StandInLoad:
    load = StandInLoad(**kwargs)
    monkeypatch.setattr(docks["session"].engine, "_load", load)
    return load


def test_a_busy_refusal_reaches_the_dock_that_asked(docks, qtbot, monkeypatch):
    report, settings, session = docks["Report"], docks["Settings"], docks["session"]
    load = _stand_in(docks, monkeypatch)
    report.load_model()
    assert session.busy and session.job_owner is report
    assert not report.load_button.isEnabled() and not settings.load_button.enabled
    qtbot.waitUntil(lambda: load.calls == 1, timeout=WAIT_MS)
    settings.load()  # as a script would: the button itself is disabled
    assert "busy" in settings.status.value and "busy" not in report.status.text()
    assert not settings.progress.native.isVisible() and report.progress.isVisible()
    load.release.set()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert load.calls == 1  # the refused load never ran
    assert report.status.text() == "Model loaded."
    assert report.load_button.isEnabled() and settings.load_button.enabled

    load.release.clear()
    settings.load()
    assert session.job_owner is settings and "busy" not in settings.status.value
    report.load_model()
    assert "busy" in report.status.text() and "busy" not in settings.status.value
    load.release.set()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert load.calls == 2 and settings.status.value.startswith("Loaded stand-in")


@pytest.mark.parametrize("dock", ["Report", "Settings"])
def test_an_error_ends_as_one_line_and_the_buttons_come_back(docks, qtbot, monkeypatch, dock):
    session = docks["session"]
    error = OSError("no config.json in /models/x\n  Traceback (most recent call last): …")
    load = _stand_in(docks, monkeypatch, error=error)
    load.release.set()
    if dock == "Report":
        report = docks["Report"]
        report.load_model()
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
        text, bar, buttons = report.status.text(), report.progress, [report.load_button.isEnabled()]
        assert not report.stop_button.isEnabled()
    else:
        settings = docks["Settings"]
        settings.load()
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
        text, bar, buttons = settings.status.value, settings.progress.native, [settings.load_button.enabled]
    assert "Could not load the model: no config.json in /models/x" in text
    assert "Traceback" not in text and "\n" not in text and "<br" not in text
    assert all(buttons) and not bar.isVisible()
    assert docks["Chat"].ask_button.isEnabled() and docks["Findings"].run_button.isEnabled()


@pytest.mark.parametrize("dock", ["Report", "Settings"])
def test_a_progress_fraction_makes_the_bar_determinate(docks, qtbot, monkeypatch, dock):
    session = docks["session"]
    load = _stand_in(docks, monkeypatch)
    if dock == "Report":
        docks["Report"].load_model()
        bar = docks["Report"].progress
    else:
        docks["Settings"].load()
        bar = docks["Settings"].progress.native
    assert bar.isVisible() and bar.maximum() == 0  # indeterminate until a fraction comes
    load.events.put(Progress("load", "weights 1 of 4", 0.25))
    qtbot.waitUntil(lambda: bar.maximum() == 100 and bar.value() == 25, timeout=WAIT_MS)
    load.events.put(Progress("load", "weights 3 of 4", 0.75))
    qtbot.waitUntil(lambda: bar.value() == 75, timeout=WAIT_MS)
    assert bar.minimum() == 0 and bar.maximum() == 100
    load.events.put(Progress("load", "hashing the weights"))  # no fraction: indeterminate again
    qtbot.waitUntil(lambda: bar.maximum() == 0, timeout=WAIT_MS)
    load.release.set()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert not bar.isVisible()


def test_the_settings_panel_writes_the_settings(docks, tmp_path):
    from magicgui.widgets import Container

    from napari_radreport.user_settings import UserSettings

    settings, session = docks["Settings"], docks["session"]
    assert isinstance(settings, Container)
    assert not settings.temperature.enabled and not settings.top_p.enabled  # greedy by default
    settings.do_sample.value = True
    assert settings.temperature.enabled and settings.top_p.enabled
    settings.max_new_tokens.value = 77
    settings.temperature.value = 0.35
    settings.top_p.value = 0.8
    settings.device.value = "cpu"
    settings.dtype.value = "float32"
    assert settings.weights.value == "none"
    settings.weights.value = "int8"
    folder = tmp_path / "my-model"
    folder.mkdir()
    settings.model_folder.value = folder
    s = session.settings
    assert (s.max_new_tokens, s.do_sample, s.temperature, s.top_p) == (77, True, 0.35, 0.8)
    assert (s.device, s.dtype, s.model_folder) == ("cpu", "float32", str(folder))
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["max_new_tokens"] == 77 and saved["do_sample"] is True and saved["temperature"] == 0.35
    assert saved["top_p"] == 0.8 and saved["device"] == "cpu" and saved["dtype"] == "float32"
    assert saved["model_folder"] == str(folder) and saved["quantization"] == "int8"
    assert UserSettings.load() == s
    assert session.load_args() == {"source": str(folder), "device": "cpu", "dtype": "float32",
                                   "quantization": "int8"}
    settings.do_sample.value = False
    assert not settings.temperature.enabled and UserSettings.load().do_sample is False
    settings.model_folder.value = None  # empty: the demo model
    assert session.settings.model_folder == "" and UserSettings.load().model_folder == ""


def test_settings_are_remembered_between_sessions(make_napari_viewer, tmp_path, monkeypatch):
    from napari_radreport.user_settings import UserSettings
    from napari_radreport.viewer import add_docks

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    settings = add_docks(make_napari_viewer())["Settings"]
    settings.max_new_tokens.value = 77
    settings.do_sample.value = True
    settings.temperature.value = 0.35
    settings.device.value = "cpu"
    saved = UserSettings.load()
    assert (saved.max_new_tokens, saved.do_sample, saved.temperature, saved.device) == (77, True, 0.35, "cpu")
    again = add_docks(make_napari_viewer())["Settings"]
    assert again.max_new_tokens.value == 77 and again.temperature.value == pytest.approx(0.35)
    assert again.do_sample.value and again.temperature.enabled and again.device.value == "cpu"


def test_a_job_gives_its_outcome_without_raising_and_result_still_raises():
    from napari_radreport.engine.jobs import Job, WorkerThread

    worker = WorkerThread("test-jobs")
    done = Job(lambda x, *, on_event, stop: x * 2, 21).start(worker)
    failed = Job(lambda *, on_event, stop: 1 / 0).start(worker)
    assert done.outcome(10) == (42, None) and done.result() == 42
    value, error = failed.outcome(10)
    assert value is None and isinstance(error, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        failed.result()
    with pytest.raises(TimeoutError):
        Job(lambda *, on_event, stop: None).outcome(0)  # never started
    assert worker.close(10)
