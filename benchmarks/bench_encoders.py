"""Audio encoders: parameters, frames per clip, CPU forward time per clip and training-step time, one encoder per process.

For every audio encoder name (default: every plain name of `laretrieval.registry.AUDIO_ENCODERS`; any registry name
can be given, e.g. `hf:<folder>` or `clap:<folder>` once those are registered), built from its config with random
weights (`from_config(..., weights=False)`: nothing is downloaded; the official weights have the same shapes):
  params       total and trainable parameters (the AudioSet classifier heads some encoders keep are frozen)
  frames       real frames x dimension D the encoder returns for one clip of --seconds (the AudioFeatures contract;
               an encoder padding to a longer window, PaSST's 30 s, returns more frames T, the rest masked: `(of T)`)
  forward      eval mode, no grad, one clip of --seconds: median of --repeats after one warm-up
  train step   training mode, forward + backward of the frames' mean over a batch of --batch clips: median of
               --train-repeats after one warm-up (the optimizer step is left out: it is the same for any encoder)
Each encoder runs in its own subprocess (its own memory and thread pool) with --threads torch threads. Times are wall
seconds (time.perf_counter) beside the process's CPU seconds (time.process_time): on a shared, loaded machine the wall
time counts the waits for a core and the CPU time does not, so the CPU time is the steadier comparison.
Each encoder reads audio at its own rate (--rate name=Hz for names not in RATES, e.g. --rate hf:/models/ast=16000).
--blocks N keeps the first N transformer blocks / CNN stages (`audio_blocks`) to time a cut-down encoder (`cnn` has no
such option and is timed whole).
Usage: python benchmarks/bench_encoders.py [--encoders cnn passt ...] [--seconds 10 --batch 4 --repeats 3 --train-repeats 2]
       [--threads 1] [--blocks 0] [--json results.json]
"""
import argparse, inspect, json, os, platform, statistics, subprocess, sys, time

# the rate each encoder's paper uses (the encoders refuse any other); names not here read 16 kHz unless --rate says
RATES = dict(cnn=16000, passt=32000, panns_cnn14=32000, panns_resnet38=32000, beats=16000, atst_frame=16000)


def timed(fn, repeats:int)->dict:
    "One warm-up call, then the median wall and CPU seconds of `repeats` calls."
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
    return dict(wall=statistics.median(wall), cpu=statistics.median(cpu), wall_all=wall, cpu_all=cpu)


def measure(args)->dict:
    "Build one encoder from its config with random weights and measure it in this process."
    import torch
    from laretrieval.config import ExperimentConfig
    from laretrieval.registry import AUDIO_ENCODERS
    torch.set_num_threads(args.threads); torch.manual_seed(0)
    name, rate = args.only, rate_of(args.only, args.rate)
    cfg = ExperimentConfig(audio_encoder=name, sample_rate=rate, audio_blocks=args.blocks, audio_weights='none', passt_pretrained=False)
    encoder = AUDIO_ENCODERS.get(name).from_config(cfg, AUDIO_ENCODERS.split(name)[1], weights=False)
    if encoder.sample_rate != rate: raise ValueError(f"{name} reads {encoder.sample_rate} Hz audio; pass --rate {name}={encoder.sample_rate}")
    n = round(args.seconds * rate)
    one, batch = torch.randn(1, n) * 0.1, torch.randn(args.batch, n) * 0.1
    one_len, batch_len = torch.tensor([n]), torch.full((args.batch,), n)
    params = sum(p.numel() for p in encoder.parameters())
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)

    encoder.eval()
    with torch.no_grad(): out = encoder(one, one_len)  # frames (1, T, D); mask: which of the T come from the clip
    def forward():
        with torch.no_grad(): encoder(one, one_len)
    fwd = timed(forward, args.repeats)

    encoder.train()
    def train_step():
        encoder.zero_grad(set_to_none=True)
        encoder(batch, batch_len).frames.mean().backward()
    step = timed(train_step, args.train_repeats)
    cut = args.blocks if 'blocks' in inspect.signature(type(encoder).__init__).parameters else 0  # `cnn` has no blocks to cut
    return dict(encoder=name, sample_rate=rate, blocks=cut, params=params, trainable=trainable,
                frames=int(out.mask.sum()), padded_frames=out.frames.shape[1], dim=out.frames.shape[2], forward=fwd, train_step=step)


def rate_of(name:str, overrides:list[str])->int:
    "The sample rate `name` reads: --rate name=Hz, else RATES, else 16 kHz."
    given = dict(o.split('=', 1) for o in overrides)
    return int(given.get(name, RATES.get(name, 16000)))


def markdown(results:list[dict], args)->str:
    "The results as a markdown table."
    lines = [f"| encoder | rate | params (M) | trainable (M) | frames x dim per {args.seconds:g} s | forward wall s | forward CPU s "
             f"| train step x{args.batch} wall s | train step CPU s |", '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        if 'error' in r: lines.append(f"| {r['encoder']} | failed: {r['error']} |" + ' |' * 7); continue
        size = f" (audio_blocks={r['blocks']})" if r['blocks'] else ''
        frames = r['frames'] if r['frames'] == r['padded_frames'] else f"{r['frames']} (of {r['padded_frames']})"
        lines.append(f"| {r['encoder']}{size} "
                     f"| {r['sample_rate'] // 1000} kHz | {r['params'] / 1e6:.3g} | {r['trainable'] / 1e6:.3g} | {frames} x {r['dim']} "
                     f"| {r['forward']['wall']:.3f} | {r['forward']['cpu']:.3f} | {r['train_step']['wall']:.2f} | {r['train_step']['cpu']:.2f} |")
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--encoders', nargs='+', help='registry names (default: every plain name of AUDIO_ENCODERS)')
    p.add_argument('--seconds', type=float, default=10.0); p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=3); p.add_argument('--train-repeats', type=int, default=2)
    p.add_argument('--threads', type=int, default=1); p.add_argument('--blocks', type=int, default=0)
    p.add_argument('--rate', action='append', default=[], metavar='NAME=HZ', help='sample rate of an encoder not in RATES')
    p.add_argument('--json', help='also write the results here'); p.add_argument('--only', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats < 1 or args.train_repeats < 1: p.error('--repeats and --train-repeats must be at least 1')
    if args.only:
        print(json.dumps(measure(args))); return
    from laretrieval.registry import AUDIO_ENCODERS
    names = args.encoders or [n for n in AUDIO_ENCODERS if not n.endswith(':<name>')]
    env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads), 'MKL_NUM_THREADS': str(args.threads),
           'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    results = []
    for name in names:
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], '--only', name], capture_output=True, text=True, env=env)
        if run.returncode:  # one encoder failing (e.g. a missing package) does not stop the others
            error = (run.stderr.strip().splitlines() or ['exit code %d' % run.returncode])[-1]
            results.append(dict(encoder=name, error=error)); print(f"{name}: failed: {error}", file=sys.stderr); continue
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"{name}: done", file=sys.stderr)
    import torch
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, {args.threads} thread(s) per encoder; "
          f"random weights; forward: median of {args.repeats}, train step: median of {args.train_repeats}, each after a warm-up")
    print(markdown(results, args))
    if args.json:
        with open(args.json, 'w') as f: json.dump(dict(args=vars(args), results=results), f, indent=1)


if __name__ == '__main__': main()
