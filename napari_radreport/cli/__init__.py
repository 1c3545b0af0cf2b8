"""The ``radreport`` command line (``napari_radreport.cli:main``); one module per command group."""

from napari_radreport.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
