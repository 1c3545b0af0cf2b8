"""Qt docks. Everything that imports Qt lives in this package."""
