"""An audio encoder, a loss term and a corpus written the way a user adds one: each a class, registered by one line.

tests/test_registry.py registers them (the lines `laretrieval/registry.py` would hold) and trains with them."""
import torch
import torch.nn as nn

from laretrieval.datasets import make_builtin_set
from laretrieval.encoders import AudioEncoder, AudioFeatures
from laretrieval.objectives import LossTerm
from laretrieval.pooling import masked_mean
from laretrieval.sources import Corpus


class ChunkAudioEncoder(AudioEncoder):
    "10 ms waveform chunks through a linear layer and a GELU: frames (B, T, D), no spectrogram front end."
    def __init__(self, sample_rate:int=16000, dim:int=32):
        super().__init__(sample_rate)
        self.hop, self.out_dim = sample_rate // 100, dim
        self.linear = nn.Linear(self.hop, dim)

    @classmethod
    def from_config(cls, cfg, name=None, weights=True): return cls(cfg.sample_rate, cfg.audio_width)

    def forward(self, waveforms, lengths):
        n = waveforms.shape[1] // self.hop
        frames = nn.functional.gelu(self.linear(waveforms[:, :n * self.hop].unflatten(1, (n, self.hop))))
        mask = torch.arange(n, device=waveforms.device)[None] < (lengths // self.hop)[:, None]
        return AudioFeatures(frames, mask, masked_mean(frames, mask))


class UniformityTerm(LossTerm):
    "Wang & Isola's uniformity of the caption embeddings, log E exp(-2 |t_i - t_j|^2) over pairs, at weight 0.1."
    @classmethod
    def from_config(cls, cfg, **inputs): return cls()

    def weight(self, cfg): return 0.1

    def forward(self, batch):
        d = torch.cdist(batch.text, batch.text).pow(2)
        return d[~torch.eye(len(d), dtype=torch.bool, device=d.device)].mul(-2).exp().mean().log()


class EveryFifthCorpus(Corpus):
    "The built-in clips with every fifth one held out for test and the next one for validation."
    name, clip_seconds = 'every_fifth', 4.0

    def clips(self, cfg, settings):
        clips = make_builtin_set(cfg.builtin_clips, cfg.data_seed, cfg.sample_rate, seconds=self.clip_seconds)
        for n, clip in enumerate(clips): clip.split = 'test' if n % 5 == 0 else 'val' if n % 5 == 1 else 'train'
        return clips
