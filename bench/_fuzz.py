"""Fuzzers for bench/reliability.py (and, at small counts, tests/test_fuzz.py): mutated image files through
edgevae.load_images, mutated exports (graph bytes, graph structure, spec, manifest, file kinds) through
edgevae.load and a few calls on what loads.

    python bench/_fuzz.py images --count 2000 --seed 0 --workdir /tmp/fuzz
    python bench/_fuzz.py exports --count 500 --seed 0 --workdir /tmp/fuzz --export DIR [--export DIR2]

Every case is a pure function of (kind, seed, index), so a finding can be replayed alone (`--start I
--count 1`). An outcome is "accepted" (the output is checked: shape, finite, in [0, 1]), "refused"
(EdgeVAEError), or a finding: any other exception, a warning, a case slower than SLOW seconds. The
cases run in child processes of `--batch` cases each; a child that crashes or stops making progress for
HANG seconds is killed, its case recorded as a finding, and the run goes on after it. One JSON line of
totals is printed last.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

SLOW, HANG = 5.0, 20.0  # seconds: a case slower than SLOW is a finding; one silent for HANG is killed
IMAGE_SHAPES = ((1, 28, 28), (3, 32, 32))
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 65500, 1 << 24)


# -- byte mutations --------------------------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three of: bit flips, random bytes, a cut, an insertion, a duplicated slice, an interesting int."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(b)
        how = int(rng.integers(0, 6)) if n else 3
        if how == 0:
            for pos in rng.integers(0, n, int(rng.integers(1, 17))):
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif how == 1:
            pos, size = int(rng.integers(0, n)), int(rng.integers(1, 33))
            b[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        elif how == 2:
            del b[int(rng.integers(0, n + 1)):]
        elif how == 3:
            pos = int(rng.integers(0, n + 1))
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        elif how == 4:
            start = int(rng.integers(0, n))
            piece = b[start:start + int(rng.integers(1, 257))]
            pos = int(rng.integers(0, n + 1))
            b[pos:pos] = piece
        else:
            width = int(rng.choice([1, 2, 4]))
            value = int(rng.choice(INTERESTING)) & ((1 << 8 * width) - 1)
            pos = int(rng.integers(0, max(n - width, 0) + 1))
            b[pos:pos + width] = value.to_bytes(width, str(rng.choice(["big", "little"])))
    return bytes(b)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every PNG chunk, so a decoder reads the mutated fields instead of stopping at a CRC."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            break
        out += data[pos:end] + zlib.crc32(data[pos + 4:end]).to_bytes(4, "big")
        pos = end + 4
    return bytes(out + data[pos:])


# -- images ----------------------------------------------------------------------------------------------
def image_seeds() -> list[tuple[str, bytes]]:
    """Small valid files in the formats and modes Pillow reads: (suffix, bytes)."""
    from PIL import Image

    rng = np.random.default_rng(12345)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
    wide = Image.fromarray((rng.integers(0, 65536, (16, 16))).astype(np.uint16))
    cases = [(rgb, "PNG", {}), (grey, "PNG", {}), (rgba, "PNG", {}), (wide, "PNG", {}), (grey.convert("1"), "PNG", {}),
             (rgb.convert("P"), "PNG", {"transparency": 0}), (rgb, "JPEG", {"quality": 80}), (grey, "JPEG", {}),
             (rgb.convert("P"), "GIF", {}), (rgb, "BMP", {}), (rgba, "TIFF", {}), (wide, "TIFF", {}),
             (rgb, "PPM", {}), (rgba, "WEBP", {}), (rgb, "ICO", {})]
    seeds = []
    for image, fmt, options in cases:
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, **options)
        except (OSError, KeyError, ValueError):  # a format this Pillow build cannot write
            continue
        seeds.append(("." + fmt.lower(), buffer.getvalue()))
    return seeds


class ImageCases:
    def __init__(self, seed: int, workdir: Path, **_):
        self.seed, self.workdir, self.seeds = seed, workdir, image_seeds()

    def run(self, index: int) -> tuple[str, str]:
        """(mutation kind, outcome) of case `index`; raises for a finding."""
        import edgevae

        rng = np.random.default_rng([self.seed, index])
        suffix, data = self.seeds[int(rng.integers(0, len(self.seeds)))]
        self.kind = suffix
        if rng.random() < 0.1:  # splice the head of one file onto the tail of another
            other = self.seeds[int(rng.integers(0, len(self.seeds)))][1]
            data = data[:int(rng.integers(0, len(data) + 1))] + other[int(rng.integers(0, len(other) + 1)):]
        data = mutate_bytes(data, rng)
        if rng.random() < 0.5:
            data = fix_png_crcs(data)
        path = self.workdir / f"case{suffix if rng.random() < 0.9 else '.png'}"
        path.write_bytes(data)
        shape = IMAGE_SHAPES[int(rng.integers(0, len(IMAGE_SHAPES)))]
        try:
            x = edgevae.load_images([path], shape)
        except edgevae.EdgeVAEError:
            return suffix, "refused"
        if x.shape != (1, *shape) or x.dtype != np.float32 or not (x.min() >= 0 and x.max() <= 1):
            raise AssertionError(f"accepted but returned {x.dtype} {x.shape} in [{x.min()}, {x.max()}]")
        return suffix, "accepted"


# -- exports ---------------------------------------------------------------------------------------------
def rehash(d: Path) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    for name in manifest["files"]:
        p = d / name
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (d / "manifest.json").write_text(json.dumps(manifest))


def random_json(rng: np.random.Generator, depth: int = 0):
    """A JSON value of a random kind: extreme numbers, odd strings, lists, objects (nested at most 3 deep)."""
    kind = int(rng.integers(0, 11 if depth < 3 else 7))
    if kind == 7:
        return [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if kind == 8:
        return {str(k): random_json(rng, depth + 1) for k in range(int(rng.integers(0, 3)))}
    if kind == 9:
        return [int(rng.integers(-2, 10**6)) for _ in range(int(rng.integers(0, 5)))]
    if kind == 10:
        return "[" * 40
    return [None, True, int(rng.choice([0, -1, 1, 3, 2**31, -(2**63), 10**9])), float(rng.normal() * 1e6),
            "", "x" * int(rng.integers(1, 300)), str(rng.choice(["fp32", "vae", "L", "\x00", "\u202e", "../x"]))][kind]


def mutate_json(value: dict, rng: np.random.Generator) -> dict:
    """Delete, replace or nest one field of a JSON object (recursing into a nested object now and then)."""
    value = json.loads(json.dumps(value))
    target = value
    while isinstance(target, dict) and target and rng.random() < 0.4:
        key = str(rng.choice(sorted(target)))
        if not isinstance(target[key], dict) or not target[key]:
            break
        target = target[key]
    keys = sorted(target) if isinstance(target, dict) else []
    how = int(rng.integers(0, 4))
    if keys and how == 0:
        del target[str(rng.choice(keys))]
    elif keys and how in (1, 2):
        target[str(rng.choice(keys))] = random_json(rng)
    else:
        target[str(rng.choice(["extra", "latent_dim", "classes", "pair_id", "bytes", "\ud7ff"]))] = random_json(rng)
    return value


EXTRA_OPS = ("Sin", "If", "RandomNormal", "RandomNormalLike", "Loop", "MatMul", "Softmax", "Identity", "Gelu",
             "ConstantOfShape", "Resize", "Tile", "Pad")


def mutate_graph(model, rng: np.random.Generator) -> str:
    """One structural edit of an onnx ModelProto; returns its name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgevae import spec as S

    g = model.graph
    nodes, inits = list(g.node), list(g.initializer)
    how = int(rng.integers(0, 14))
    if how == 0 and nodes:
        node = nodes[int(rng.integers(0, len(nodes)))]
        node.op_type = str(rng.choice(sorted(S.ALLOWED_OPS) + list(EXTRA_OPS)))
        if rng.random() < 0.2:
            node.domain = str(rng.choice(["com.microsoft", "ai.onnx", "custom"]))
        return "op"
    if how == 1 and nodes:
        g.node.remove(nodes[int(rng.integers(0, len(nodes)))])
        return "delete-node"
    if how == 2 and nodes:
        node = nodes[int(rng.integers(0, len(nodes)))]
        names = [n for m in nodes for n in m.output] + [i.name for i in inits] + ["nowhere"]
        if node.input:
            node.input[int(rng.integers(0, len(node.input)))] = str(rng.choice(names))
        return "rewire"
    if how == 3 and inits:
        t = inits[int(rng.integers(0, len(inits)))]
        if t.dims:
            t.dims[int(rng.integers(0, len(t.dims)))] = int(rng.choice([0, 1, 2, 10**6, 2**40]))
        return "initializer-dims"
    if how == 4 and inits:
        inits[int(rng.integers(0, len(inits)))].data_type = int(rng.choice([0, 2, 7, 8, 11, 16, 99]))
        return "initializer-type"
    if how == 5 and inits:
        t = inits[int(rng.integers(0, len(inits)))]
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", str(rng.choice(["w.bin", "../w.bin", "/dev/zero", "manifest.json"]))),
                           ("offset", str(rng.choice(["0", "-1", "99999999999"]))), ("length", "16")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        if rng.random() < 0.5:
            t.ClearField("raw_data")
        return "external-data"
    if how == 6 and nodes:
        node = nodes[int(rng.integers(0, len(nodes)))]
        value = int(rng.choice([0, -1, 2**31, 10**6, 65536]))
        if node.attribute and rng.random() < 0.6:
            a = node.attribute[int(rng.integers(0, len(node.attribute)))]
            if a.ints:
                a.ints[int(rng.integers(0, len(a.ints)))] = value
            else:
                a.i = value
        else:
            sub = helper.make_graph([], "sub", [], [])
            node.attribute.append(helper.make_attribute(str(rng.choice(["strides", "pads", "axis", "body"])),
                                                        sub if rng.random() < 0.3 else [value, value]))
        return "attribute"
    if how == 7:
        v = list(g.input) + list(g.output)
        v = v[int(rng.integers(0, len(v)))]
        dims = v.type.tensor_type.shape.dim
        choice = int(rng.integers(0, 3))
        if choice == 0 and dims:
            d = dims[int(rng.integers(0, len(dims)))]
            if rng.random() < 0.5:
                d.dim_value = int(rng.choice([0, 1, 3, 10**6]))
            else:
                d.dim_param = str(rng.choice(["batch", "h", ""]))
        elif choice == 1:
            v.type.tensor_type.elem_type = int(rng.choice([0, 2, 7, 10, 11]))
        else:
            v.name = str(rng.choice(["x", "z", "eps", "y", "x_hat", "other"]))
        return "io"
    if how == 8:
        opset = model.opset_import[0]
        opset.version = int(rng.choice([1, 7, 12, 13, 21, 24, 99]))
        if rng.random() < 0.3:
            model.ir_version = int(rng.choice([0, 3, 11, 13, 99]))
        return "versions"
    if how == 9:
        target = str(rng.choice([i.name for i in g.input] + [n.output[0] for n in nodes[:3]]))
        shapes = ([1, 4, 10**7], [10**5, 10**5], [-1, 7], [0], [1, 1, 1, 1])
        shape = numpy_helper.from_array(np.array(shapes[int(rng.integers(0, len(shapes)))], np.int64),
                                        f"fuzz_shape{len(inits)}")
        g.initializer.append(shape)
        g.node.insert(int(rng.integers(0, len(nodes) + 1)),
                      helper.make_node(str(rng.choice(["Expand", "Reshape"])), [target, shape.name], ["fuzz_out"]))
        return "shape-bomb"
    if how == 10 and nodes:
        nodes[int(rng.integers(0, len(nodes)))].output.append(str(rng.choice([i.name for i in g.input] + ["z"])))
        return "duplicate-output"
    if how in (11, 12) and nodes:  # a new allowed node between existing tensors, read by a later node
        at = int(rng.integers(0, len(nodes)))
        names = [i.name for i in g.input] + [i.name for i in inits] + [o for n in nodes[:at] for o in n.output]
        op = str(rng.choice(sorted(S.ALLOWED_OPS)))
        args = [str(rng.choice(names)) for _ in range(int(rng.integers(1, 4)))]
        g.node.insert(at, helper.make_node(op, args, ["fuzz_new"]))
        later = nodes[int(rng.integers(at, len(nodes)))]
        if later.input:
            later.input[int(rng.integers(0, len(later.input)))] = "fuzz_new"
        return "insert-node"
    model.functions.append(onnx.FunctionProto(name="f", domain="local"))
    return "function"


