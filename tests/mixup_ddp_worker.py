"""One training step with mix-up on 2 CPU processes (Fabric DDP over gloo): each process mixes pairs of its own items.

Run by tests/test_distributed.py; every process writes its batch, its plan and the step's contrastive term."""
import argparse, os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from lightning_fabric import Fabric

from laretrieval.config import seed_everything
from laretrieval.datasets import AudioCaptionDataset, collate, make_builtin_set, split_clips
from laretrieval.mixup import draw_mixup
from laretrieval.model import build_model
from laretrieval.objectives import build_loss
from laretrieval.train import EpochBatches, TrainingStep
from tiny import tiny_config  # this script's folder is tests/, on sys.path

MIXUP_P = 0.5

def setup(cfg):
    "The model (seeded) and the training set both the worker and the test build alike."
    seed_everything(0)
    model = build_model(cfg)
    clips = split_clips(make_builtin_set(cfg.builtin_clips, 0, cfg.sample_rate), 'train')
    return model, AudioCaptionDataset(clips, cfg.sample_rate, 4.0, per_caption=True)

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    fabric = Fabric(accelerator='cpu', devices=2, strategy='ddp')
    fabric.launch()
    torch.set_num_threads(1)
    cfg = tiny_config(text_trainable_layers=1, mixup_p=MIXUP_P)
    model, dataset = setup(cfg)
    step = TrainingStep(model, build_loss(cfg), cfg.positives, cfg.mixup_p, cfg.mixup_alpha)
    fabric_step = fabric.setup_module(step)
    step.train(); model.eval()  # the step mixes (training mode); dropout off, so the test can recompute it in one process
    rank, world = fabric.global_rank, fabric.world_size
    indices = next(iter(EpochBatches(len(dataset), cfg.batch_size // world, seed=0, rank=rank, world_size=world)))
    batch = collate([dataset[i] for i in indices])
    captions = [c[0] for c in batch['captions']]
    torch.manual_seed(100 + rank); plan = draw_mixup(len(captions), cfg.mixup_p, cfg.mixup_alpha)  # what the step will draw
    torch.manual_seed(100 + rank)
    terms = fabric_step(batch['waveforms'], batch['lengths'], captions, batch['clip_ids'])
    fabric.backward(terms['total'])
    missing = [n for n, p in step.named_parameters() if p.requires_grad and p.grad is None]
    torch.save(dict(indices=indices, plan=plan, contrastive=terms['contrastive'].item(), missing=missing), f'{args.out}.{rank}')

if __name__ == '__main__':
    main()
