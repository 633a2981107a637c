"""One training step of PaSST-S + roberta-large (random weights) in fp32 and in bf16 mixed precision: samples/s.

The issue's setting is a GPU at batch 64 (`python benchmarks/bench_precision.py --device cuda --batch 64`). On a CPU
it runs a smaller smoke version (`--batch 2 --text-layers 2`) to show the code path works; CPU timings say nothing
about a GPU. Random weights: PaSST from hear21passt's `get_model(pretrained=False)`, roberta-large from its config
(24 layers, width 1024, 16 heads) with the offline MiniLM tokenizer standing in for roberta's (no hub access here)."""
import argparse, os, sys, tempfile, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

def roberta_large_folder(folder:str, layers:int)->str:
    "A random-weight roberta-large (or fewer layers) saved with MiniLM's tokenizer, loadable by TextEncoder."
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel
    from laretrieval.encoders import resolve_text_model
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model('minilm'))
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id)
    RobertaModel(config).save_pretrained(folder); tokenizer.save_pretrained(folder)
    return folder

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=None, help='default: 64 on GPU, 2 on CPU')
    parser.add_argument('--text-layers', type=int, default=None, help='roberta layers (default: 24 on GPU, 2 on CPU)')
    parser.add_argument('--steps', type=int, default=None, help='timed steps after 2 warm-up steps (default: 10 on GPU, 2 on CPU)')
    parser.add_argument('--seconds', type=float, default=10.0, help='clip length (one PaSST segment)')
    args = parser.parse_args()
    gpu = args.device.startswith('cuda')
    batch, layers, steps = args.batch or (64 if gpu else 2), args.text_layers or (24 if gpu else 2), args.steps or (10 if gpu else 2)
    from lightning_fabric import Fabric
    from laretrieval.config import ExperimentConfig, seed_everything
    from laretrieval.model import build_model
    from laretrieval.objectives import build_loss
    from laretrieval.train import TrainingStep
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        text_model = roberta_large_folder(folder, layers)
        for precision in ('32-true', 'bf16-mixed'):
            seed_everything(0)
            cfg = ExperimentConfig(audio_encoder='passt', passt_pretrained=False, sample_rate=32000, text_encoder=text_model,
                                   text_pooling='first', text_trainable_layers=-1, embed_dim=1024, batch_size=batch, precision=precision)
            fabric = Fabric(accelerator='cuda' if gpu else 'cpu', devices=1, precision=precision)
            step = TrainingStep(build_model(cfg), build_loss(cfg))
            optimizer = torch.optim.AdamW(step.parameters(), lr=2e-5)
            fabric_step, optimizer = fabric.setup(step, optimizer)
            waves = fabric.to_device(torch.randn(batch, int(args.seconds * 32000)) * 0.1)
            lengths = fabric.to_device(torch.full((batch,), waves.shape[1]))
            captions = [f'a dog barks {i} times while rain falls on a metal roof' for i in range(batch)]
            ids = [str(i) for i in range(batch)]
            def one_step():
                terms = fabric_step(waves, lengths, captions, ids)
                fabric.backward(terms['total']); optimizer.step(); optimizer.zero_grad(set_to_none=True)
                return terms['total'].item()
            for _ in range(2): one_step()
            if gpu: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(steps): loss = one_step()
            if gpu: torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / steps
            memory = torch.cuda.max_memory_allocated() / 2**30 if gpu else float('nan')
            results[precision] = (batch / seconds, seconds, memory, loss)
            peak = f', peak GPU memory {memory:.1f} GiB' if gpu else ''
            print(f'{precision:>10}: {batch / seconds:8.1f} samples/s  ({seconds * 1000:.0f} ms/step{peak}, loss {loss:.3f})')
            del fabric_step, optimizer, step
            if gpu: torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if gpu else f'CPU ({torch.get_num_threads()} threads)'
    print(f'{name}, batch {batch}, {args.seconds:g} s clips, roberta layers {layers}: '
          f'bf16-mixed / fp32 throughput = {results["bf16-mixed"][0] / results["32-true"][0]:.2f}x')

if __name__ == '__main__':
    sys.exit(main())
