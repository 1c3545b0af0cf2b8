"""Drafts on disk: atomic saves, the AI text kept beside the edit, corrupted files kept aside, kill safety,
private modes, no temporary file left by a killed write."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from napari_radreport.common import write_atomic
from napari_radreport.drafts import Draft, DraftCorrupted, DraftStore


def test_a_draft_round_trips_with_its_ai_text_and_diff(tmp_path):
    store = DraftStore(tmp_path)
    draft = Draft(study_key="abc/1", ai_draft="Findings:\nNo effusion.",
                  text="Findings:\nSmall left effusion.")
    path = store.save(draft)
    assert path.parent == tmp_path and "/" not in path.name
    again = store.load("abc/1")
    assert again.ai_draft == draft.ai_draft and again.text == draft.text and again.edited
    assert "-No effusion." in again.diff() and "+Small left effusion." in again.diff()
    assert store.load("other") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_generating_again_keeps_every_version_with_its_provenance_and_sign_off():
    draft = Draft(study_key="k", ai_draft="AI one", text="AI one, corrected", provenance={"model_name": "a"},
                  stop_reason="eos", diagnosis={"Nodule": 0.9})
    draft.sign_off("Smith, Jane", "2025-05-01T10:00:00+02:00")
    draft.start_new_ai_draft({"model_name": "m"})
    (first,) = draft.previous
    assert (first.text, first.ai_draft, first.provenance, first.stop_reason, first.diagnosis) == (
        "AI one, corrected", "AI one", {"model_name": "a"}, "eos", {"Nodule": 0.9})
    assert (first.reviewed, first.reviewer, first.reviewed_at) == (True, "Smith, Jane",
                                                                   "2025-05-01T10:00:00+02:00")
    assert datetime.fromisoformat(first.saved_at).utcoffset() is not None
    assert ((draft.text, draft.ai_draft, draft.reviewed, draft.reviewer, draft.provenance)
            == ("", "", False, "", {"model_name": "m"}))
    draft.ai_draft = draft.text = "AI two"
    draft.start_new_ai_draft({})
    assert [v.text for v in draft.previous] == ["AI one, corrected", "AI two"]  # unedited ones too
    draft.start_new_ai_draft({})
    assert len(draft.previous) == 2  # an empty draft is no version


def test_a_restore_brings_a_version_back_exactly_and_can_be_undone(tmp_path):
    store = DraftStore(tmp_path)
    draft = Draft(study_key="k", ai_draft="AI one", text="AI one, corrected", provenance={"model_name": "a"},
                  diagnosis={"Nodule": 0.9}, stop_reason="eos")
    draft.start_new_ai_draft({"model_name": "b"})
    draft.ai_draft, draft.text = "AI two", "AI two, signed"
    draft.sign_off("Smith, Jane")
    store.save(draft)
    draft = store.load("k")
    assert draft.restore(0)
    assert (draft.text, draft.ai_draft, draft.provenance, draft.diagnosis, draft.stop_reason) == (
        "AI one, corrected", "AI one", {"model_name": "a"}, {"Nodule": 0.9}, "eos")
    assert not draft.reviewed and not draft.reviewer  # a restored text is signed off again, not by default
    assert [v.text for v in draft.previous] == ["AI one, corrected", "AI two, signed"]
    assert draft.previous[1].reviewer == "Smith, Jane"
    assert not draft.restore(0)  # already the current text: nothing kept twice
    assert draft.restore(1) and (draft.text, draft.ai_draft) == ("AI two, signed", "AI two")  # undone
    assert len(draft.previous) == 3


def test_a_draft_of_the_older_format_still_loads(tmp_path):
    """A version-1 draft (no sign-off fields; ``previous`` entries of ai_draft and text only) as the previous
    release wrote it."""
    store = DraftStore(tmp_path)
    old = {"version": 1, "study_key": "k", "study_label": "abdomen", "ai_draft": "AI two", "text": "AI two.",
           "reviewed": True, "provenance": {"model_name": "m"},
           "previous": [{"ai_draft": "AI one", "text": "AI one, corrected"}], "updated": 1746000000.0,
           "stop_reason": "eos", "diagnosis": {"Nodule": 0.2}}
    store.path_for("k").write_text(json.dumps(old), encoding="utf-8")
    draft = store.load("k")
    assert (draft.text, draft.reviewed, draft.reviewer, draft.reviewed_at) == ("AI two.", True, "", "")
    (first,) = draft.previous
    assert (first.text, first.ai_draft, first.saved_at, first.reviewer) == ("AI one, corrected", "AI one", "",
                                                                            "")
    assert draft.restore(0) and (draft.text, draft.ai_draft) == ("AI one, corrected", "AI one")
    store.save(draft)
    saved = json.loads(store.path_for("k").read_text(encoding="utf-8"))
    assert saved["version"] == 2 and saved["previous"][1]["text"] == "AI two."
    assert store.load("k").previous[1].reviewed  # reviewed before names were recorded: kept so


@pytest.mark.parametrize("content", ['{"version": 1, "study_key": "tru', "\xff\xfe garbage",
                                     '{"version": 99}', '{"version": 1, "unknown": 1}', '"a string"',
                                     '{"version": 2, "study_key": "k", "previous": [{"txt": "x"}]}'])
def test_an_unreadable_draft_is_moved_aside_never_deleted(tmp_path, content):
    store = DraftStore(tmp_path)
    path = store.path_for("k")
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(DraftCorrupted, match=r"draft k.json was unreadable .* kept as"):
        store.load("k")
    kept = list(tmp_path.glob("k.corrupt-*.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == content.encode("latin-1") and not path.exists()


CHILD = r"""
import sys
from qtpy.QtWidgets import QApplication
from qtpy.QtCore import QTimer
from napari_radreport.drafts import Draft, DraftStore
from napari_radreport.widgets.draft_editor import DraftEditor

