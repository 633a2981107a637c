"""Text-Aware Attention Pooling: score a Clotho-evaluation-sized caption x clip matrix.

Shapes: 5225 captions x 1045 clips, T = 99 frames per clip (PaSST's time steps for 10 s), D = 1024, D_p = 2048
(thesis). Compares, each in its own process so peak memory is its own:
  chunked   laretrieval's TextAwareAttentionPooling.score (folded maps, chunks of captions x clips)
  loop      the per-clip loop: for each clip, the formula for all captions (Q, K, V, A, W_o, LN, cosine);
            timed on --loop-clips clips and scaled linearly to all clips (it is linear in the clips)
  matmul    one torch.mm with the same FLOP count as `chunked` (a square product): the machine's ceiling
Peak memory: the process's peak resident set (ru_maxrss) minus its resident set before the computation.
Usage: python benchmarks/bench_tap.py [--captions 5225 --clips 1045 --frames 99 --loop-clips 16]
"""
import argparse, json, math, resource, subprocess, sys, time

import torch
import torch.nn.functional as F


def rss_mb():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def inputs(args):
    from laretrieval.pooling import TextAwareAttentionPooling
    torch.manual_seed(0)
    tap = TextAwareAttentionPooling(args.dim, args.attn_dim).eval()
    text = torch.randn(args.captions, args.dim)
    frames = torch.randn(args.clips, args.frames, args.dim)
    mask = torch.ones(args.clips, args.frames, dtype=torch.bool)
    return tap, text, frames, mask

def chunked_flops(args):
    "Multiply-adds x 2 of the two frame-level products per pair (attention logits and weighted values)."
    return 2 * 2 * args.captions * args.clips * args.frames * args.dim

@torch.no_grad()
def run_chunked(args):
    tap, text, frames, mask = inputs(args)
    before = rss_mb(); start = time.perf_counter()
    scores = tap.score(text, frames, mask)
    return dict(seconds=time.perf_counter() - start, peak_mb=peak_mb() - before, checksum=float(scores[:8, :8].sum()))

@torch.no_grad()
def run_loop(args):
    tap, text, frames, mask = inputs(args)
    before = rss_mb(); start = time.perf_counter()
    t = tap.norm_in(text); q = tap.q(t)
    for j in range(args.loop_clips):
        a = tap.norm_in(frames[j][mask[j]])
        k, v = tap.k(a), tap.v(a)
        attn = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), -1) @ v   # (captions, D_p)
        z = tap.norm_out(tap.out(attn))
        F.cosine_similarity(z, text, dim=-1)
    measured = time.perf_counter() - start
    return dict(seconds=measured * args.clips / args.loop_clips, measured_seconds=measured, peak_mb=peak_mb() - before)

@torch.no_grad()
def run_matmul(args):
    n = round((chunked_flops(args) / 2) ** (1 / 3))
    a, b = torch.randn(n, n), torch.randn(n, n)
    before = rss_mb(); start = time.perf_counter()
    torch.mm(a, b)
    return dict(seconds=time.perf_counter() - start, peak_mb=peak_mb() - before, size=n, flops=2 * n ** 3)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--captions', type=int, default=5225); p.add_argument('--clips', type=int, default=1045)
    p.add_argument('--frames', type=int, default=99); p.add_argument('--dim', type=int, default=1024)
    p.add_argument('--attn-dim', type=int, default=2048); p.add_argument('--loop-clips', type=int, default=16)
    p.add_argument('--only', choices=['chunked', 'loop', 'matmul'])
    args = p.parse_args()
    if args.only:
        print(json.dumps(dict(chunked=run_chunked, loop=run_loop, matmul=run_matmul)[args.only](args))); return
    results = {}
    for name in ('chunked', 'loop', 'matmul'):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], '--only', name], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    gflop = chunked_flops(args) / 1e9
    print(f"TAP scoring of {args.captions} captions x {args.clips} clips, T={args.frames}, D={args.dim}, D_p={args.attn_dim}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'method':<10}{'seconds':>10}{'peak MB':>10}{'GFLOP/s':>10}{'time / chunked':>16}")
    for name, r in results.items():
        flops = r.get('flops', chunked_flops(args))
        note = f"  (timed on {args.loop_clips} clips: {r['measured_seconds']:.1f} s, scaled)" if name == 'loop' else ''
        rate = f"{flops / 1e9 / r['seconds']:>10.1f}" if name != 'loop' else f"{'-':>10}"
        print(f"{name:<10}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}{rate}{r['seconds'] / results['chunked']['seconds']:>16.2f}{note}")
    print(f"chunked does {gflop:.0f} GFLOP of frame-level products; matmul is a {results['matmul']['size']}^2 x {results['matmul']['size']} product of the same count")

if __name__ == '__main__': main()
