"""One training step of contrastive + match + mlm on `--devices` CPU processes (Fabric DDP over gloo): each process
writes its loss terms, gradients, chosen hard negatives and the gathered batch's scores.

Run by tests/test_fusion.py, once with one process and once with two; both see the same global batch."""
import argparse, os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from lightning_fabric import Fabric

from laretrieval.config import seed_everything
from laretrieval.datasets import AudioCaptionDataset, make_builtin_set, split_clips
from laretrieval.model import build_model
from laretrieval.objectives import build_loss
from laretrieval.train import TrainingStep
from ddp_step_worker import one_step
from tiny import tiny_config  # this script's folder is tests/, on sys.path

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--devices', type=int, required=True)
    parser.add_argument('--out', required=True)  # a folder: rank<r>.pt per process
    args = parser.parse_args()
    fabric = Fabric(accelerator='cpu', devices=args.devices, strategy='ddp' if args.devices > 1 else 'auto')
    fabric.launch()
    torch.set_num_threads(1)
    seed_everything(0)
    cfg = tiny_config(text_trainable_layers=1, match_weight=1.0, mlm_weight=1.0)
    model = build_model(cfg)
    loss = build_loss(cfg, model=model)
    scored = []
    loss.register_forward_pre_hook(lambda module, inputs: scored.append(inputs[0]))  # the gathered, scored batch
    clips = split_clips(make_builtin_set(cfg.builtin_clips, 0, cfg.sample_rate), 'train')
    dataset = AudioCaptionDataset(clips, cfg.sample_rate, 4.0, per_caption=True)
    terms, grads, batch = one_step(fabric, TrainingStep(model, loss), dataset, cfg.batch_size)
    torch.save(dict(terms={k: v.item() for k, v in terms.items()}, grads=grads, clip_ids=batch['clip_ids'],
                    negatives=loss.match.last_negatives, sim=scored[0].sim.detach(), positives=scored[0].positives),
               os.path.join(args.out, f'rank{fabric.global_rank}.pt'))

if __name__ == '__main__':
    main()
