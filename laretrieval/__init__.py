"""A reproducible research workbook for language-based audio retrieval (DCASE Task 6)

Modules:

- `laretrieval.cli`: `laretrieval experiment --set key=value ...` runs one experiment notebook and prints its results table; `laretrieval ablate grid.yaml --batch-dir DIR` runs a grid and prints mean ± std per arm."""

__version__ = "0.1.0"
