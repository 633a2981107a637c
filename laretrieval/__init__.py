"""A reproducible research workbook for language-based audio retrieval (DCASE Task 6)

Modules:

- `laretrieval.atst`: The frame-level audio teacher-student transformer (Li et al. 2024) as an `AudioEncoder`: its 16 kHz log-mel front end, 40 ms frame tokens, 10 s chunks for long clips, and strict loading of the official `atstframe_base.ckpt`.
- `laretrieval.beats`: The BEATs audio encoder (Chen et al. 2023) written from the official code's structure: Kaldi fbank front end, 16×16 patches, a deep-norm transformer with convolutional and gated relative positions, official checkpoints loaded strictly, time-step frames for text-aware pooling.
- `laretrieval.cli`: `laretrieval experiment --set key=value ...` runs one experiment notebook and prints its results table; `laretrieval ablate grid.yaml --batch-dir DIR` runs a grid and prints mean ± std per arm; `laretrieval train --params stage.yaml --output-dir DIR [--resume | --overwrite]` trains as a script (Fabric: one or several processes); `laretrieval predict RUN --audio-dir DIR --queries CSV --output sub.csv [-k 16] [--relevance FILE]` writes the DCASE ranking file.
- `laretrieval.pipeline`: A config trained and tested into a run folder (`laretrieval train`: the script form of the experiment notebook, launched by Fabric on several processes, resumable), caption clusters for stage 3, and ensembles of finished runs.
- `laretrieval.trackers`: The `logger` parameter: the run's hyperparameters, step losses, validation and test metrics in TensorBoard, CSV, Weights & Biases or MLflow, through Lightning Fabric's logger interface; and an ablation batch's results table.
- `laretrieval.train`: The training loop on Lightning Fabric (CPU, one GPU, DDP): the global batch's loss, mixed precision, gradient accumulation, AdamW with per-module learning rates, warm-up + cosine, gradient clipping, validation at every requested k each epoch (the checkpoint chosen by `val_metric`), and exact resume."""

__version__ = "0.1.0"
