"""Open an export directory: read the manifest, verify each graph's sha256, check the specs and that both
graphs come from one export; sessions are created on first use (Graph), each from bytes checked again.

A process that only decodes never holds the encoder's weights, and one that decodes in tiles holds only
the tiled decoder's units (runtime/_units.py).
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import onnxruntime as ort

from . import spec as S
from .errors import EdgeVAEError


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


def _read_manifest(path: Path) -> dict:
    manifest_path = path / S.MANIFEST
    if not path.is_dir():
        raise EdgeVAEError(f"{path}: not an export directory (no such directory)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise EdgeVAEError(f"{path}: not an export directory ({S.MANIFEST} is missing)") from None
    except OSError as e:  # a directory in its place, no permission ...
        raise EdgeVAEError(f"{manifest_path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeVAEError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or not isinstance(manifest.get("variants"), dict):
        raise EdgeVAEError(f"{manifest_path}: expected an object with 'files' and 'variants' maps")
    return manifest


def _read_verified(path: Path, name: str, manifest: dict) -> bytes:
    """The bytes of `name`, after checking them against the manifest's sha256."""
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise EdgeVAEError(f"{path / S.MANIFEST}: no sha256 listed for {name}")
    try:
        data = (path / name).read_bytes()
    except FileNotFoundError:
        raise EdgeVAEError(f"{path}: {name} is missing") from None
    except OSError as e:
        raise EdgeVAEError(f"{path / name}: cannot read it ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise EdgeVAEError(f"{path / name}: sha256 {digest[:12]}... does not match the manifest's "
                           f"{str(entry['sha256'])[:12]}... (file changed or corrupt)")
    return data


def _metadata(data: bytes, label: str) -> dict[str, str]:
    """ModelProto.metadata_props (field 14: key 1, value 2) from the top level of the protobuf, without onnxruntime."""
    def varint(pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while pos < end and shift < 64:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                return value, pos
        raise EdgeVAEError(f"{label}: not an ONNX graph (a truncated protobuf varint)")

    def fields(pos: int, end: int):
        while pos < end:
            key, pos = varint(pos, end)
            kind = key & 7
            if kind == 0:
                value, pos = varint(pos, end)
                yield key >> 3, value
                continue
            size = {1: 8, 5: 4}.get(kind)
            if kind == 2:
                size, pos = varint(pos, end)
            if size is None or pos + size > end:
                raise EdgeVAEError(f"{label}: not an ONNX graph (protobuf wire type {kind} at byte {pos})")
            yield key >> 3, (pos, pos + size)
            pos += size

    found = {}
    for number, span in fields(0, len(data)):
        if number == 14 and isinstance(span, tuple):
            entry = {n: bytes(data[v[0]:v[1]]) for n, v in fields(*span) if isinstance(v, tuple)}
            try:
                found[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
            except UnicodeDecodeError:
                raise EdgeVAEError(f"{label}: metadata is not UTF-8") from None
    return found


def _check_signature(session: ort.InferenceSession, name: str, inputs: tuple, outputs: tuple) -> None:
    got_in = tuple(i.name for i in session.get_inputs())
    got_out = tuple(o.name for o in session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise EdgeVAEError(f"{name}: expected inputs {inputs} -> outputs {outputs}, got {got_in} -> {got_out}")


def read_graph(path: Path, name, manifest: dict, role: str, variant: str) -> tuple[bytes, dict]:
    """(bytes, spec) of one graph: a plain file name, bytes matching the manifest's sha256, the spec of
    `role` and `variant` from this export (the manifest's pair_id)."""
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise EdgeVAEError(f"{path / S.MANIFEST}: bad {role} file name {name!r} for variant '{variant}'")
    data = _read_verified(path, name, manifest)
    text = _metadata(data, str(path / name)).get(S.METADATA_KEY)
    if text is None:
        raise EdgeVAEError(f"{path / name}: no '{S.METADATA_KEY}' metadata (not an EdgeVAE graph)")
    spec = S.loads(text, str(path / name))
    if (spec["role"], spec["variant"]) != (role, variant):
        raise EdgeVAEError(f"{path / name}: expected the {variant} {role}, got the {spec['variant']} {spec['role']}")
    if spec["pair_id"] != manifest.get("pair_id"):
        raise EdgeVAEError(f"{path}: {name} and {S.MANIFEST} come from different exports "
                           f"(pair_id {role}={spec['pair_id']}, manifest={manifest.get('pair_id')})")
    return data, spec


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


class Graph:
    """One graph of an export, its onnxruntime session created on first run from the file read and checked
    again (sha256, spec, signature): memory is spent only on the graphs a process uses. Thread-safe."""

    def __init__(self, path: Path, name: str, manifest: dict, role: str, variant: str, signature: tuple,
                 threads: int | None, spinning: bool, lean: bool = False):
        self.path, self.name, self.manifest, self.role, self.variant = path, name, manifest, role, variant
        self.signature, self.threads, self.spinning, self.lean = signature, threads, spinning, lean
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    data, _ = read_graph(self.path, self.name, self.manifest, self.role, self.variant)
                    try:
                        session = _session(data, self.path, self.threads, self.spinning, self.lean)
                    except Exception as e:  # onnxruntime raises its own types for unparsable graphs
                        raise EdgeVAEError(f"{self.path / self.name}: onnxruntime cannot load it "
                                           f"({str(e).splitlines()[0]})") from None
                    del data
                    _release_freed_memory()
                    _check_signature(session, str(self.path / self.name), *self.signature)
                    self._session = session
        return self._session

    def run(self, names, feed: dict) -> list:
        return self.session.run(names, feed)

    def release(self) -> None:
        """Let the session go (it is created again on the next run), and its memory back to the OS."""
        with self._lock:
            self._session = None
        _release_freed_memory()


def open_export(path: Path, threads: int | None, spinning: bool, variant: str):
    """(manifest, specs by role, Graphs by role) for one variant of the export at `path`: every file is
    read and checked now; sessions are created when first run."""
    manifest = _read_manifest(path)
    files = manifest["variants"].get(variant)
    if not isinstance(files, dict):
        raise EdgeVAEError(f"{path}: no '{variant}' variant in this export "
                           f"(it has: {', '.join(manifest['variants']) or 'none'})")
    specs, graphs = {}, {}
    for role in ("encoder", "decoder"):
        spec = specs[role] = read_graph(path, files.get(role), manifest, role, variant)[1]
        graphs[role] = Graph(path, files[role], manifest, role, variant,
                             S.signature(role, spec["model"], spec["classes"] is not None), threads, spinning)
    return manifest, specs, graphs
