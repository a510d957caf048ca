"""Hostile export directories: changed graphs with re-hashed manifests, pipes, links, bombs, malformed JSON.

Each case is what someone who can write the directory can do (the manifest's sha256 sums are recomputed
every time, so only the runtime's own checks stand between the files and onnxruntime); each must end in
one EdgeVAEError that names the file and the problem, without hanging or allocating.
"""
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from conftest import ROOT, TINY, run_cli
from onnx import TensorProto, helper, numpy_helper

import edgevae
from edgevae import EdgeVAEError
from edgevae import spec as S

D, SHAPE = TINY["latent_dim"], (1, TINY["image_size"], TINY["image_size"])


def rehash(d):
    """Recompute manifest.json's sha256 sums and sizes, as anyone who can write the directory can."""
    manifest = json.loads((d / S.MANIFEST).read_text())
    for name in manifest["files"]:
        if (d / name).is_file():
            data = (d / name).read_bytes()
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (d / S.MANIFEST).write_text(json.dumps(manifest))


def forge(export_dir, tmp_path, edit, role="decoder", name="forged"):
    """A copy of the export whose `role` graph went through edit(model) and whose manifest was re-hashed."""
    d = shutil.copytree(export_dir, tmp_path / name)
    model = onnx.load(d / f"{role}.onnx")
    edit(model)
    onnx.save(model, d / f"{role}.onnx")
    rehash(d)
    return d


def _before_clip(model, *nodes):
    """Insert nodes before the decoder's final Clip; the first node reads the Clip's input, the last feeds it."""
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    nodes[0].input[0] = clip.input[0]
    clip.input[0] = nodes[-1].output[0]
    index = list(model.graph.node).index(clip)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)


def _spec(model):
    return json.loads(next(p.value for p in model.metadata_props if p.key == S.METADATA_KEY))


def _set_spec(model, spec):
    onnx.helper.set_model_props(model, {S.METADATA_KEY: json.dumps(spec)})


def _const(model, name, array):
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))


def _replace(model, name, array):
    """Give the initializer `name` new contents."""
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(array), name))


def _refused(d, *fragments, **load_args):
    with pytest.raises(EdgeVAEError) as info:
        edgevae.load(d, **load_args)
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


# -- graphs changed and re-hashed ------------------------------------------------------------------------
def test_random_op_is_refused(export_dir, tmp_path):
    def edit(m):
        _before_clip(m, helper.make_node("RandomNormalLike", ["?"], ["noise"]),
                     helper.make_node("Add", ["noise", "noise"], ["noisy"]))
    d = forge(export_dir, tmp_path, edit)
    _refused(d, "decoder.onnx: node", "(RandomNormalLike) is a random op")


@pytest.mark.parametrize("op, domain", [("Sin", ""), ("Gelu", "com.microsoft"), ("Erf", "")])
def test_ops_outside_the_allow_list_are_refused(export_dir, tmp_path, op, domain):
    def edit(m):
        _before_clip(m, helper.make_node(op, ["?"], ["changed"], domain=domain))
        if domain:
            m.opset_import.append(helper.make_opsetid(domain, 1))
    d = forge(export_dir, tmp_path, edit)
    _refused(d, f"({op}) is in domain 'com.microsoft'" if domain else f"({op}) is an op outside the allow-list")


def test_control_flow_with_subgraphs_is_refused(export_dir, tmp_path):
    def branch(value):
        return helper.make_graph([helper.make_node("Identity", ["c" + value], ["out" + value])], "b" + value, [],
                                 [helper.make_tensor_value_info("out" + value, TensorProto.FLOAT, None)],
                                 [numpy_helper.from_array(np.float32(value == "1"), "c" + value)])

    def edit(m):
        _const(m, "cond", np.array(True))
        m.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=branch("1"),
                                             else_branch=branch("0")))
    _refused(forge(export_dir, tmp_path, edit), "(If) is an op outside the allow-list")


