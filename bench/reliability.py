"""Reliability figures: bad inputs tried, hostile files fuzzed, faults survived, load held.

    python bench/reliability.py                                  # 50,000 images, 10,000 exports (~15 min)
    python bench/reliability.py --images 2000 --exports 500 --fuzz-scale 1 --no-heavy   # a quick look

Runs, and collects what each prints:
- the bad-input tests (one case each; hostile exports and training data included) in one pytest process;
- tests/test_attacks_cli.py: the attack set through the command line, each case a fresh process;
- the hypothesis properties of tests/test_robustness.py, each --fuzz-scale times its default examples;
- bench/_fuzz.py: --images mutated image files through edgevae.load_images, and --exports mutated exports
  (graph bytes, graph structure, spec, manifest, file kinds) through edgevae.load and a few calls on what
  loads; findings (any exception but EdgeVAEError, a warning, anything printed, a case over 5 s, a crash,
  a hang) are listed below the table;
- the slow tests: SIGKILLs during training, and 8 threads calling the runtime for 60 s.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C  # noqa: E402
import _fuzz  # noqa: E402

BAD_INPUT = "bad or error or refuse or tamper or missing or corrupt or wrong or truncat or unwritable or future " \
            "or outside or cut_off or escape or not_a or mismatch or offline or labels or one_line or hostile " \
            "or bomb or fifo or symlink or huge or malformed or pin or absurd or ctrl_c or literal or only_exactly"
FILES = ["tests/test_robustness.py", "tests/test_faults.py", "tests/test_runtime.py", "tests/test_data.py",
         "tests/test_sources.py", "tests/test_cli.py", "tests/test_train_cli.py", "tests/test_export.py",
         "tests/test_kinds.py", "tests/test_training.py", "tests/test_hostile_exports.py",
         "tests/test_hostile_data.py", "tests/test_images.py"]


def pytest(*args: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=C.ROOT,
                            capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"pytest failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _fuzz_row(what: str, result: dict, held: str) -> list:
    o = result["outcomes"]
    return [what, f"{result['cases']:,} cases: {o.get('accepted', 0):,} accepted, {o.get('refused', 0):,} refused, "
                  f"**{o.get('finding', 0):,} findings**", f"{held}; slowest case {result['max_seconds']:.2f} s, "
                                                               f"peak RSS {result['peak_rss_mib']:.0f} MiB"]


def _findings(result: dict) -> list[str]:
    """Distinct findings (error type and message, numbers masked), most frequent first, with one case to replay."""
    return [f"- {result['kind']}, {g['count']:,}x (e.g. case {g['index']}, {g.get('kind')}): "
            f"`{(g.get('error') or '').strip()[:160]}`" + (f" in {g['where']}" if g.get("where") else "")
            for g in result["finding_groups"]]


def _imported_export(work: Path) -> list[Path]:
    """A small diffusers AutoencoderKL (attention, GroupNorm, upsampling; tileable), exported, if diffusers is
    installed: the imported models' ops under the fuzzer too."""
    try:
        import diffusers
        import torch
    except ModuleNotFoundError:
        return []
    folder, export = work / "kl", work / "export-kl"
    if not (export / "manifest.json").exists():
        torch.manual_seed(0)
        diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
                                layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=32,
                                mid_block_add_attention=True).save_pretrained(folder)
        subprocess.run([sys.executable, "-m", "edgevae", "export", "--diffusers", str(folder), "--out", str(export),
                        "--force"], cwd=C.ROOT, check=True, capture_output=True)
    return [export]


