"""Size and variants: file sizes, speed and quality of the fp32, int8 and fp16 exports of the same model.

    python bench/variants.py [--models mlp,conv,resnet] [--batches 1,64] [--threads 1]

Speed is `edgevae.sample(n, eps=...)` of every variant, loaded side by side in one process with the
same thread count and the same eps, timed interleaved (each round runs every variant in turn for a
block of calls; medians; see _common.interleaved), so load from other work falls on all alike.
Quality is what export measured against fp32 (PSNR of x_hat on 256 fixed latents; change of the test
negative ELBO through the graphs), read back from each variant's spec.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common as C  # noqa: E402

VARIANTS = ("fp32", "int8", "fp16")


def child(export_dir: str, threads: int, batches: list[int]) -> dict:
    import edgevae

    models = {}
    for variant in VARIANTS:
        try:
            models[variant] = edgevae.load(export_dir, threads=threads, variant=variant)
        except edgevae.EdgeVAEError:
            continue  # not written: outside its gate
    base = models["fp32"]
    times = {}
    for n in batches:
        eps = edgevae.standard_normal(n, (n, *base.latent_shape))
        cases = {v: (lambda m=m, n=n, eps=eps: m.sample(n, eps=eps)) for v, m in models.items()}
        times[n] = C.interleaved(cases, min_rounds=5, min_seconds=3.0, block=max(2, 64 // n))
    out = {}
    for variant, model in models.items():
        files = model.manifest["variants"][variant]
        out[variant] = {"times": {n: times[n][variant] for n in batches},
                        "bytes": sum(model.manifest["files"][files[r]]["bytes"] for r in ("encoder", "decoder")),
                        "quality": model.spec["quality"], "ops": model.spec["ops"]}
    return out


def _elbo_change(q: dict | None) -> str:
    """The variant's -ELBO change against torch, in bits/dim, as its export measured it."""
    change = None if q is None else q.get("neg_elbo_bits_per_dim_change")
    return "-" if change is None else f"{change:.2g} bits/dim"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,conv,resnet", help=f"models, of {', '.join(C.MODELS)} (default all)")
    parser.add_argument("--batches", default="1,64", help="batch sizes (default 1,64)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where models are trained")
    C.add_results_flag(parser)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), batches)))
        return
    rows, notes = [], []
    for name in args.models.split(","):
        _, exp = C.prepare_model(Path(args.workdir), name)
        result = C.run_child(["bench/variants.py", "--batches", args.batches, "--child", str(exp), str(args.threads)])
        base = result["fp32"]
        for variant, r in result.items():
            q = r["quality"]
            speed = [f"{r['times'][str(n)] * 1e3:,.3f}" for n in batches]
            gain = [f"{base['times'][str(n)] / r['times'][str(n)]:.2f}x" for n in batches]
            rows.append([name, variant, f"{r['bytes']:,}", f"{r['bytes'] / base['bytes']:.2f}", *speed, *gain,
                         "-" if q is None else f"{q['psnr_db']:.1f}",
                         _elbo_change(q)])
        for variant in VARIANTS:
            if variant not in result:
                notes.append(f"{name}: {variant} was outside its gate and not written")
        if "int8" in result:
            n = 64 if 64 in batches else max(batches)
            speedup = base["times"][str(n)] / result["int8"]["times"][str(n)]
            how = "static QDQ" if "QuantizeLinear" in result["int8"]["ops"] else "dynamic"
            notes.append(f"{name}: int8 ({how}) throughput at batch {n} is {speedup:.2f}x fp32 (goal >= 1.5x)")
    header = ["model", "variant", "bytes (enc + dec)", "size vs fp32", *(f"batch {n} ms" for n in batches),
              *(f"speed vs fp32, batch {n}" for n in batches), "PSNR dB vs fp32", "-ELBO change"]
    text = (C.table(header, rows) + f"\n\nThreads: {args.threads}; all variants of a model timed side by side in "
            "one process.\n\n" + "\n".join(f"- {n}" for n in notes)
            + "\n\nint8 uses the CPU's integer dot-product instructions where onnxruntime's MLAS has them "
              "(the CPU flags above say which this machine has).")
    print(text)
    C.write_section("variants", "Size and variants: fp32, int8, fp16", text, args.results)


if __name__ == "__main__":
    main()
