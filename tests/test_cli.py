"""The three CLIs end to end in fresh processes, as a user runs them, and their one-line errors."""
import hashlib
import json
import re

from conftest import TINY, run_cli


def test_train_export_sample_end_to_end(tmp_path):
    run, exp = tmp_path / "run", tmp_path / "exp"
    flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    r = run_cli("train", *flags, "--epochs=1", f"--out={run}")
    assert r.returncode == 0, r.stderr
    assert "config: data=shapes" in r.stdout and f"wrote {run / 'checkpoint.pt'}" in r.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1] and {"train_loss", "test_neg_elbo", "test_kl"} <= rows[0].keys()
    assert (run / "samples" / "epoch_001.png").exists()

    r = run_cli("export", str(run), "--out", str(exp))
    assert r.returncode == 0, r.stderr
    assert "verified: onnx.checker ok, no random op" in r.stdout and f"wrote {exp / 'encoder.onnx'}" in r.stdout

    digests = []
    for i, seed in enumerate((0, 0, 1)):
        r = run_cli("sample", str(exp), "--n", "16", "--seed", str(seed), "--out", str(tmp_path / f"{i}.png"))
        assert r.returncode == 0, r.stderr
        assert f"wrote {tmp_path / f'{i}.png'} (16 samples, seed {seed}" in r.stdout
        digests.append(hashlib.sha256((tmp_path / f"{i}.png").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]

    r = run_cli("info", str(exp))
    assert r.returncode == 0 and "latent      4" in r.stdout
    assert re.search(r"trained on  shapes, (best|checkpoint)\.pt of epoch 1, test -ELBO [\d.]+ nats/image", r.stdout)


def _one_line_error(r, *fragments):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) >= 1
    assert all(f in lines[-1] for f in fragments), r.stderr


def test_errors_are_one_line(tmp_path, export_dir):
    _one_line_error(run_cli("sample", str(tmp_path / "missing")), "no such directory")
    _one_line_error(run_cli("sample", str(export_dir), "--n", "0"), "n must be an int")
    _one_line_error(run_cli("sample", str(export_dir), "--out", str(tmp_path / "x" / "y.png")),
                    "cannot write")
    _one_line_error(run_cli("export", str(tmp_path), "--out", str(tmp_path / "e")), "no best.pt or checkpoint.pt")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "best.pt").write_bytes(b"not a checkpoint at all")
    _one_line_error(run_cli("export", str(garbage), "--out", str(tmp_path / "e")), "not a readable EdgeVAE checkpoint")
    _one_line_error(run_cli("verify", str(garbage), str(export_dir), "--batch-sizes", "-1"),
                    "--batch-sizes must be comma-separated ints >= 1")
    _one_line_error(run_cli("train", "--data", str(tmp_path / "nope")), "--data must be 'shapes'")
    _one_line_error(run_cli("train", "--latent-dim", "-1"), "--latent-dim must be >= 0")
    _one_line_error(run_cli("train", "--no-such-flag"), "unrecognized arguments")


def _pngs(export_dir, tmp_path, n=3):
    import edgevae

    images = edgevae.load(export_dir).sample(n, seed=11)
    return [_save_single(image, tmp_path / f"in{i}.png") for i, image in enumerate(images)]


def _save_single(image, path):
    from PIL import Image

    import edgevae

    Image.fromarray(edgevae.to_uint8(image)[0]).save(path)
    return path


def test_encode_writes_npy_and_json(export_dir, tmp_path):
    import numpy as np

    import edgevae

    paths = _pngs(export_dir, tmp_path)
    r = run_cli("encode", str(export_dir), *map(str, paths), "--out", str(tmp_path / "lat.npy"))
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'lat.npy'} (mu 3x{TINY['latent_dim']}) and {tmp_path / 'lat.json'}" in r.stdout
    mu = np.load(tmp_path / "lat.npy")
    record = json.loads((tmp_path / "lat.json").read_text())
    want = edgevae.load(export_dir).encode(edgevae.load_images(paths, (1, 28, 28)), seed=0)
    assert np.array_equal(mu, want.mu)
    assert [e["file"] for e in record["images"]] == list(map(str, paths))
    assert np.allclose([e["z"] for e in record["images"]], want.z, atol=1e-7)  # JSON float round trip
    r = run_cli("encode", str(export_dir), str(paths[0]), "--sampled", "--seed", "4",
                "--out", str(tmp_path / "z.npy"))
    want = edgevae.load(export_dir).encode(edgevae.load_images(paths[:1], (1, 28, 28)), seed=4).z
    assert r.returncode == 0 and np.array_equal(np.load(tmp_path / "z.npy"), want)


