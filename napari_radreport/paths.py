"""Where the plugin keeps files of its own: platformdirs' user folders, read when used; an environment
variable that is set and not empty overrides each (an empty one is ignored, so nothing lands in the current
folder).

* ``cache_dir()``: ``RADREPORT_CACHE`` or the user cache folder (converted models, weight hashes);
* ``settings_file()``: ``RADREPORT_CONFIG`` or ``settings.json`` in the user config folder;
* ``drafts_dir()``: ``RADREPORT_DRAFTS`` or ``drafts/`` in the user data folder;
* ``templates_dir()``: ``RADREPORT_TEMPLATES`` or ``templates/`` in the user data folder (report templates,
  ``*.txt``, beside and over the shipped ones: ``report_templates``).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "napari-radreport"


def _override(variable: str) -> Path | None:
    value = os.environ.get(variable, "")
    return Path(value) if value.strip() else None


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return _override("RADREPORT_CACHE") or Path(user_cache_dir(APP_NAME))


def settings_file() -> Path:
    from platformdirs import user_config_dir

    return _override("RADREPORT_CONFIG") or Path(user_config_dir(APP_NAME)) / "settings.json"


def drafts_dir() -> Path:
    from platformdirs import user_data_dir

    return _override("RADREPORT_DRAFTS") or Path(user_data_dir(APP_NAME)) / "drafts"


def templates_dir() -> Path:
    from platformdirs import user_data_dir

    return _override("RADREPORT_TEMPLATES") or Path(user_data_dir(APP_NAME)) / "templates"


def use_private_user_files(folder: Path) -> None:
    """Settings and drafts in ``folder`` for the rest of this process (a benchmark or a screenshot sets values
    in memory that a later save would otherwise write into the user's own settings)."""
    os.environ["RADREPORT_CONFIG"] = str(Path(folder) / "settings.json")
    os.environ["RADREPORT_DRAFTS"] = str(Path(folder) / "drafts")
