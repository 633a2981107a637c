"""One training step's loss terms and gradients on `--devices` CPU processes (Fabric DDP over gloo).

Run by tests/test_distributed.py, once with one process and once with two; both see the same global batch."""
import argparse, os, zlib
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from lightning_fabric import Fabric

from laretrieval.config import seed_everything
from laretrieval.datasets import AudioCaptionDataset, collate, make_builtin_set, split_clips
from laretrieval.model import build_model
from laretrieval.objectives import build_loss
from laretrieval.teachers import TeacherTargets
from laretrieval.train import EpochBatches, TrainingStep
from tiny import tiny_config  # this script's folder is tests/, on sys.path

VARIANTS = dict(  # the stage-3 loss (contrastive + distillation + clusters) with mean pooling; sigmoid loss with TAP
    stages=dict(loss='ntxent', pooling='mean', distill_weight=0.5, cluster_weight=0.3),
    sigmoid_tap=dict(loss='sigmoid', pooling='tap', tap_dim=16))

def one_step(fabric, step:TrainingStep, dataset, batch_size:int):
    "One forward and backward of `step` on this process's share of the first global batch: loss terms, gradients, the batch."
    # dropout masks and batch-norm batch statistics are per process; with them off both runs compute the same function
    step.eval()
    fabric_step = fabric.setup_module(step)
    sampler = EpochBatches(len(dataset), batch_size // fabric.world_size, seed=0, rank=fabric.global_rank, world_size=fabric.world_size)
    batch = collate([dataset[i] for i in next(iter(sampler))])
    terms = fabric_step(batch['waveforms'], batch['lengths'], [c[0] for c in batch['captions']], batch['clip_ids'])
    fabric.backward(terms['total'])
    grads = {name: None if p.grad is None else p.grad.detach().clone() for name, p in step.named_parameters() if p.requires_grad}
    missing = [name for name, g in grads.items() if g is None]
    assert not missing, f'parameters without a gradient: {missing[:5]}'
    return terms, grads, batch

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--devices', type=int, required=True)
    parser.add_argument('--variant', choices=sorted(VARIANTS), required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    fabric = Fabric(accelerator='cpu', devices=args.devices, strategy='ddp' if args.devices > 1 else 'auto')
    fabric.launch()
    torch.set_num_threads(1)
    seed_everything(0)
    cfg = tiny_config(text_trainable_layers=1, **VARIANTS[args.variant])  # one step: the tiny run's epochs play no part
    model = build_model(cfg)
    clips = split_clips(make_builtin_set(cfg.builtin_clips, 0, cfg.sample_rate), 'train')
    dataset = AudioCaptionDataset(clips, cfg.sample_rate, 4.0, per_caption=True)
    teachers, labels = None, None
    if args.variant == 'stages':
        captions = sorted({c for clip in clips for c in clip.captions})
        sim = torch.rand(len(captions), len(clips), generator=torch.Generator().manual_seed(1)) * 2 - 1
        teachers = TeacherTargets.from_similarity(sim, captions, [c.clip_id for c in clips])
        labels = {(clip.clip_id, c): zlib.crc32(c.encode()) % 3 for clip in clips for c in clip.captions}
    terms, grads, batch = one_step(fabric, TrainingStep(model, build_loss(cfg, teachers=teachers, cluster_labels=labels)),
                                   dataset, cfg.batch_size)
    if fabric.global_rank == 0:
        torch.save(dict(terms={k: v.item() for k, v in terms.items()}, grads=grads, clip_ids=batch['clip_ids']), args.out)

if __name__ == '__main__':
    main()
