"""A reproducible research workbook for language-based audio retrieval (DCASE Task 6)

Modules:

- `laretrieval.cli`: `laretrieval experiment --set key=value ...` runs one experiment notebook and prints its results table; `laretrieval ablate grid.yaml --batch-dir DIR` runs a grid and prints mean ± std per arm; `laretrieval train --params stage.yaml --output-dir DIR [--resume | --overwrite]` trains as a script (Fabric: one or several processes); `laretrieval predict RUN --audio-dir DIR --queries CSV --output sub.csv [-k 16] [--relevance FILE]` writes the DCASE ranking file.
- `laretrieval.pipeline`: Data splits from a config, train → test → run folder, and `laretrieval train`: the script form of the experiment notebook that Fabric launches on several processes and that can be resumed.
- `laretrieval.train`: The training loop on Lightning Fabric (CPU, one GPU, DDP): features gathered across processes, mixed precision, gradient accumulation, AdamW with per-module learning rates, warm-up + cosine, gradient clipping, validation at every requested k each epoch (the checkpoint chosen by `val_metric`), atomic checkpoints with exact resume, and the three stages (contrastive, distillation, clusters)."""

__version__ = "0.1.0"
