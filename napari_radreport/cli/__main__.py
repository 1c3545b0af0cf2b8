"""``python -m napari_radreport.cli`` (what ``accelerate launch -m`` runs)."""

import sys

from napari_radreport.cli.parser import main

sys.exit(main())
