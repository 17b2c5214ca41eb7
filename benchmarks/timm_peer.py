"""timm peer for benchmarks/throughput.py, in its own process.

TensorFlow and PyTorch in one process segfault on this stack (TF 2.21 + torch 2.14 on CPU),
so throughput.py runs each timm measurement here and reads one JSON line back:

    python benchmarks/timm_peer.py TIMM_NAME SIZE BATCH WARMUP ITERS train|infer [--compile]

PyTorch, channels_last, bf16 autocast on CUDA (float32 on CPU), SGD step for training.
"""

import argparse
import json
import time


def measure(timm_name, size, batch, warmup, iters, mode, compiled):
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # CoAtNet's relative-position tables fix its input size at construction.
    extra = {"img_size": size} if timm_name.startswith("coatnet") else {}
    model = timm.create_model(timm_name, pretrained=False, **extra).to(device).to(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "train":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()

        def step():
            with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
                model(x)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"img_per_s": iters * batch / seconds, "peak_mem_gib": peak, "device": f"torch {torch.__version__} {device}",
            "timm": timm.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("timm_name")
    for name in ("size", "batch", "warmup", "iters"):
        parser.add_argument(name, type=int)
    parser.add_argument("mode", choices=["train", "infer"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure(args.timm_name, args.size, args.batch, args.warmup, args.iters, args.mode, args.compile)))


if __name__ == "__main__":
    main()
