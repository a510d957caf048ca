"""Open an export directory: read the manifest, verify each graph's sha256, create the sessions,
check the specs, the graph signatures and that both graphs come from one export.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnxruntime as ort

from . import spec as S
from .errors import EdgeVAEError


def _session(data: bytes, directory: Path, threads: int | None, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
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


def _check_signature(session: ort.InferenceSession, name: str, inputs: tuple, outputs: tuple) -> None:
    got_in = tuple(i.name for i in session.get_inputs())
    got_out = tuple(o.name for o in session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise EdgeVAEError(f"{name}: expected inputs {inputs} -> outputs {outputs}, got {got_in} -> {got_out}")


def open_export(path: Path, threads: int | None, spinning: bool, variant: str):
    """(manifest, specs by role, sessions by role) for one variant of the export at `path`."""
    manifest = _read_manifest(path)
    files = manifest["variants"].get(variant)
    if not isinstance(files, dict):
        raise EdgeVAEError(f"{path}: no '{variant}' variant in this export "
                           f"(it has: {', '.join(manifest['variants']) or 'none'})")
    specs, sessions = {}, {}
    for role in ("encoder", "decoder"):
        name = files.get(role)
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise EdgeVAEError(f"{path / S.MANIFEST}: bad {role} file name {name!r} for variant '{variant}'")
        data = _read_verified(path, name, manifest)
        try:
            session = _session(data, path, threads, spinning)
        except Exception as e:  # onnxruntime raises its own types for unparsable graphs
            raise EdgeVAEError(f"{path / name}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
        text = session.get_modelmeta().custom_metadata_map.get(S.METADATA_KEY)
        if text is None:
            raise EdgeVAEError(f"{path / name}: no '{S.METADATA_KEY}' metadata (not an EdgeVAE graph)")
        spec = specs[role] = S.loads(text, str(path / name))
        if (spec["role"], spec["variant"]) != (role, variant):
            raise EdgeVAEError(f"{path / name}: expected the {variant} {role}, "
                               f"got the {spec['variant']} {spec['role']}")
        _check_signature(session, str(path / name), *S.signature(role, spec["model"], spec["classes"] is not None))
        sessions[role] = session
    pair_ids = {specs["encoder"]["pair_id"], specs["decoder"]["pair_id"], manifest.get("pair_id")}
    if len(pair_ids) != 1:
        raise EdgeVAEError(f"{path}: encoder, decoder and manifest come from different exports "
                           f"(pair_id encoder={specs['encoder']['pair_id']}, decoder={specs['decoder']['pair_id']}, "
                           f"manifest={manifest.get('pair_id')})")
    return manifest, specs, sessions
