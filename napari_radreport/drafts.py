"""Drafts on disk: one JSON file per study, written atomically, never silently dropped.

A draft keeps the AI's text and the user's edited text side by side, the reviewer's sign-off, and every
earlier version (``previous``: each text replaced by a new generation or a restore, with its AI draft,
provenance and sign-off). Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the old file, so a crash leaves either the previous draft or the new one, never half a file.
A file that cannot be read is moved aside (``*.corrupt-<time>.json``) and reported, not deleted.

Drafts are private: the folder is created 0700 and each draft written 0600, whatever the umask; a drafts
folder that exists, belongs to this user and lets others in (a 0755 folder of an earlier version) is
narrowed to 0700 on the next save. A folder of another owner (one shared on purpose) keeps its mode; the
drafts in it are still 0600.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from napari_radreport.common import text_diff, write_atomic
from napari_radreport.paths import drafts_dir

DRAFT_VERSION = 2  # 2: reviewer, reviewed_at, and ``previous`` entries with time, provenance, sign-off
READABLE_VERSIONS = (1, 2)  # a version-1 draft loads as is: its new fields take their defaults
FOLDER_MODE, FILE_MODE = 0o700, 0o600


class DraftCorrupted(Exception):
    """A draft file could not be read; it was kept aside under the name in the message."""


def local_now() -> str:
    """The local time, ISO 8601 to the second with its UTC offset ("2025-05-01T10:00:00+02:00")."""
    return datetime.now().astimezone().replace(microsecond=0).isoformat()


@dataclass
class Version:
    """An earlier text of a draft, as it was when a new generation or a restore replaced it.

    A version-1 draft's entries hold only ``ai_draft`` and ``text``; the other fields then stay empty."""

    text: str = ""
    ai_draft: str = ""
    saved_at: str = ""  # when this text was last saved (local ISO 8601 with offset); "" in older drafts
    provenance: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""
    diagnosis: dict[str, float] = field(default_factory=dict)
    reviewed: bool = False
    reviewer: str = ""
    reviewed_at: str = ""
    grounding: list[dict[str, Any]] = field(default_factory=list)
    questions: dict[str, str] = field(default_factory=dict)


@dataclass
class Draft:
    study_key: str
    study_label: str = ""
    ai_draft: str = ""
    text: str = ""
    reviewed: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    previous: list[Version] = field(default_factory=list)  # every earlier version, oldest first
    updated: float = 0.0
    # how the last generation ended: "" (none yet, or an older draft), "generating" (still running, or the
    # process was killed meanwhile), then the engine's "eos", "length" or "stopped", or "failed"
    stop_reason: str = ""
    # the model's diagnosis of the study when it wrote the draft (label -> P(yes)): what the Report dock and
    # the exports check the text against (napari_radreport/consistency.py)
    diagnosis: dict[str, float] = field(default_factory=dict)
    # the sign-off: who ticked Reviewed and when (local ISO 8601 with offset); both "" in a draft reviewed
    # before names were recorded, and cleared whenever the text changes after it
    reviewer: str = ""
    reviewed_at: str = ""
    # where the sentences were located (GroundedSentence.as_dict of each, grounding/), and the question each
    # report section answered (what grounding scores an edited text against); empty before grounding
    grounding: list[dict[str, Any]] = field(default_factory=list)
    questions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.previous = [v if isinstance(v, Version) else Version(**v) for v in self.previous]

    @property
    def edited(self) -> bool:
        return self.text != self.ai_draft

    def sign_off(self, reviewer: str, at: str | None = None) -> None:
        """Mark the text as it stands reviewed by ``reviewer``, at ``at`` (default: now)."""
        self.reviewed, self.reviewer, self.reviewed_at = True, reviewer, at or local_now()

    def clear_sign_off(self) -> None:
        self.reviewed, self.reviewer, self.reviewed_at = False, "", ""

    def diff(self) -> str:
        """Unified diff from the AI draft to the edited text ('' when unchanged)."""
        return text_diff(self.ai_draft, self.text, "AI draft", "edited")

    def current_version(self) -> Version:
        """The text as it stands, with what a history entry keeps of it."""
        saved = datetime.fromtimestamp(self.updated) if self.updated else datetime.now()
        return Version(text=self.text, ai_draft=self.ai_draft,
                       saved_at=saved.astimezone().replace(microsecond=0).isoformat(),
                       provenance=copy.deepcopy(self.provenance), stop_reason=self.stop_reason,
                       diagnosis=dict(self.diagnosis), reviewed=self.reviewed, reviewer=self.reviewer,
                       reviewed_at=self.reviewed_at, grounding=copy.deepcopy(self.grounding),
                       questions=dict(self.questions))

    def keep_current(self) -> None:
        """Add the text as it stands to ``previous`` (nothing when both texts are empty)."""
        if self.text.strip() or self.ai_draft.strip():
            self.previous.append(self.current_version())

    def start_new_ai_draft(self, provenance: dict[str, Any]) -> None:
        """Before generating again: keep the current version in ``previous``, then start an empty one."""
        self.keep_current()
        self.ai_draft = self.text = ""
        self.clear_sign_off()
        self.provenance = dict(provenance)
        self.diagnosis = {}
        self.grounding, self.questions = [], {}

    def restore(self, index: int) -> bool:
        """Make ``previous[index]`` the current text again, after keeping the current one in ``previous``
        (so a restore can be undone by another). The sign-off is not restored: a restored text is signed
        again. False (nothing changed) when that version's texts are the current ones."""
        version = self.previous[index]
        if (version.text, version.ai_draft) == (self.text, self.ai_draft):
            return False
        self.keep_current()
        self.text, self.ai_draft, self.stop_reason = version.text, version.ai_draft, version.stop_reason
        self.provenance, self.diagnosis = copy.deepcopy(version.provenance), dict(version.diagnosis)
        self.grounding, self.questions = copy.deepcopy(version.grounding), dict(version.questions)
        self.clear_sign_off()
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"version": DRAFT_VERSION, **asdict(self)}


class DraftStore:
    """Drafts in a folder, keyed by ``Study.key``."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else drafts_dir()

    def path_for(self, key: str) -> Path:
        return self.folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.json"

    def save(self, draft: Draft) -> Path:
        self._private_folder()
        draft.updated = time.time()
        target = self.path_for(draft.study_key)
        write_atomic(target, json.dumps(draft.as_dict(), ensure_ascii=False, indent=1).encode("utf-8"),
                     mode=FILE_MODE)
        return target

    def _private_folder(self) -> None:
        """Create the folder 0700, or narrow it to 0700 when it is this user's and open to others."""
        folder = self.folder
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        if os.name != "posix":
            return
        info = folder.stat()
        if created or (info.st_uid == os.getuid() and info.st_mode & 0o077):
            os.chmod(folder, FOLDER_MODE)  # mkdir's mode is cut by the umask, never widened

    def load(self, key: str) -> Draft | None:
        """The saved draft, None when there is none; ``DraftCorrupted`` after moving a bad file aside."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("version", None) not in READABLE_VERSIONS:
                raise ValueError("unknown draft version")
            return Draft(**data)
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            kept = path.with_name(f"{path.stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.json")
            os.replace(path, kept)
            raise DraftCorrupted(f"the saved draft {path.name} was unreadable ({exc.__class__.__name__}); "
                                 f"kept as {kept}") from exc
