"""The house rules a new engineer can rely on: no torch at start-up, imports that only run down the layers,
Qt only in widgets/, and a development guide that names every package folder."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "napari_radreport"
HEAVY = ("torch", "transformers", "peft", "accelerate")

GUIDE = ROOT / "docs" / "development.md"


def _code_block(heading: str) -> list[str]:
    """The lines of the first fenced block under ``## heading`` in the development guide."""
    text = GUIDE.read_text().split(f"## {heading}\n", 1)[1]
    return text.split("```", 2)[1].splitlines()[1:]


def _layers() -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The guide's import layers (top line first): each part's rank from the ground, and the pairs that a
    ``|`` keeps apart (neither imports the other)."""
    rows = [re.sub(r"\(.*\)", "", line).strip() for line in _code_block("Import layers")]
    rank, apart = {}, set()
    for height, row in enumerate(reversed([r for r in rows if r])):
        sides = [[part.strip() for part in side.split(",")] for side in row.split("|")]
        for side in sides:
            rank.update(dict.fromkeys(side, height))
        for one in sides:
            for other in sides:
                if one is not other:
                    apart.update((a, b) for a in one for b in other)
    return rank, apart


RANK, APART = _layers()


def _top(path: Path) -> str:
    """The layer part a module belongs to: its first folder under the package, or its own name at the root."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, inside functions too, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y: up node.level - 1 packages from this file's own
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            found.append((node.lineno, base))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_package_part_has_a_layer():
    parts = {_top(p) for p in _modules()}
    assert parts <= set(RANK), f"give these a layer in docs/development.md: {sorted(parts - set(RANK))}"
    assert ("training", "evaluation") in APART and RANK["widgets"] > RANK["engine"] > RANK["modeling"]


def test_imports_never_run_back_up_the_layers():
    wrong = []
    for path in _modules():
        here = _top(path)
        for line, module in _imports(path):
            names = module.split(".")
            if names[0] != "napari_radreport" or len(names) < 2:
                continue
            there = names[1]
            if there not in RANK or there == here:
                continue
            if RANK[there] > RANK[here] or (here, there) in APART:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({here} -> {there})")
    assert not wrong, "imports that run back up:\n" + "\n".join(wrong)


def test_only_the_train_command_needs_training():
    """Evaluation, prediction and every other command stand on the data floor, not on training."""
    wrong = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in _modules()
        if _top(p) in ("cli", "evaluation", "batch_predict") and p.name != "train.py"
        for line, m in _imports(p)
        if m.startswith("napari_radreport.training")
    ]
    assert not wrong, "imports of training: " + ", ".join(wrong)


def test_qt_is_imported_only_in_widgets():
    qt = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt")
    wrong = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in _modules() if _top(p) != "widgets"
             and p.name != "ui_stall.py"  # the UI benchmark's probe drives a real Qt window on purpose
             for line, m in _imports(p) if m.split(".")[0] in qt]
    assert not wrong, "\n".join(wrong)


def _loaded_after(code: str) -> dict:
    """Which heavy libraries are in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "QT_API": "pyqt6"}, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "from napari_radreport.cli import build_parser; build_parser()",
    "import napari_radreport.engine.prompts, napari_radreport.engine.events, napari_radreport.engine.engine",
    "import napari_radreport.modeling, napari_radreport.export, napari_radreport.data",
])
def test_the_command_line_and_light_modules_load_no_torch(code):
    assert not any(_loaded_after(code).values()), code


@pytest.mark.parametrize("dock", ["report_dock", "chat_dock", "findings_dock", "settings_dock", "study_dock"])
def test_importing_a_dock_loads_no_torch(dock):
    loaded = _loaded_after(f"import napari_radreport.widgets.{dock}")
    assert not any(loaded.values()), loaded


def test_radreport_info_and_help_run_without_torch(abdomen_nifti):
    nifti = abdomen_nifti
    loaded = _loaded_after("from napari_radreport.cli import main\n"
                           f"assert main(['info', {str(nifti)!r}]) == 0\n"
                           "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not any(loaded.values()), loaded


def test_the_development_guide_names_every_package_folder():
    """Each folder of the package starts a line of the layout block ("  engine/   one loaded model...")."""
    described = {m.group(1) for line in _code_block("Layout") if (m := re.match(r"\s*([\w.]+)/\s", line))}
    folders = sorted({p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.parent != PACKAGE})
    missing = [f for f in folders if f.split("/")[-1] not in described]
    assert not missing, f"docs/development.md does not describe: {missing}"


@pytest.mark.parametrize("face", ["napari_radreport", "napari_radreport.engine", "napari_radreport.modeling"])
def test_a_lazy_face_hands_out_every_name_it_lists(face):
    import importlib

    module = importlib.import_module(face)
    assert set(module.__all__) - {"__version__"} == set(module._EXPORTS)
    for name, source in module._EXPORTS.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"{face}.{source}"), name)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        module.Nothing  # noqa: B018
