"""Size and variants: file sizes, speed and quality of fp32, int8 and fp16 exports of the same model.

    python bench/variants.py [--archs mlp,conv] [--threads 1]

Speed is edgevae.sample(n, eps=...) at batch 1 and 1024, medians, all variants in one process with
the same thread count. Quality is what export measured against fp32 (PSNR of x_hat on 256 fixed
latents; change of the test negative ELBO through the graphs), read back from each variant's spec.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common as C  # noqa: E402


def child(export_dir: str, threads: int) -> dict:
    import edgevae

    out = {}
    for variant in ("fp32", "int8", "fp16"):
        try:
            model = edgevae.load(export_dir, threads=threads, variant=variant)
        except edgevae.EdgeVAEError:
            continue  # not written: outside its gate
        times = {}
        for n in (1, 1024):
            eps = edgevae.standard_normal(n, (n, model.latent_dim))
            times[n] = C.median_time(lambda: model.sample(n, eps=eps))
        files = model.manifest["variants"][variant]
        size = sum(model.manifest["files"][files[r]]["bytes"] for r in ("encoder", "decoder"))
        out[variant] = {"times": times, "bytes": size,
                        "decoder_bytes": model.manifest["files"][files["decoder"]]["bytes"],
                        "quality": model.spec["quality"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mlp,conv", help="models (default mlp,conv)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where models are trained")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    rows, notes = [], []
    for arch in args.archs.split(","):
        _, exp = C.prepare_export(Path(args.workdir), arch)
        result = C.run_child(["bench/variants.py", "--child", str(exp), str(args.threads)])
        base = result["fp32"]
        for variant, r in result.items():
            q = r["quality"]
            rows.append([arch, variant, f"{r['bytes']:,}", f"{r['bytes'] / base['bytes']:.2f}",
                         f"{r['times']['1'] * 1e6:,.0f}", f"{r['times']['1024'] * 1e3:,.2f}",
                         f"{base['times']['1024'] / r['times']['1024']:.2f}x",
                         "-" if q is None else f"{q['psnr_db']:.1f}",
                         "-" if q is None or q["neg_elbo_change"] is None else f"{q['neg_elbo_change']:.3%}"])
        for variant in ("int8", "fp16"):
            if variant not in result:
                notes.append(f"{arch}: {variant} was outside its gate and not written")
        if "int8" in result:
            speedup = base["times"]["1024"] / result["int8"]["times"]["1024"]
            notes.append(f"{arch}: int8 throughput at batch 1024 is {speedup:.2f}x "
                         f"fp32 (goal >= 1.5x)")
    header = ["model", "variant", "bytes (enc + dec)", "size vs fp32", "batch 1 µs", "batch 1024 ms",
              "throughput vs fp32", "PSNR dB vs fp32", "-ELBO change"]
    text = C.table(header, rows) + f"\n\nThreads: {args.threads}. " + " ".join(f"{n}." for n in notes) + \
        "\n\nint8 uses the CPU's integer dot-product instructions where onnxruntime's MLAS has them " \
        "(the CPU flags above say which this machine has)."
    print(text)
    C.write_section("variants", "Size and variants: fp32, int8, fp16", text)


if __name__ == "__main__":
    main()