def test_declared_output_shapes_and_types_must_be_the_specs(export_dir, tmp_path):
    def wrong_dims(m):
        m.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 56
    _refused(forge(export_dir, tmp_path, wrong_dims, name="a"), "x_hat must be float32 [batch, 1, 28, 28]",
             "28, 56]")

    def fixed_batch(m):
        m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    _refused(forge(export_dir, tmp_path, fixed_batch, name="b"), "x_hat must be float32", "(axis 0 dynamic)")

    def symbolic_side(m):
        m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "width"
    _refused(forge(export_dir, tmp_path, symbolic_side, name="c"), "z must be float32 [batch, 4]")

    def renamed(m):
        m.graph.output[0].name = "pixels"
        next(n for n in m.graph.node if n.op_type == "Clip").output[0] = "pixels"
    _refused(forge(export_dir, tmp_path, renamed, name="d"), "expected inputs ('z',) -> outputs ('x_hat',)")

    def float64(m):
        m.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    _refused(forge(export_dir, tmp_path, float64, name="e"), "z must be float32")


def test_an_output_that_lies_about_its_shape_is_caught_by_shape_inference(export_dir, tmp_path):
    def edit(m):  # declared [batch, 1, 28, 28], computed [batch, 1, 14, 56]
        reshape = next(n for n in m.graph.node if n.op_type == "Reshape")
        _replace(m, reshape.input[1], np.array([-1, 1, 14, 56], np.int64))
    _refused(forge(export_dir, tmp_path, edit), "output x_hat has shape (1024, 1, 14, 56) at batch 1024")


def test_pixels_beyond_one_are_refused_at_run_time(export_dir, tmp_path):
    def edit(m):
        _const(m, "fifty", np.float32(50))
        _before_clip(m, helper.make_node("Mul", ["?", "fifty"], ["bright"]))
        clip = next(n for n in m.graph.node if n.op_type == "Clip")
        _replace(m, clip.input[2], np.float32(100))
    model = edgevae.load(forge(export_dir, tmp_path, edit))  # a graph of allowed ops, shaped right: it loads
    with pytest.raises(EdgeVAEError, match=r"x_hat must lie in \[0, 1\], got values in \["):
        model.sample(4, seed=0)
    with pytest.raises(EdgeVAEError, match=r"x_hat must lie in \[0, 1\]"):
        model.reconstruct(np.zeros((2, *SHAPE), np.float32))


