"""Qt docks. Everything that imports Qt lives in this package.

napari imports a dock's module through this package, so OpenMP's passive waiting is asked for here, before the
docks' engine imports torch (engine/threads.py); where another plugin imported torch first it cannot apply.
"""

from napari_radreport.engine.threads import prefer_passive_waiting

prefer_passive_waiting()