app = QApplication([])
store = DraftStore(sys.argv[1])
editor = DraftEditor(lambda: store)
editor.show_draft(Draft(study_key="study-1", ai_draft="AI text.", text="AI text."))
editor.saved.connect(lambda _p: print("saved", len(editor.draft.text), flush=True))
typed = iter(range(10**6))
def type_word():
    editor.editor.moveCursor(editor.editor.textCursor().MoveOperation.End)
    editor.editor.insertPlainText(f" w{next(typed)}")
timer = QTimer()
timer.timeout.connect(type_word)
timer.start(20)
app.exec()
"""


def _typed(n_words: int) -> str:
    return "AI text." + "".join(f" w{i}" for i in range(n_words))


def test_after_a_kill_mid_edit_the_last_autosaved_draft_is_restored(tmp_path, qtbot):
    from napari_radreport.widgets.draft_editor import DraftEditor

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=Path(__file__).parent)
    reported = []
    deadline = time.time() + 60
    while len(reported) < 4 and time.time() < deadline:  # keep typing through several autosaves
        line = child.stdout.readline()
        if line.startswith("saved"):
            reported.append(int(line.split()[1]))
    child.send_signal(signal.SIGKILL)  # mid-edit: the child types every 20 ms
    child.wait(10)
    assert len(reported) == 4 and reported == sorted(reported)

    store = DraftStore(tmp_path)
    draft = store.load("study-1")
    assert len(draft.text) >= reported[-1]
    n_words = len(draft.text.split()) - 2
    assert draft.text == _typed(n_words) and draft.ai_draft == "AI text."
    editor = DraftEditor(lambda: store)
    qtbot.addWidget(editor)
    editor.show_draft(draft)
    assert editor.editor.toPlainText() == draft.text and "(edited)" in editor.state.text()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o002, 0o277])  # too open (group-writable, world-readable), too closed
def test_drafts_are_private_whatever_the_umask(tmp_path, umask):
    old_umask = os.umask(umask)
    try:
        store = DraftStore(tmp_path / "data" / "drafts")
        path = store.save(Draft(study_key="k", text="Mr Smith, findings."))
        assert _mode(store.folder) == 0o700 and _mode(path) == 0o600
        store.save(Draft(study_key="k", text="again"))  # a replaced draft stays private too
        assert _mode(path) == 0o600
        legacy = DraftStore(tmp_path / "legacy")  # a folder an earlier version made 0755
        legacy.folder.mkdir(mode=0o755)
        legacy.folder.chmod(0o755)
        legacy.save(Draft(study_key="k", text="x"))
        assert _mode(legacy.folder) == 0o700
    finally:
        os.umask(old_umask)


KILLED_WRITER = r"""
import os, sys, time
from napari_radreport.common import write_atomic

def stall(fd):  # the data is in the temporary file; the rename has not happened
    print("writing", flush=True)
    time.sleep(600)

os.fsync = stall
write_atomic(sys.argv[1], b"x" * 20_000_000)
"""


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "k.json"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    (left,) = tmp_path.glob(".k.json.*.tmp")
    assert left.stat().st_size == 20_000_000 and not target.exists()
    write_atomic(target, b"{}")  # a temporary this young may be another process's write in progress
    assert left.exists() and target.read_bytes() == b"{}"
    old = time.time() - 120
    os.utime(left, (old, old))
    other = tmp_path / ".other.json.0123abcd.tmp"  # another target's temporary is not ours to remove
    other.write_bytes(b"")
    os.utime(other, (old, old))
    DraftStore(tmp_path).save(Draft(study_key="k", text="saved"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.0123abcd.tmp", "k.json"]