def _set_spec(model, spec_text: str) -> None:
    from onnx import helper

    from edgevae import spec as S

    helper.set_model_props(model, {S.METADATA_KEY: spec_text})


class ExportCases:
    def __init__(self, seed: int, workdir: Path, exports: list[Path], **_):
        self.seed, self.workdir, self.exports = seed, workdir, exports

    def run(self, index: int) -> tuple[str, str]:
        import onnx

        import edgevae
        from edgevae import spec as S

        rng = np.random.default_rng([self.seed, index])
        base = self.exports[int(rng.integers(0, len(self.exports)))]
        d = self.workdir / "export"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        manifest = json.loads((d / S.MANIFEST).read_text())
        variant = str(rng.choice(sorted(manifest["variants"])))
        role = str(rng.choice(["encoder", "decoder"]))
        graph = d / manifest["variants"][variant][role]
        kinds = ["graph-bytes", "graph", "graph", "spec", "manifest", "manifest-bytes", "file"]
        kind = self.kind = str(rng.choice(kinds))
        if kind == "graph-bytes":
            graph.write_bytes(mutate_bytes(graph.read_bytes(), rng))
        elif kind == "graph":
            model = onnx.load_from_string(graph.read_bytes())
            kind = self.kind = "graph-" + mutate_graph(model, rng)
            graph.write_bytes(model.SerializeToString())
        elif kind == "spec":
            model = onnx.load_from_string(graph.read_bytes())
            text = next(p.value for p in model.metadata_props if p.key == S.METADATA_KEY)
            _set_spec(model, json.dumps(mutate_json(json.loads(text), rng)) if rng.random() < 0.8
                      else mutate_bytes(text.encode(), rng).decode("utf-8", "replace"))
            graph.write_bytes(model.SerializeToString())
        elif kind == "manifest":
            (d / S.MANIFEST).write_text(json.dumps(mutate_json(manifest, rng)))
        elif kind == "manifest-bytes":
            (d / S.MANIFEST).write_bytes(mutate_bytes((d / S.MANIFEST).read_bytes(), rng))
        else:
            target = graph if rng.random() < 0.7 else d / S.MANIFEST
            target.unlink()
            how = int(rng.integers(0, 5))
            kind = self.kind = f"file-{['fifo', 'link-dev', 'link-out', 'dir', 'empty'][how]}"
            if how == 0 and hasattr(os, "mkfifo"):
                os.mkfifo(target)
            elif how == 1:
                target.symlink_to("/dev/zero")
            elif how == 2:
                target.symlink_to(base / target.name)
            elif how == 3:
                target.mkdir()
            else:
                target.write_bytes(b"")
        if kind.startswith(("graph", "spec")) and rng.random() < 0.9:
            rehash(d)
        try:
            model = edgevae.load(d, variant=variant)
            _exercise(model, index)
        except edgevae.EdgeVAEError:
            return kind, "refused"
        return kind, "accepted"