def big_export(base: Path, out: Path, weight_bytes: int) -> Path:
    """A copy of the export `base` whose fp32 decoder holds `weight_bytes` of (random) weights: the largest
    graph a load may have to take, to measure what loading it costs."""
    import hashlib
    import json
    import shutil

    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = json.loads((base / "manifest.json").read_text())
    names = manifest["variants"]["fp32"]
    decoder = onnx.load(base / names["decoder"])
    spec = next(p.value for p in decoder.metadata_props if p.key == "edgevae.spec")
    d = json.loads(spec)["latent_dim"]
    c, h, w = json.loads(spec)["image_shape"]
    hidden = weight_bytes // 4 // (d + c * h * w)
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((d, hidden)) * 0.1).astype(np.float32), "w1"),
               numpy_helper.from_array((rng.standard_normal((hidden, c * h * w)) * 0.01).astype(np.float32), "w2"),
               numpy_helper.from_array(np.array([-1, c, h, w], np.int64), "shape"),
               numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(1), "hi")]
    nodes = [helper.make_node("Gemm", ["z", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["o"]), helper.make_node("Sigmoid", ["o"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["image"]), helper.make_node("Clip", ["image", "lo", "hi"],
                                                                                      ["x_hat"])]
    graph = helper.make_graph(nodes, "decoder", list(decoder.graph.input), list(decoder.graph.output), weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"edgevae.spec": spec})
    onnx.save(model, out / names["decoder"])
    shutil.copy(base / names["encoder"], out / names["encoder"])
    files = {}
    for name in (names["encoder"], names["decoder"]):
        data = (out / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest.update(files=files, variants={"fp32": names})
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def load_cost(export: Path) -> tuple[float, float, int]:
    """(seconds to load, peak RSS MiB, graph bytes) of edgevae.load(export) in a fresh process."""
    code = ("import re, sys, time, edgevae; t = time.perf_counter(); m = edgevae.load(sys.argv[1]); "
            "s = time.perf_counter() - t; m.sample(8, seed=0); "
            "print(s, int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(export)], capture_output=True, text=True, check=True)
    seconds, rss = map(float, out.stdout.split())
    return seconds, rss, max(p.stat().st_size for p in export.glob("*.onnx"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="mutated image files (default 50,000)")
    parser.add_argument("--exports", type=int, default=10_000, help="mutated exports (default 10,000)")
    parser.add_argument("--fuzz-scale", type=int, default=10, help="hypothesis examples x this (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-heavy", action="store_true", help="skip the SIGKILL and 60 s load tests")
    C.add_results_flag(parser)
    args = parser.parse_args()

    bad = pytest("-q", "-m", "slow or not slow", "-k", BAD_INPUT, *FILES)
    bad_cases = int(re.search(r"(\d+) passed", bad)[1])
    fuzz = pytest("-q", "-s", "--hypothesis-show-statistics", "-k", "fuzz", "tests/test_robustness.py",
                  env={"EDGEVAE_FUZZ_SCALE": str(args.fuzz_scale)})
    examples = sum(int(n) for n in re.findall(r"(\d+) passing(?: examples)?,", fuzz))  # hypothesis's statistics
    if examples == 0:
        raise SystemExit(f"no hypothesis statistics found in:\n{fuzz[-2000:]}")
    fuzz_tests = int(re.search(r"(\d+) passed", fuzz)[1])
    attacks = pytest("-q", "-s", "-m", "slow", "tests/test_attacks_cli.py")
    attack = re.search(r"attacks: (\d+) cases through the CLI, all one line; slowest ([\d.]+) s .*?, "
                       r"peak RSS (\d+) MiB", attacks)
    work = C.ROOT / "bench" / ".work" / "reliability"  # its own models: a conditional continuous-Bernoulli MLP
    exports = [C.prepare_export(work, "mlp", extra=("--conditional", "--likelihood", "continuous-bernoulli"))[1],
               C.prepare_export(work, "conv")[1]] + _imported_export(work)
    with tempfile.TemporaryDirectory() as tmp:
        images = _fuzz.run("images", args.images, args.seed, Path(tmp) / "images")
        graphs = _fuzz.run("exports", args.exports, args.seed, Path(tmp) / "exports", tuple(exports))
        from edgevae import spec as S

        big = big_export(exports[1], Path(tmp) / "big", S.MAX_GRAPH_BYTES - (1 << 20))
        load_seconds, load_rss, graph_bytes = load_cost(big)
    rows = [
        ["bad inputs (files, arrays, arguments, flags, hostile exports and data), one test case each",
         f"{bad_cases} cases passed", "each gets the documented error type or a one-line CLI error"],
        ["the attack set through the CLI (hostile exports, training data, run directories, arguments)",
         f"{attack[1]} cases, each one line and exit 1 or 2", f"slowest {attack[2]} s with process start, peak RSS "
                                                               f"{attack[3]} MiB, nothing outside the outputs changed"],
        ["hypothesis fuzzing of the runtime API (load, sample, encode, decode, paths, noise, grids)",
         f"{examples:,} examples in {fuzz_tests} properties", "only EdgeVAEError raised; shapes, range and "
                                                               "determinism hold"],
        _fuzz_row(f"mutated image files through load_images ({len(_fuzz.image_seeds())} seed files: PNG, JPEG, "
                  f"GIF, BMP, TIFF, WebP, ICO, PPM; flips, cuts, splices, large ints, fixed PNG CRCs)", images,
                  "accepted: float32 (1, C, H, W) in [0, 1]"),
        _fuzz_row(f"mutated exports ({len(exports)} seeds: MLP conditional continuous-Bernoulli, conv"
                  f"{', a diffusers AutoencoderKL' if len(exports) > 2 else ''}; int8/fp16 variants) through load, "
                  f"then decode and encode (graph bytes and structure, spec, manifest, FIFOs and links; manifest "
                  f"re-hashed)", graphs, "accepted: outputs keep the contract"),
        [f"loading the largest graph the caps allow ({graph_bytes / 2**20:.0f} MiB decoder)",
         f"{load_seconds:.1f} s, peak RSS {load_rss:.0f} MiB", "every check included; a load stays under 1 GiB"],
    ]
    if not args.no_heavy:
        heavy = pytest("-q", "-s", "-m", "slow or not slow", "-k", "sigkill or load_many", "tests/test_faults.py",
                       "tests/test_robustness.py")
        faults = re.search(r"faults: (\d+) SIGKILLs injected \((\d+) after the first checkpoint\)", heavy)
        load = re.search(r"load: (\d+) calls from (\d+) threads in (\d+) s, .*?(\d+) seen; "
                         r"RSS change ([+-][\d.]+) MiB", heavy)
        rows += [["SIGKILL during training, then --resume", f"{faults[1]} kills ({faults[2]} after a checkpoint)",
                  "final metrics and weights identical to an uninterrupted run"],
                 [f"load: {load[2]} threads calling the runtime for {load[3]} s",
                  f"{int(load[1]):,} calls, {load[4]} errors", f"outputs equal serial calls; RSS change {load[5]} MiB"]]
    found = _findings(images) + _findings(graphs)
    text = C.table(["what", "measured", "held"], rows) + "\n\nFindings (distinct messages; replay one with " \
        "`python bench/_fuzz.py KIND --seed S --start I --count 1 --workdir DIR`):\n\n" + \
        ("\n".join(found) if found else "none") + "\n"
    print(text)
    C.write_section("reliability", "Reliability: bad input, fuzzing, faults, load", text, args.results)


if __name__ == "__main__":
    main()
