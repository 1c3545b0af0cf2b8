"""Drafts on disk: one JSON file per study, written atomically, never silently dropped.

A draft keeps the AI's text and the user's edited text side by side (and earlier edited versions when
the user generates again). Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the old file, so a crash leaves either the previous draft or the new one, never half a file.
A file that cannot be read is moved aside (``*.corrupt-<time>.json``) and reported, not deleted.

Drafts are private: the folder is created 0700 and each draft written 0600, whatever the umask; a drafts
folder that exists, belongs to this user and lets others in (a 0755 folder of an earlier version) is
narrowed to 0700 on the next save. A folder of another owner (one shared on purpose) keeps its mode; the
drafts in it are still 0600.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_radreport.common import text_diff, write_atomic
from napari_radreport.paths import drafts_dir

DRAFT_VERSION = 1
FOLDER_MODE, FILE_MODE = 0o700, 0o600


class DraftCorrupted(Exception):
    """A draft file could not be read; it was kept aside under the name in the message."""


@dataclass
class Draft:
    study_key: str
    study_label: str = ""
    ai_draft: str = ""
    text: str = ""
    reviewed: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    previous: list[dict[str, str]] = field(default_factory=list)  # earlier edited versions, newest last
    updated: float = 0.0
    # how the last generation ended: "" (none yet, or an older draft), "generating" (still running, or the
    # process was killed meanwhile), then the engine's "eos", "length" or "stopped", or "failed"
    stop_reason: str = ""
    # the model's diagnosis of the study when it wrote the draft (label -> P(yes)): what the Report dock and
    # the exports check the text against (napari_radreport/consistency.py)
    diagnosis: dict[str, float] = field(default_factory=dict)

    @property
    def edited(self) -> bool:
        return self.text != self.ai_draft

    def diff(self) -> str:
        """Unified diff from the AI draft to the edited text ('' when unchanged)."""
        return text_diff(self.ai_draft, self.text, "AI draft", "edited")

    def start_new_ai_draft(self, provenance: dict[str, Any]) -> None:
        """Before generating again: keep an edited text among the previous versions, then reset."""
        if self.text.strip() and self.edited:
            self.previous = [*self.previous[-19:], {"ai_draft": self.ai_draft, "text": self.text}]
        self.ai_draft = self.text = ""
        self.reviewed = False
        self.provenance = dict(provenance)
        self.diagnosis = {}

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
            if data.pop("version", None) != DRAFT_VERSION:
                raise ValueError("unknown draft version")
            return Draft(**data)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            kept = path.with_name(f"{path.stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.json")
            os.replace(path, kept)
            raise DraftCorrupted(f"the saved draft {path.name} was unreadable ({exc.__class__.__name__}); "
                                 f"kept as {kept}") from exc