def _exercise(model, seed: int) -> None:
    """A few calls on a model that loaded; their outputs must keep the contract."""
    labels = 0 if model.classes else None
    z = np.random.default_rng(seed).standard_normal((3, *model.latent_shape)).astype(np.float32)
    x = model.decode(z, labels=labels)
    if x.shape != (3, *model.image_shape) or not (x.min() >= 0 and x.max() <= 1):
        raise AssertionError(f"decode returned {x.shape} in [{x.min()}, {x.max()}]")
    enc = model.encode(x, labels=labels) if model.kind == "ae" else model.encode(x, seed=seed, labels=labels)
    if enc.z.shape != (3, *model.latent_shape) or not np.isfinite(enc.z).all():
        raise AssertionError(f"encode returned z {enc.z.shape}")


# -- running ---------------------------------------------------------------------------------------------
def child(args) -> None:
    """Run cases [start, start + count), one JSON line per case to the progress file."""
    cases = (ImageCases if args.kind == "images" else ExportCases)(
        seed=args.seed, workdir=args.workdir, exports=[Path(e) for e in args.export])
    err_path = args.workdir / f"stderr-{os.getpid()}"
    saved_stderr = os.dup(2)
    with open(args.progress, "a") as progress, open(err_path, "w+b") as err:
        os.dup2(err.fileno(), 2)  # what anything (onnxruntime's C++ logger too) prints during a case is a finding
        for index in range(args.start, args.start + args.count):
            err.seek(0)
            err.truncate()
            t = time.perf_counter()
            record = {"index": index}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    record["kind"], record["outcome"] = cases.run(index)
                except Exception as e:  # noqa: BLE001 - anything but EdgeVAEError is what we look for
                    record["kind"], record["outcome"] = getattr(cases, "kind", "?"), "finding"
                    record["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    record["where"] = traceback.extract_tb(e.__traceback__)[-1].filename.split("site-packages/")[-1]
            if caught and record["outcome"] != "finding":
                record["outcome"], record["error"] = "finding", f"warning: {caught[0].category.__name__}: " \
                                                                f"{str(caught[0].message)[:200]}"
            sys.stderr.flush()
            printed = err_path.read_bytes()
            if printed and record["outcome"] != "finding":
                record["outcome"], record["error"] = "finding", f"printed: {printed[:200]!r}"
            record["seconds"] = round(time.perf_counter() - t, 4)
            if record["seconds"] > SLOW and record["outcome"] != "finding":
                record["outcome"], record["error"] = "finding", f"slow: {record['seconds']:.1f} s"
            progress.write(json.dumps(record) + "\n")
            progress.flush()
    os.dup2(saved_stderr, 2)
    err_path.unlink()
    status = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    print(json.dumps({"peak_rss_mib": int(status[1]) / 1024 if status else None}))


def run(kind: str, count: int, seed: int, workdir: Path, exports: tuple = (), batch: int = 1000,
        start: int = 0) -> dict:
    """Run `count` cases in child processes; returns the totals (outcomes, kinds, findings, time, memory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    progress = workdir / f"progress-{kind}.jsonl"
    progress.write_text("")
    next_index, end, peak, findings, begun = start, start + count, 0.0, [], time.perf_counter()
    while next_index < end:
        n = min(batch, end - next_index)
        cmd = [sys.executable, __file__, kind, "--child", "--start", str(next_index), "--count", str(n),
               "--seed", str(seed), "--workdir", str(workdir), "--progress", str(progress)]
        cmd += [a for e in exports for a in ("--export", str(e))]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last, silent = _done(progress), time.monotonic()
        while proc.poll() is None:
            time.sleep(0.2)
            now = _done(progress)
            if now != last:
                last, silent = now, time.monotonic()
            elif time.monotonic() - silent > HANG:
                proc.kill()
                break
        out, err = proc.communicate()
        done = _done(progress)
        if proc.returncode == 0:
            peak = max(peak, json.loads(out.strip().splitlines()[-1])["peak_rss_mib"] or 0)
            next_index += n
            continue
        failed = (done[-1] + 1) if done else next_index  # the case that crashed or hung
        why = "hang" if proc.returncode == -9 else f"crash (exit {proc.returncode}): {err.strip()[-300:]}"
        with open(progress, "a") as f:
            f.write(json.dumps({"index": failed, "outcome": "finding", "error": why}) + "\n")
        next_index = failed + 1
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    outcomes = Counter(r["outcome"] for r in records)
    kinds = Counter(f"{r.get('kind', '?')}:{r['outcome']}" for r in records)
    groups: dict[str, dict] = {}  # distinct findings: the message with its numbers masked
    for r in records:
        if r["outcome"] == "finding":
            example = {k: r.get(k) for k in ("index", "kind", "error", "where")}
            if len(findings) < 50:
                findings.append(example)
            group = groups.setdefault(re.sub(r"\d+", "N", (r.get("error") or "")[:70]), {**example, "count": 0})
            group["count"] += 1
    return {"kind": kind, "seed": seed, "cases": len(records), "outcomes": dict(outcomes), "by_kind": dict(kinds),
            "max_seconds": max((r.get("seconds", 0) for r in records), default=0), "peak_rss_mib": round(peak, 1),
            "wall_seconds": round(time.perf_counter() - begun, 1), "findings": findings,
            "finding_groups": sorted(groups.values(), key=lambda g: -g["count"])}


def _done(progress: Path) -> list[int]:
    return [json.loads(line)["index"] for line in progress.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("images", "exports"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--export", action="append", default=[])
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--progress", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        print(json.dumps(run(args.kind, args.count, args.seed, args.workdir, tuple(args.export), args.batch,
                             args.start)))


if __name__ == "__main__":
    main()
