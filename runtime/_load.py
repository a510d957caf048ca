"""Open an export directory that may be hostile: nothing reaches onnxruntime before it is checked.

1. manifest.json: a regular file of at most spec.MAX_JSON_BYTES (runtime/_files.py), its sha256 equal to
   the pin when the app gave one (`load(path, expect_sha256=...)`), bounded JSON (spec.parse_json) of the
   documented structure (spec.check_manifest).
2. Each graph of the variant: a regular file of at most spec.MAX_GRAPH_BYTES whose sha256 is the manifest's;
   parsed by the runtime's own protobuf reader (runtime/_onnxproto.py); its spec parsed and within bounds
   (spec.loads); the graph itself checked against that spec (runtime/_graphcheck.py: ops, domains,
   inputs and outputs, initializers, tensor sizes); its external-data files listed in the manifest and
   hashed; the variant's files together at most spec.MAX_EXPORT_BYTES. Only then its Graph, whose
   onnxruntime session is made on first use from the same bytes (the file read again, its sha256 matched
   again), which turns onnxruntime's failures into EdgeVAEError and checks every output: its
   shape, finite values, pixels in [0, 1]. (Each graph's bytes are let go once its session holds them.)
3. Both graphs and the manifest from one export (pair_id), their specs agreeing on what the runtime uses.

An exact tiled decoder's or encoder's units (runtime/_units.py) are opened on first use (LazyGraph), each
read and checked the same way then (sha256, ops, signature), and can be let go again: a process that
decodes in tiles with low_memory holds one unit's weights at a time.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import _onnxproto
from . import spec as S
from ._files import Directory
from ._graphcheck import IMAGE_MACS, RUN_BYTES, Facts, check_graph, check_initializers, check_ops
from .errors import EdgeVAEError, shorten

_RUN_OPTIONS = ort.RunOptions()
_X_HAT = ["x_hat"]
_RUN_OPTIONS.log_severity_level = 4  # a failed run raises EdgeVAEError; onnxruntime prints nothing of its own
SHARED_FIELDS = ("model", "latent_shape", "image_shape", "image_mode", "classes", "prior", "preprocessing", "noise")


def _session(data: bytes, directory: Path, threads: int | None, spinning: bool,
             lean: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if lean:  # many small runs of varying shapes (tiles): allocate per run, keep no arena between runs
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    # A graph is loaded from its verified bytes; should it name external data, onnxruntime would resolve
    # the path against the process's working directory. Pin it to the export directory, which
    # onnxruntime then refuses to leave ("../", absolute paths, links out).
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(directory.resolve()))
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime picks the physical core count
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # Spinning threads keep a core busy between calls; an idle desktop app should burn no CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    if getattr(session, "_model_bytes", None) is data:
        # onnxruntime's Python wrapper keeps the bytes for the life of the session, only to re-create it
        # on another execution provider after a failure; on the CPU provider that never happens. Let the
        # bytes go (the graph's size in memory, per session; bench/cold_start.py).
        session._model_bytes = None
    return session


def _runner(session: ort.InferenceSession):
    """`session.run` minus onnxruntime's per-call Python checks of the feed (input names, OrtValue
    ownership), which cost as much as a batch-1 MLP layer: every feed is built by Model with exactly the
    inputs load checked. Falls back to `session.run` if the binding is laid out otherwise."""
    inner = getattr(session, "_sess", None)
    return inner.run if callable(getattr(inner, "run", None)) else session.run


class _Lazy:
    """An onnxruntime session made by `_make()` on first use, once, under a lock (thread-safe)."""
    __slots__ = ("_session", "_lock")

    def __init__(self):
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    session = self._make()
                    self._opened(session)
                    self._session = session
        return self._session

    def _make(self) -> ort.InferenceSession:
        raise NotImplementedError

    def _opened(self, session: ort.InferenceSession) -> None:
        """Called with the new session before it is published."""


class Graph(_Lazy):
    """A checked graph whose every run is checked too; `run(names, feed)` as InferenceSession.run.

    Its onnxruntime session is made on first run by `opener` (from the file read again and matched against
    the manifest's sha256, so from the bytes load checked): memory goes only to the graphs a process uses
    (sampling never builds the encoder; exact tiles never build decoder.onnx). onnxruntime's own failures
    (loading, an allocation, a dimension it refuses) become EdgeVAEError; each output must be float32
    (N, *its spec shape) with finite values, and x_hat must lie in [0, 1]. `chunk` is the largest batch one
    run may take (runtime/_graphcheck.py's memory estimate). Thread-safe.
    """
    __slots__ = ("opener", "label", "role", "shapes", "chunk", "output_names", "unit_range", "tile_scale",
                 "max_cells", "_run")

    def __init__(self, opener, label: str, role: str, shapes: dict, chunk: int,
                 unit_range: frozenset = frozenset(), tile_scale: int | None = None, max_cells: int | None = None):
        self.opener, self.label, self.role, self.shapes, self.chunk = opener, label, role, shapes, chunk
        self.output_names = list(shapes)
        self.unit_range = unit_range  # outputs the graph's final Clip(0, 1) keeps in range: only NaN is checked
        self.tile_scale = tile_scale  # a tileable graph's pixels per latent cell: outputs follow the input's h, w
        self.max_cells = max_cells  # a tileable graph too large to run whole: the largest tile side, in cells
        self._run = None
        super().__init__()

    def _make(self) -> ort.InferenceSession:
        return self.opener()

    def _opened(self, session: ort.InferenceSession) -> None:
        self._run = _runner(session)

    def _check_tile(self, feed: dict) -> None:
        h, w = feed["z"].shape[2:] if self.role == "decoder" else (d // self.tile_scale for d in feed["x"].shape[2:])
        if max(h, w) > self.max_cells:
            what = "decode" if self.role == "decoder" else "encode"
            raise EdgeVAEError(f"{what}: a {h}x{w}-cell latent is more than this model's graphs may take in one run "
                               f"within max_run_bytes and max_image_macs; {what} in tiles of at most "
                               f"{self.max_cells} cells (tile={self.max_cells}), or load with larger bounds")

    def _shape(self, name: str, feed: dict, n: int) -> tuple:
        """The shape output `name` must have for this feed: the spec's, or a tile's for a tileable graph."""
        tail = self.shapes[name]
        if self.tile_scale is None:
            return (n, *tail)
        s = self.tile_scale
        if self.role == "decoder":
            h, w = feed["z"].shape[2:]
            return (n, tail[0], h * s, w * s)
        h, w = feed["x"].shape[2:]
        return (n, tail[0], h // s, w // s)

    def x_hat_of(self, z: np.ndarray, shape: tuple) -> np.ndarray:
        """run(["x_hat"], {"z": z})[0] for a decoder fed z alone, whose x_hat must be `shape`: the same
        checks in fewer steps, for batch 1 where the steps cost as much as the network (bench/generate.py).
        Anything unexpected goes through run, which says what is wrong."""
        run = self._run
        if run is not None:
            try:
                out = run(_X_HAT, {"z": z}, _RUN_OPTIONS)[0]
            except Exception:  # noqa: BLE001 (run raises it again, as EdgeVAEError with onnxruntime's message)
                out = None
            if type(out) is np.ndarray and out.dtype == np.float32 and out.shape == shape and self._x_hat_ok(out):
                return out
        return self.run(_X_HAT, {"z": z})[0]

    def _x_hat_ok(self, out: np.ndarray) -> bool:
        """Whether x_hat holds no NaN and lies in [0, 1]."""
        if "x_hat" in self.unit_range:  # Clip(0, 1) made it: only NaN can be wrong, and max() propagates NaN
            top = out.max()
            return bool(top == top)
        return bool(out.min() >= 0 and out.max() <= 1)  # NaN fails both comparisons

    def run(self, names, feed: dict) -> list[np.ndarray]:
        if self.max_cells is not None:
            self._check_tile(feed)
        run = self._run
        if run is None:
            self.session  # noqa: B018 (made on first use)
            run = self._run
        try:
            outputs = run(names or self.output_names, feed, _RUN_OPTIONS)
        except Exception as e:  # onnxruntime raises its own types (Fail, RuntimeException, InvalidArgument ...)
            raise EdgeVAEError(f"{self.label}: onnxruntime failed while running it "
                               f"({(str(e).strip().splitlines() or [type(e).__name__])[-1][:300]})") from None
        n = len(next(iter(feed.values())))
        for name, out in zip(names or self.output_names, outputs):
            shape = self._shape(name, feed, n)
            if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
                got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                raise EdgeVAEError(f"{self.label}: output {name} must be float32 {shape}, got {got} "
                                   f"(the graph breaks its spec)")
            if name == "x_hat":
                if not self._x_hat_ok(out):
                    lo, hi = out.min(), out.max()
                    if np.isfinite(lo) and np.isfinite(hi):
                        raise EdgeVAEError(f"{self.label}: x_hat must lie in [0, 1], got values in [{lo:.4g}, "
                                           f"{hi:.4g}] (the graph breaks its spec)")
                    raise EdgeVAEError(f"decode: the decoder overflowed for latents this far from the prior (max |z| "
                                       f"= {np.abs(feed['z']).max():.3g}); decode values of typical N(0, I) scale")
            elif not np.isfinite(out).all():
                raise EdgeVAEError(f"encode: the encoder's {name} overflowed float32 (NaN or Inf) for these inputs "
                                   f"(max |{'eps' if 'eps' in feed else 'x'}| = "
                                   f"{np.abs(feed.get('eps', feed['x'])).max():.3g})")
        return outputs


def _check_signature(session: ort.InferenceSession, name: str, inputs: tuple, outputs: tuple) -> None:
    got_in = tuple(i.name for i in session.get_inputs())
    got_out = tuple(o.name for o in session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise EdgeVAEError(f"{name}: expected inputs {inputs} -> outputs {outputs}, got {got_in} -> {got_out}")


def _release_freed_memory() -> None:
    """Hand memory freed while a session was built back to the OS (glibc's malloc_trim; elsewhere nothing).

    Building a session copies the weights while it optimises the graph (the layout of the convolutions) and
    frees the first copies; glibc keeps such freed memory in the process, resident, for reuse. With
    decoder.onnx of Stable Diffusion's VAE that is ~190 MB of a ~440 MB session (bench/tiled.py).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: musl, macOS, Windows
        pass


class LazyGraph(_Lazy):
    """One unit graph of a tiled decoder or encoder (hashed at load, runtime/_model.py), its session created
    on first run from the file read and checked then: the manifest's sha256, its spec (role `label`, variant,
    pair_id), the op allow-list, its initializers (inline only: units never read external data), its inputs
    and outputs; each run's outputs must be finite float32. Memory is spent only on the graphs a process
    uses, and `release` gives it back. Thread-safe."""

    def __init__(self, path: Path, name: str, manifest: dict, label: str, signature: tuple,
                 threads: int | None, spinning: bool):
        self.path, self.name, self.manifest, self.label = path, name, manifest, label  # name: listed (check_units)
        self.signature, self.threads, self.spinning = signature, threads, spinning
        super().__init__()

    def _make(self) -> ort.InferenceSession:
        label = str(self.path / self.name)
        with Directory(self.path) as d:
            data = _verified(d, self.name, self.manifest, S.MAX_GRAPH_BYTES)
        try:
            model = _onnxproto.parse(data)
        except _onnxproto.ProtoError as e:
            raise EdgeVAEError(f"{label}: not an ONNX graph this runtime reads ({e})") from None
        self._check_spec(model.metadata.get(S.METADATA_KEY), label)
        facts = Facts(check_ops(model, label))
        check_initializers(model.graph, data, label, facts)
        if facts.external:
            raise EdgeVAEError(f"{label}: reads external data ({', '.join(sorted(facts.external))}); a tiled unit "
                               f"holds its weights inline")
        del model
        try:
            session = _session(data, self.path, self.threads, self.spinning, lean=True)
        except Exception as e:  # onnxruntime raises its own types for graphs it cannot load
            raise EdgeVAEError(f"{label}: onnxruntime cannot load it ({_last_line(e)})") from None
        del data
        _release_freed_memory()
        _check_signature(session, label, *self.signature)
        return session

    def _check_spec(self, text: str | None, label: str) -> None:
        spec = S.parse_json(text.encode(), label) if text is not None else None
        want = {"role": self.label, "variant": "fp32", "pair_id": self.manifest["pair_id"]}
        if not isinstance(spec, dict) or any(spec.get(k) != v for k, v in want.items()):
            got = {k: spec.get(k) for k in want} if isinstance(spec, dict) else None
            raise EdgeVAEError(f"{label}: expected the spec of unit {want}, got {shorten(got)}")

    def run(self, names, feed: dict) -> list:
        session = self.session
        try:
            outputs = session.run(names, feed, _RUN_OPTIONS)
        except Exception as e:  # onnxruntime's own failures at run time
            raise EdgeVAEError(f"{self.path / self.name}: onnxruntime failed while running it "
                               f"({_last_line(e)})") from None
        n = len(next(iter(feed.values())))
        for out in outputs:
            if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.ndim < 1 or len(out) != n:
                raise EdgeVAEError(f"{self.path / self.name}: an output is not float32 with the batch's {n} rows "
                                   f"(the graph breaks its plan)")
            if not np.isfinite(out).all():
                raise EdgeVAEError(f"{self.path / self.name}: the tiled unit overflowed float32 for these inputs")
        return outputs

    def release(self) -> None:
        """Let the session go (it is created again on the next run), and its memory back to the OS."""
        with self._lock:
            self._session = None
        _release_freed_memory()


def _last_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]


def check_units(path: Path, files: list, manifest: dict) -> None:
    """A tiled decoder's or encoder's unit files: listed in the manifest, regular files whose sha256 is the
    listed one, together at most spec.MAX_EXPORT_BYTES (a budget of their own: Stable Diffusion's VAE and
    its units exceed one). Read in chunks and let go: their sessions are made when first run (LazyGraph)."""
    budget = S.MAX_EXPORT_BYTES
    with Directory(path) as d:
        for name in files:
            if name not in manifest["files"]:
                raise EdgeVAEError(f"{path / S.MANIFEST}: {name} is not listed in 'files'")
            digest, size = d.sha256(name, min(S.MAX_GRAPH_BYTES, budget))
            if digest != manifest["files"][name]["sha256"]:
                raise EdgeVAEError(f"{path / name}: sha256 {digest[:12]}... does not match the manifest's "
                                   f"{manifest['files'][name]['sha256'][:12]}... (file changed or corrupt)")
            budget -= size


def _read_manifest(d: Directory, expect_sha256: str | None) -> tuple[dict, str]:
    """(manifest, sha256 of its bytes), checked against the pin if there is one."""
    source = d.path / S.MANIFEST
    try:
        data = d.read(S.MANIFEST, S.MAX_JSON_BYTES)
    except EdgeVAEError as e:
        if str(e).endswith(" is missing"):
            raise EdgeVAEError(f"{d.path}: not an export directory ({S.MANIFEST} is missing)") from None
        raise
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None:
        if digest != expect_sha256:
            raise EdgeVAEError(f"{source}: sha256 {digest[:12]}... is not the pinned {expect_sha256[:12]}... "
                               f"(another export than the one this app was tested with)")
    manifest = S.parse_json(data, str(source))
    S.check_manifest(manifest, str(source))
    return manifest, digest


def _verified(d: Directory, name: str, manifest: dict, limit: int) -> bytes:
    """The bytes of `name`, after checking them against the manifest's sha256."""
    data = d.read(name, limit)
    digest, expected = hashlib.sha256(data).hexdigest(), manifest["files"][name]["sha256"]
    if digest != expected:
        raise EdgeVAEError(f"{d.path / name}: sha256 {digest[:12]}... does not match the manifest's "
                           f"{expected[:12]}... (file changed or corrupt)")
    return data


def _check_external(d: Directory, label: str, external: dict[str, int], manifest: dict, budget: int) -> int:
    """Each external-data file a graph reads: listed in the manifest, its sha256 the listed one, long enough.
    Returns the bytes they hold."""
    total = 0
    for name, end in sorted(external.items()):
        if name not in manifest["files"]:
            raise EdgeVAEError(f"{label}: reads external data from {name!r}, which {S.MANIFEST} does not list")
        digest, size = d.sha256(name, budget - total)
        if digest != manifest["files"][name]["sha256"]:
            raise EdgeVAEError(f"{d.path / name}: sha256 {digest[:12]}... does not match the manifest's "
                               f"{manifest['files'][name]['sha256'][:12]}... (file changed or corrupt)")
        if size < end:
            raise EdgeVAEError(f"{label}: its external data needs {end:,} bytes of {name}, which holds {size:,}")
        total += size
    return total


def _checked_graph(name: str, facts, label: str, role: str, spec: dict, path: Path, manifest: dict, threads,
                   spinning) -> Graph:
    """A graph that passed every check, wrapped so its runs are checked too; its session is made on first run
    from the file read again, its sha256 (and its external data's) matched against the manifest again."""
    where = path.resolve()  # the session is made later: not affected by a change of working directory

    def opener() -> ort.InferenceSession:
        with Directory(where) as d:
            data = _verified(d, name, manifest, S.MAX_GRAPH_BYTES)
            _check_external(d, label, facts.external, manifest, S.MAX_EXPORT_BYTES)
        try:
            session = _session(data, where, threads, spinning)
        except Exception as e:  # onnxruntime raises its own types for graphs it cannot load
            raise EdgeVAEError(f"{label}: onnxruntime cannot load it ({_last_line(e)})") from None
        del data
        _release_freed_memory()
        return session

    _, names_out = S.signature(role, spec["model"], spec["classes"] is not None)
    shapes = {"z": spec["latent_shape"], "mu": spec["latent_shape"], "logvar": spec["latent_shape"],
              "x_hat": spec["image_shape"]}
    return Graph(opener, label, role, {n: tuple(shapes[n]) for n in names_out}, facts.chunk, facts.unit_range,
                 spec.get("latent_scale") if spec.get("tileable") else None, facts.max_cells)


def open_export(path: Path, threads: int | None, spinning: bool, variant: str,
                expect_sha256: str | None = None, max_batch: int = 1024, max_run_bytes: int = RUN_BYTES,
                max_image_macs: int = IMAGE_MACS):
    """(manifest, specs by role, Graphs by role, sha256 of manifest.json) for one variant of the export at `path`."""
    with Directory(path) as d:
        manifest, digest = _read_manifest(d, expect_sha256)
        files = manifest["variants"].get(variant)
        if files is None:
            raise EdgeVAEError(f"{path}: no '{variant}' variant in this export "
                               f"(it has: {', '.join(manifest['variants'])})")
        specs, sessions, budget = {}, {}, S.MAX_EXPORT_BYTES
        for role in ("encoder", "decoder"):
            name = files[role]
            label = str(path / name)
            data = _verified(d, name, manifest, min(S.MAX_GRAPH_BYTES, budget))
            budget -= len(data)
            try:
                model = _onnxproto.parse(data)
            except _onnxproto.ProtoError as e:
                raise EdgeVAEError(f"{label}: not an ONNX graph this runtime reads ({e})") from None
            text = model.metadata.get(S.METADATA_KEY)
            if text is None:
                raise EdgeVAEError(f"{label}: no '{S.METADATA_KEY}' metadata (not an EdgeVAE graph)")
            spec = specs[role] = S.loads(text, label)
            if (spec["role"], spec["variant"]) != (role, variant):
                raise EdgeVAEError(f"{label}: expected the {variant} {role}, got the {spec['variant']} {spec['role']}")
            facts = check_graph(model, data, label, role, spec, max_batch, max_run_bytes, max_image_macs)
            budget -= _check_external(d, label, facts.external, manifest, budget)
            del model, data  # the session, when first run, reads the file again and matches its sha256
            sessions[role] = _checked_graph(name, facts, label, role, spec, path, manifest, threads, spinning)
        pair_ids = {specs["encoder"]["pair_id"], specs["decoder"]["pair_id"], manifest["pair_id"]}
        if len(pair_ids) != 1:
            raise EdgeVAEError(f"{path}: encoder, decoder and manifest come from different exports "
                               f"(pair_id encoder={specs['encoder']['pair_id']}, "
                               f"decoder={specs['decoder']['pair_id']}, manifest={manifest['pair_id']})")
        differ = [f for f in SHARED_FIELDS if specs["encoder"][f] != specs["decoder"][f]]
        if differ:
            raise EdgeVAEError(f"{path}: the encoder's and decoder's specs differ in {', '.join(differ)}")
    return manifest, specs, sessions, digest
