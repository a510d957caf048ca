"""Generation speed side by side: edgevae's sample() against raw onnxruntime and PyTorch eager, and the noise.

    python bench/generate.py                      # the demo MLP and the conv model, batch 1/64/1024, 1 thread
    python bench/generate.py --threads 1,2 --models mlp

For each model and thread count one fresh process holds all three sides: the export loaded with
`edgevae.load(threads=T)`, the same decoder.onnx as a plain `onnxruntime.InferenceSession` (T intra-op
threads, no spinning, as the runtime) called as `session.run(None, {"z": eps})`, and the checkpoint in
PyTorch (`torch.set_num_threads(T)`, `vae.decode` under inference_mode). They are timed interleaved:
each round runs every case in turn for a block of consecutive calls (the first call of a block, which
finds the caches holding another side's weights, is not counted), so load from other work on the
machine falls on all of them alike and each is timed as a loop calling it sees it; figures are medians
over all counted calls, ratios are ratios of those medians, and all sides decode the same eps.
`sample(seed)` also draws eps with the portable generator; `sample(eps)` decodes a given one; "noise + raw
run" is what a caller of raw onnxruntime writes for the same seed: `edgevae.standard_normal` then `session.run`.

The noise rows time `edgevae.standard_normal` against numpy's `default_rng().standard_normal` (float64,
its default) for the same count, interleaved the same way. FLOPs per image count the decoder's
Linear/Conv multiply-adds (x2); the ceiling is the best float32 square GEMM on the same threads
(onnxruntime's MatMul or numpy's BLAS, 1024^3 and 2048^3), measured in its own process in this run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common as C  # noqa: E402

NOISE_COUNTS = (8, 1024 * 512)  # batch 1 of the demo model's 8-d latent; a large bulk draw


def child_sides(run_dir: str, export_dir: str, batches: list[int], threads: int) -> dict:
    """Runtime, raw onnxruntime and torch eager in this one process, timed interleaved per batch size."""
    import numpy as np
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    import edgevae
    from edgevae.export.build import load_run

    model = edgevae.load(export_dir, threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runtime does
    raw = ort.InferenceSession(str(Path(export_dir) / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    vae, _ = load_run(Path(run_dir))
    vae.eval()
    out = {"flops": _decoder_flops(vae), "weight_bytes": 4 * sum(p.numel() for p in vae.decoder.parameters())}
    for n in batches:
        eps = edgevae.standard_normal(0, (n, model.latent_dim))
        z = torch.from_numpy(eps)
        assert np.array_equal(model.sample(n, seed=0), raw.run(None, {"z": eps})[0])  # same work on each side

        def eager(z=z):
            with torch.inference_mode():
                return vae.decode(z)

        cases = {"sample_seed": lambda n=n: model.sample(n, seed=0),
                 "sample_eps": lambda n=n, eps=eps: model.sample(n, eps=eps),
                 "raw": lambda eps=eps: raw.run(None, {"z": eps}),
                 # what a caller of raw onnxruntime does to generate from a seed: draw the noise, then run
                 "raw_noise": lambda n=n: raw.run(None, {"z": edgevae.standard_normal(0, (n, *model.latent_shape))}),
                 "eager": eager}
        if n == 1:  # the noise of one image on its own, in a loop of its own (warm caches)
            cases["noise"] = lambda: edgevae.standard_normal(0, (1, *model.latent_shape))
        out[n] = C.interleaved(cases, min_rounds=10, min_seconds=4.0, block=max(2, 100 // n))
    return out


def child_noise() -> dict:
    """edgevae.standard_normal against numpy's generator for the same counts, interleaved."""
    import numpy as np

    import edgevae

    rng = np.random.default_rng(0)
    out = {}
    for count in NOISE_COUNTS:
        out[count] = C.interleaved({"edgevae": lambda count=count: edgevae.standard_normal(0, (count,)),
                                    "numpy": lambda count=count: rng.standard_normal(count)},
                                   min_rounds=10, min_seconds=2.0, block=max(2, 20_000 // count))
    return out


def _decoder_flops(vae) -> int:
    """2 x multiply-adds per image of the decoder's Linear, Conv2d and ConvTranspose2d layers."""
    import torch
    from torch import nn

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            taps = module.in_channels // module.groups * k
            total += 2 * module.out_channels * taps * output.shape[-2] * output.shape[-1]
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            taps = module.out_channels // module.groups * k
            total += 2 * module.in_channels * taps * inputs[0].shape[-2] * inputs[0].shape[-1]

    handles = [m.register_forward_hook(hook) for m in vae.decoder.modules()]
    with torch.no_grad():
        vae.decode(torch.zeros(1, vae.latent_dim))
    for h in handles:
        h.remove()
    return total


def child_ceiling(threads: int) -> dict:
    """The best float32 GEMM rate of this machine on `threads`: onnxruntime's MatMul and numpy's BLAS.

    numpy's BLAS reads its thread count from the environment when it loads: main() sets it for this child.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    best = {}
    for size in (1024, 2048):
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
                                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        for name, fn in (("onnxruntime", lambda: session.run(None, {"a": a, "b": a})), ("numpy", lambda: a @ a)):
            gflops = 2 * size**3 / C.median_time(fn, min_repeats=5) / 1e9
            if gflops > best.get("gflops", 0):
                best = {"gflops": gflops, "by": f"{name} {size}^3"}
    return best


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}" if seconds < 1e-3 else f"{seconds * 1e6:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,conv", help=f"models to time, of {', '.join(C.MODELS)} "
                        "(default mlp,conv)")
    parser.add_argument("--threads", default="1", help="thread counts, the same for every side (default 1)")
    parser.add_argument("--batches", default="1,64,1024", help="batch sizes (default 1,64,1024)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where models are trained")
    C.add_results_flag(parser)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        kind, run, exp, threads = args.child
        result = {"sides": lambda: child_sides(run, exp, batches, int(threads)),
                  "noise": child_noise,
                  "ceiling": lambda: child_ceiling(int(threads))}[kind]()
        print(json.dumps(result))
        return

    rows, goals, ceilings = [], [], {}
    child = ["bench/generate.py", "--batches", args.batches, "--child"]
    for name in args.models.split(","):
        run, exp = C.prepare_model(Path(args.workdir), name)
        for threads in (int(t) for t in args.threads.split(",")):
            sides = C.run_child(child + ["sides", str(run), str(exp), str(threads)])
            if threads not in ceilings:
                blas = {var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
                ceilings[threads] = C.run_child(child + ["ceiling", "-", "-", str(threads)], env=blas)
            ceiling = ceilings[threads]["gflops"]
            flops = sides["flops"]
            for n in batches:
                t = sides[str(n)]
                seed, eps, raw, eager, by_hand = t["sample_seed"], t["sample_eps"], t["raw"], t["eager"], t["raw_noise"]
                gflops = flops * n / eps / 1e9
                rows.append([name, threads, n, _us(seed), _us(eps), _us(raw), _us(by_hand), _us(eager),
                             f"{seed / raw:.2f}", f"{eps / raw:.2f}", f"{seed / by_hand:.2f}", f"{eager / seed:.2f}x",
                             f"{eager / raw:.2f}x", f"{gflops:.1f}", f"{gflops / ceiling:.0%}"])
                if n == 1:
                    goals.append(f"{name}, {threads} thread(s), batch 1: sample(seed) costs {seed / raw:.2f}x the raw "
                                 f"session.run (goal <= 1.2x) and is {eager / seed:.2f}x faster than PyTorch eager "
                                 f"(goal >= 2x; raw onnxruntime alone: {eager / raw:.2f}x). Drawing the noise costs "
                                 f"{(seed - eps) * 1e6:.1f} µs inside sample (sample(seed) - sample(eps)) and "
                                 f"{t['noise'] * 1e6:.1f} µs in a loop of its own. Drawing the same noise by hand "
                                 f"before a raw session.run costs {by_hand / raw:.2f}x the raw run alone, more than "
                                 f"the noise's own time (a loop of bare runs is their hot-cache best case; any code "
                                 f"between two runs slows the next): that is the floor for any code that draws this "
                                 f"noise, and sample(seed) costs {seed / by_hand:.2f}x it")
                if n == max(batches):
                    goals.append(f"{name}, {threads} thread(s), batch {n}: {gflops:.1f} GFLOP/s = "
                                 f"{gflops / ceiling:.0%} of the {ceiling:.1f} GFLOP/s float32 GEMM ceiling")
    noise = C.run_child(child + ["noise", "-", "-", "1"])
    noise_rows = []
    for count in NOISE_COUNTS:
        t = noise[str(count)]
        noise_rows.append([f"{count:,}", _us(t["edgevae"]), _us(t["numpy"]), f"{t['edgevae'] / t['numpy']:.2f}x"])
    bulk = noise[str(NOISE_COUNTS[-1])]
    goals.append(f"noise, {NOISE_COUNTS[-1]:,} values: standard_normal takes {bulk['edgevae'] / bulk['numpy']:.2f}x "
                 f"the time of numpy's default_rng().standard_normal (goal <= 3x)")
    header = ["model", "threads", "batch", "sample(seed) µs", "sample(eps) µs", "raw run µs", "noise + raw run µs",
              "torch eager µs", "seed / raw", "eps / raw", "seed / (noise + raw)", "torch / sample(seed)",
              "torch / raw", "GFLOP/s", "of GEMM ceiling"]
    text = (C.table(header, rows)
            + "\n\n" + C.table(["noise values", "standard_normal µs", "numpy default_rng µs", "ratio"], noise_rows)
            + "\n\nfloat32 GEMM ceiling measured in this run: "
            + "; ".join(f"{t} thread(s) {c['gflops']:.1f} GFLOP/s ({c['by']})" for t, c in ceilings.items())
            + "\n\n" + "\n".join(f"- {g}" for g in goals))
    print(text)
    C.write_section("generate", "Generation: runtime vs raw onnxruntime vs PyTorch eager, side by side", text + "\n\n"
                    "All sides of a row ran in one process with the same thread count and eps, interleaved call by "
                    "call; times are medians over the rounds (see the script's docstring).", args.results)


if __name__ == "__main__":
    main()