def test_reconstruct_wraps_many_images_in_rows_of_inputs_above_their_reconstructions(export_dir, tmp_path):
    import numpy as np
    from PIL import Image

    import edgevae

    paths = _pngs(export_dir, tmp_path, n=11)
    r = run_cli("reconstruct", str(export_dir), *map(str, paths), "--out", str(tmp_path / "rec.png"))
    assert r.returncode == 0, r.stderr
    assert "11 inputs, 8 a row, each row of inputs above its reconstructions" in r.stdout
    grid = np.asarray(Image.open(tmp_path / "rec.png"))
    assert grid.shape == (4 * 30 + 2, 8 * 30 + 2)  # 8 columns; inputs 1-8, their outputs, inputs 9-11, outputs
    model = edgevae.load(export_dir)
    x = edgevae.load_images(paths, model.image_shape)
    cell = lambda row, col: grid[2 + 30 * row:30 * (row + 1), 2 + 30 * col:30 * (col + 1)]  # noqa: E731
    assert np.array_equal(cell(2, 1), edgevae.to_uint8(x[9])[0])  # input 10: third row, second column
    assert np.array_equal(cell(3, 1), edgevae.to_uint8(model.reconstruct(x[9:10]))[0, 0])  # its reconstruction
    assert not cell(3, 3).any()  # the last row's empty cells are blank


def test_reconstruct_interpolate_traverse_info(export_dir, export_dir_2d, tmp_path):
    from PIL import Image

    paths = _pngs(export_dir, tmp_path)
    cases = [
        (["reconstruct", *map(str, paths)], "rec.png", (3 * 30 + 2, 2 * 30 + 2)),  # 3 columns, 2 rows
        (["interpolate", "seed:1", "seed:2", "--steps", "6", "--method", "slerp"], "int.png", (6 * 30 + 2, 32)),
        (["interpolate", str(paths[0]), str(paths[1])], "int2.png", (10 * 30 + 2, 32)),
        (["traverse", "--dims", "0,3", "--steps", "5"], "trav.png", (5 * 30 + 2, 2 * 30 + 2)),
    ]
    for args, name, size in cases:
        r = run_cli(args[0], str(export_dir), *args[1:], "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"wrote {tmp_path / name}")
        with Image.open(tmp_path / name) as im:
            assert im.size == size, args
    r = run_cli("manifold", str(export_dir_2d), "--steps", "4", "--out", str(tmp_path / "m.png"))
    assert r.returncode == 0, r.stderr
    r = run_cli("info", str(export_dir))
    assert r.returncode == 0
    for fragment in ("latent      4", "variant     fp32 (loaded): encoder.onnx ", "ops         decoder: Clip, Gemm",
                     "parity      max"):
        assert fragment in r.stdout
    r = run_cli("info", str(export_dir), "--json")
    specs = json.loads(r.stdout)
    assert specs["encoder"]["latent_dim"] == specs["decoder"]["latent_dim"] == TINY["latent_dim"]


def test_runtime_cli_errors_are_one_line(export_dir, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    _one_line_error(run_cli("encode", str(export_dir), str(tmp_path / "bad.png")),
                    "bad.png: not a readable image")
    _one_line_error(run_cli("interpolate", str(export_dir), "seed:x", "seed:2"), "expected seed:<int>")
    _one_line_error(run_cli("manifold", str(export_dir)), "needs a 2-D latent")
    _one_line_error(run_cli("traverse", str(export_dir), "--dims", "9"), "dim must be an int in [0, 3]")
    _one_line_error(run_cli("sample", str(export_dir), "--temperature", "nan"), "temperature must be")
    image = _pngs(export_dir, tmp_path, n=1)[0]
    _one_line_error(run_cli("encode", str(export_dir), str(image),
                            "--out", str(tmp_path / "missing" / "x.npy")), "cannot write", "missing/x.")
    _one_line_error(run_cli("encode", str(export_dir), str(tmp_path / "nope.png")),
                    "nope.png: no such file")
