"""napari-radreport: draft radiology reports from CT volumes and chest radiographs in napari.

``load_study`` and the Study classes are handed out on first use (PEP 562), so starting ``radreport`` imports
nothing heavy before its command line is parsed.
"""

from typing import TYPE_CHECKING

from napari_radreport.common import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {"Study": "io", "StudyReadError": "io", "load_study": "io"}  # name -> the module that defines it
__all__ = ["Study", "StudyReadError", "__version__", "load_study"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from napari_radreport.io import Study, StudyReadError, load_study