def test_memory_bombs_made_of_allowed_ops_are_refused_at_load(export_dir, tmp_path):
    def expand(m):  # every image makes a (4, 10^8) float tensor: 1.6 GB
        _const(m, "axes2", np.array([2], np.int64))
        _const(m, "huge", np.array([1, D, 10**8], np.int64))
        m.graph.node.insert(0, helper.make_node("Unsqueeze", ["z", "axes2"], ["z3"]))
        m.graph.node.insert(1, helper.make_node("Expand", ["z3", "huge"], ["big"]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(forge(export_dir, tmp_path, expand, name="a"), "one image needs an estimated", "bytes of tensors")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB

    def computed_shape(m):  # a shape that shrinks as the batch grows: checking the largest batch bounds nothing
        _const(m, "ceiling", np.array([2048, 2 * D], np.int64))
        m.graph.node.insert(0, helper.make_node("Shape", ["z"], ["zs"]))
        m.graph.node.insert(1, helper.make_node("Sub", ["ceiling", "zs"], ["shrinking"]))
        m.graph.node.insert(2, helper.make_node("Expand", ["z", "shrinking"], ["big"]))
    _refused(forge(export_dir, tmp_path, computed_shape, name="b"), "(Expand): its shape must be a constant")

    def folded(m):  # constants onnxruntime would fold at load: 400 MB before any run
        _const(m, "one", np.ones((1,), np.float32))
        _const(m, "many", np.array([10**8], np.int64))
        m.graph.node.insert(0, helper.make_node("Expand", ["one", "many"], ["folded"]))
    _refused(forge(export_dir, tmp_path, folded, name="c"), "its constant parts hold 400,000,000 bytes")


def test_initializers_must_hold_what_their_dims_say(export_dir, tmp_path):
    def edit(m):
        w = next(i for i in m.graph.initializer if len(i.dims) == 2)
        w.dims[0] = 10**9  # claims 10^9 rows, holds the old data
    _refused(forge(export_dir, tmp_path, edit), "bytes of data for dims (1000000000,")


def _external(model, location):
    for tensor in model.graph.initializer:
        if tensor.raw_data and len(tensor.raw_data) > 1024:
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", "0"), ("length", str(len(tensor.raw_data)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            data = tensor.raw_data
            tensor.ClearField("raw_data")
            return data


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/dir.bin", ".hidden", "unlisted.bin"])
def test_external_data_must_be_a_listed_file_beside_the_graph(export_dir, tmp_path, monkeypatch, location):
    d = shutil.copytree(export_dir, tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    model = onnx.load(d / S.DECODER_FILE)
    data = _external(model, location)
    for place in (tmp_path / "outside.bin", d / "unlisted.bin"):
        place.write_bytes(data)
    onnx.save(model, d / S.DECODER_FILE)
    rehash(d)
    if location == "unlisted.bin":
        _refused(d, "decoder.onnx: reads external data from 'unlisted.bin', which manifest.json does not list")
    else:
        _refused(d, "decoder.onnx: initializer", "must be a plain file name beside the graph")


def test_external_data_listed_in_the_manifest_loads_and_is_verified(export_dir, tmp_path):
    d = shutil.copytree(export_dir, tmp_path / "export")
    model = onnx.load(d / S.DECODER_FILE)
    (d / "decoder.bin").write_bytes(_external(model, "decoder.bin"))
    onnx.save(model, d / S.DECODER_FILE)
    manifest = json.loads((d / S.MANIFEST).read_text())
    manifest["files"]["decoder.bin"] = {}
    (d / S.MANIFEST).write_text(json.dumps(manifest))
    rehash(d)
    z = edgevae.standard_normal(3, (5, D))
    assert np.array_equal(edgevae.load(d).decode(z), edgevae.load(export_dir).decode(z))  # read from decoder.bin
    data = bytearray((d / "decoder.bin").read_bytes())
    data[100] ^= 1
    (d / "decoder.bin").write_bytes(bytes(data))  # the graph's hash is unchanged: only the data's catches it
    _refused(d, "decoder.bin: sha256", "does not match the manifest's")


def test_encoder_and_decoder_specs_must_agree(export_dir, tmp_path):
    def edit(m):
        spec = _spec(m)
        _set_spec(m, {**spec, "preprocessing": {**spec["preprocessing"], "fit": "pad"}})
    _refused(forge(export_dir, tmp_path, edit), "specs differ in preprocessing")


# -- hostile directories ---------------------------------------------------------------------------------
def _load_in_child(d, timeout=20):
    """edgevae.load(d) in a fresh interpreter: (seconds taken or None for a hang, max RSS MiB, stderr)."""
    code = ("import re, sys, time, edgevae; t = time.perf_counter()\n"
            "try:\n    edgevae.load(sys.argv[1]); print('loaded')\n"
            "except edgevae.EdgeVAEError as e:\n    print('refused:', e)\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
            "print(time.perf_counter() - t, int(hwm) / 1024)")  # peak RSS of this process (ru_maxrss outlives exec)
    try:
        r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, "hung"
    *lines, numbers = r.stdout.strip().splitlines()
    seconds, rss = map(float, numbers.split())
    return seconds, rss, "\n".join(lines) + r.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", [S.MANIFEST, S.ENCODER_FILE])
def test_a_fifo_is_refused_without_blocking(export_dir, tmp_path, name):
    d = shutil.copytree(export_dir, tmp_path / "export")
    (d / name).unlink()
    os.mkfifo(d / name)
    seconds, _, out = _load_in_child(d)
    assert seconds is not None and seconds < 5 and f"{name}: is a FIFO (named pipe), not a regular file" in out, out


@pytest.mark.parametrize("name", [S.MANIFEST, S.ENCODER_FILE])
def test_symlinks_are_refused_wherever_they_point(export_dir, tmp_path, name):
    d = shutil.copytree(export_dir, tmp_path / "export")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(d / name, outside / name)
    for target in ("/dev/zero", outside / name):
        (d / name).unlink()
        (d / name).symlink_to(target)
        seconds, rss, out = _load_in_child(d)
        assert seconds is not None and seconds < 5 and rss < 300, (seconds, rss)
        assert f"{name}: is a symbolic link; an export holds regular files only" in out, out


def test_a_huge_latent_in_the_spec_is_refused_before_any_allocation(export_dir, tmp_path):
    for field, value in (("latent_shape", [10**9]), ("latent_dim", 10**9), ("image_shape", [3, 10**5, 10**5])):
        def edit(m, field=field, value=value):
            _set_spec(m, {**_spec(m), field: value})
        d = forge(export_dir, tmp_path, edit, role="encoder", name=field)
        seconds, rss, out = _load_in_child(d)
        assert seconds < 5 and rss < 300 and f"spec {field} must be" in out, (seconds, rss, out)


def test_a_graph_beyond_the_size_cap_is_refused_unread(export_dir, tmp_path):
    d = shutil.copytree(export_dir, tmp_path / "export")
    with open(d / S.ENCODER_FILE, "ab") as f:
        f.truncate(S.MAX_GRAPH_BYTES + 1)  # sparse: no disk used
    rehash_needed = json.loads((d / S.MANIFEST).read_text())
    assert rehash_needed  # the size check comes before the hash: nothing to re-hash
    _refused(d, "encoder.onnx: 268,435,457 bytes or more, beyond the 268,435,456-byte limit")


# -- malformed JSON --------------------------------------------------------------------------------------
def _manifest_text(d, text):
    (d / S.MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("change, fragment", [
    (lambda m: {**m, "pair_id": [m["pair_id"]]}, "pair_id must be a string"),
    (lambda m: {**m, "pair_id": 10**400}, "integer of 401 digits"),
    (lambda m: {**m, "files": {**m["files"], "a\x00b": m["files"]["encoder.onnx"]}}, "a plain name"),
    (lambda m: {**m, "files": {**m["files"], "../x": m["files"]["encoder.onnx"]}}, "a plain name"),
    (lambda m: {**m, "files": {k: {"sha256": v["sha256"]} for k, v in m["files"].items()}},
     "'bytes': an int"),
    (lambda m: {**m, "variants": {"fp32": {"encoder": ["encoder.onnx"], "decoder": "decoder.onnx"}}},
     "variants['fp32'] must be"),
    (lambda m: {**m, "variants": {"fp32": {"encoder": "encoder.onnx", "decoder": "missing.onnx"}}},
     "variants['fp32'] must be"),
])
def test_malformed_manifests_are_one_line(export_dir, tmp_path, change, fragment):
    d = shutil.copytree(export_dir, tmp_path / "export")
    _manifest_text(d, json.dumps(change(json.loads((d / S.MANIFEST).read_text()))))
    _refused(d, "manifest.json", fragment)


def test_json_bombs_and_bad_text_are_one_line(export_dir, tmp_path):
    d = shutil.copytree(export_dir, tmp_path / "export")
    manifest = (d / S.MANIFEST).read_text()
    for text, fragment in (("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
                           (b"\xff\xfe" + manifest.encode(), "not UTF-8 text"),
                           (manifest.replace("{", '{"pair_id": "x", ', 1), "appears twice"),
                           ('{"a": NaN}', "NaN is not a JSON number"),
                           ('{"a": "\\ud800"}', "unpaired surrogate"),
                           (" " * (S.MAX_JSON_BYTES + 1), "beyond the 1,048,576-byte limit")):
        _manifest_text(d, text)
        _refused(d, fragment)


def test_malformed_specs_are_one_line(export_dir, tmp_path):
    cases = [("pair_id", ["x"], "spec pair_id must be a string"), ("classes", [[1]], "spec classes must be"),
             ("image_shape", [[1], 28, 28], "spec image_shape must be"), ("noise", {"algorithm": "mt19937"},
                                                                             "spec noise must be this runtime's"),
             ("training", "none", "spec training must be an object"), ("ops", "Gemm", "spec ops must be a list")]
    for field, value, fragment in cases:
        def edit(m, field=field, value=value):
            _set_spec(m, {**_spec(m), field: value})
        _refused(forge(export_dir, tmp_path, edit, name=field), "decoder.onnx", fragment)

    def deep(m):
        onnx.helper.set_model_props(m, {S.METADATA_KEY: "[" * 50_000 + "]" * 50_000})
    _refused(forge(export_dir, tmp_path, deep, name="deep"), "nested 50000 levels deep")


# -- pinning ---------------------------------------------------------------------------------------------
def test_an_app_pins_the_export_it_tested(export_dir, tmp_path):
    digest = hashlib.sha256((export_dir / S.MANIFEST).read_bytes()).hexdigest()
    model = edgevae.load(export_dir, expect_sha256=digest)
    assert model.manifest_sha256 == digest
    other = shutil.copytree(export_dir, tmp_path / "other")
    _manifest_text(other, (other / S.MANIFEST).read_text() + " ")  # one byte: another export
    _refused(other, "manifest.json: sha256", f"is not the pinned {digest[:12]}...", expect_sha256=digest)
    for bad in ("abc", 42, "g" * 64):
        _refused(export_dir, "expect_sha256 must be 64 hex digits", expect_sha256=bad)
    r = run_cli("sample", str(other), "--expect", digest, "--out", str(tmp_path / "s.png"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not the pinned" in r.stderr, r.stderr
    r = run_cli("sample", str(export_dir), "--expect", digest, "--n", "4", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0, r.stderr
    r = run_cli("info", str(export_dir))
    assert f"manifest    sha256 {digest}" in r.stdout


# -- the API and the command line ------------------------------------------------------------------------
def test_load_arguments_are_checked(export_dir):
    for kwargs, fragment in ((dict(path=None), "path must be a str"), (dict(threads=100_000), "threads must be"),
                             (dict(variant=["fp32"]), "variant must be"), (dict(spinning="yes"), "spinning"),
                             (dict(path=str(export_dir) + "\x00x"), "cannot open it")):
        with pytest.raises(EdgeVAEError, match=fragment):
            edgevae.load(kwargs.pop("path", export_dir), **kwargs)


def test_encode_never_returns_inf(export_dir):
    model = edgevae.load(export_dir)
    x = model.sample(2, seed=0)
    with pytest.raises(EdgeVAEError, match="overflowed float32"):
        model.encode(x, eps=np.full((2, D), 3e38, np.float32))
    with pytest.raises(EdgeVAEError, match="temperature 100 times eps overflows float32"):
        model.encode(x, eps=np.full((2, D), 1e37, np.float32), temperature=100)


def test_one_call_is_bounded_in_what_it_allocates(export_dir):
    model = edgevae.load(export_dir)
    assert model.sample(65_536, seed=0).shape == (65_536, *SHAPE)  # the documented maximum, within the cap
    with pytest.raises(EdgeVAEError, match="images at once is more than"):
        model._budget("sample", 10**6)


def _cli_one_line(r, code=2, fragment=""):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and "Traceback" not in r.stderr and fragment in lines[0], \
        (r.returncode, r.stderr)


def test_cli_refuses_absurd_arguments_in_one_line(export_dir, tmp_path):
    out = str(tmp_path / "g.png")
    _cli_one_line(run_cli("encode", str(export_dir), out, "--out", ""), fragment="must be a file path")
    _cli_one_line(run_cli("sample", str(export_dir), "--nrow", "1000000000", "--out", out), fragment="--nrow")
    _cli_one_line(run_cli("sample", str(export_dir), "--scale", "100000", "--out", out), fragment="pixels")
    _cli_one_line(run_cli("sample", str(export_dir), "--threads", "100000", "--out", out), fragment="threads")
    _cli_one_line(run_cli("traverse", str(export_dir), "--steps", "10000", "--dims", ",".join(["0"] * 60),
                          "--out", out), fragment="pixels")
    _cli_one_line(run_cli("sample", str(export_dir), "--no-such-flag"), fragment="unrecognized arguments")
    _cli_one_line(run_cli("sample", str(export_dir), "--label", "a\nb\x1b[31m", "--out", out),
                  fragment="takes no labels")
    assert not (tmp_path / "g.png").exists()


def test_ctrl_c_is_one_line_and_130(export_dir, monkeypatch, capsys):
    from edgevae import _cli, _model

    monkeypatch.setattr(_model.Model, "sample", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _cli.main(["sample", str(export_dir), "--out", "unused.png"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_during_export_leaves_nothing_and_exits_130(run_dir, tmp_path):
    import signal

    out = tmp_path / "exp"
    # a shell's background job inherits SIGINT ignored, and Python then installs no handler: restore the default
    p = subprocess.Popen([sys.executable, "-m", "edgevae", "export", str(run_dir), "--out", str(out)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = p.stdout.readline()  # "exporting ...": the graphs are being made and verified now
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert first.startswith("exporting") and "wrote" not in stdout, stdout
    assert p.returncode == 130 and stderr == "interrupted: nothing was written\n", (p.returncode, stderr)
    assert list(tmp_path.iterdir()) == []  # no export, no temporary directory


def test_nothing_hangs(export_dir, tmp_path):
    """Every refusal above is quick; here the slowest realistic one, a 1 MiB manifest of nesting, in a thread."""
    d = shutil.copytree(export_dir, tmp_path / "export")
    _manifest_text(d, "[" * (S.MAX_JSON_BYTES // 2) + "]" * (S.MAX_JSON_BYTES // 2))
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(EdgeVAEError, edgevae.load, d)))
    t.start()
    t.join(5)
    assert done, "load took more than 5 s"


def test_padding_and_unused_weights_are_refused(export_dir, tmp_path):
    def padded(m):
        m.doc_string = "x" * (20 << 20)  # 20 MB the runtime would read, hash and hand to onnxruntime for nothing
    _refused(forge(export_dir, tmp_path, padded, name="a"), "bytes besides its weights (at most 16,777,216)")

    def unused(m):
        _const(m, "ballast", np.zeros(1000, np.float32))
    _refused(forge(export_dir, tmp_path, unused, name="b"), "initializer 'ballast' is read by no node")


def test_symbolic_spatial_axes_only_where_the_spec_says_tileable(export_dir):
    from edgevae import _graphcheck, _onnxproto

    model = onnx.load(export_dir / S.DECODER_FILE)
    spec = {**_spec(model), "latent_shape": [1, 2, 2], "latent_dim": 4, "latent_scale": 14}
    _const(model, "flat", np.array([-1, D], np.int64))
    model.graph.node.insert(0, helper.make_node("Reshape", ["z", "flat"], ["z_flat"]))
    next(n for n in model.graph.node if n.op_type == "Gemm").input[0] = "z_flat"
    z = model.graph.input[0].type.tensor_type.shape
    del z.dim[:]
    for d in ("batch", 1, "h", "w"):
        z.dim.add().dim_param = d if isinstance(d, str) else ""
        if not isinstance(d, str):
            z.dim[-1].dim_value = d
    data = model.SerializeToString()
    parsed = _onnxproto.parse(data)
    with pytest.raises(EdgeVAEError, match=r"z must be float32 \[batch, 1, 2, 2\]"):
        _graphcheck.check_graph(parsed, data, "decoder.onnx", "decoder", spec)
    facts = _graphcheck.check_graph(parsed, data, "decoder.onnx", "decoder", {**spec, "tileable": True})
    assert facts.chunk == 1024  # checked at the spec's own sizes, the tile the runtime runs
    with pytest.raises(EdgeVAEError, match="spec tileable must be true"):
        S.check({**spec, "role": "decoder", "variant": "fp32", "tileable": "yes"}, "decoder.onnx")


def test_info_shows_odd_optional_fields_without_failing(export_dir, tmp_path):
    def edit(m):
        spec = _spec(m)
        _set_spec(m, {**spec, "training": {"epochs": [1, 2], "test_neg_elbo": "low", "dataset": {"a": 1}},
                      "parity": {"max_abs_diff": [1], "batch_sizes": "x", "elbo": {"neg_elbo_onnx": "?"}},
                      "arch": "\x1b[31mred\nline", "classes": None})
    d = forge(export_dir, tmp_path, edit)
    manifest = json.loads((d / S.MANIFEST).read_text())
    manifest["variants"]["fp32"]["quality"] = {"psnr_db": "high", "neg_elbo": [1]}
    (d / S.MANIFEST).write_text(json.dumps(manifest))
    r = run_cli("info", str(d))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "test -ELBO low nats/image" in r.stdout and "\x1b" not in r.stdout and "\\x1b[31mred\\nline" in r.stdout


def test_a_compute_bomb_within_the_memory_bounds_is_refused(export_dir, tmp_path):
    """1,600 MatMuls reusing one 64 MB weight: little memory, ~2.7e10 multiply-adds (minutes) per image."""
    def edit(m):
        gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
        _const(m, "wide", np.zeros((D, 4096), np.float32))
        _const(m, "square", np.zeros((4096, 4096), np.float32))
        _const(m, "narrow", np.zeros((4096, D), np.float32))
        nodes = [helper.make_node("MatMul", ["z", "wide"], ["h0"])]
        nodes += [helper.make_node("MatMul", [f"h{i}", "square"], [f"h{i + 1}"]) for i in range(1600)]
        nodes.append(helper.make_node("MatMul", ["h1600", "narrow"], ["z_again"]))
        for offset, node in enumerate(nodes):
            m.graph.node.insert(offset, node)
        gemm.input[0] = "z_again"
    d = forge(export_dir, tmp_path, edit)
    seconds, _, out = _load_in_child(d)  # refused from the protobuf: onnxruntime never sees it
    assert seconds < 5 and "26,843,631,216 multiply-adds (at most 268,435,456 and 25,000,000,000" in out, out
