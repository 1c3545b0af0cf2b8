"""napari-radreport: draft radiology reports from CT volumes and chest radiographs in napari."""

from napari_radreport.io import Study, StudyReadError, load_study

__version__ = "0.1.0"
__all__ = ["Study", "StudyReadError", "__version__", "load_study"]
