"""Bad files, interrupted exports and fuzzed input: nothing half-written, nothing read outside, one error type."""
import os
import shutil

import numpy as np
import pytest
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edgevae
from edgevae import EdgeVAEError

D, SHAPE = TINY["latent_dim"], (1, TINY["image_size"], TINY["image_size"])
SCALE = int(os.environ.get("EDGEVAE_FUZZ_SCALE", "1"))  # bench/reliability.py runs each property SCALE times longer


def test_interrupted_export_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
    from edgevae.export import build

    real_write = build.Path.write_bytes
    calls = []

    def write_then_die(self, data):
        calls.append(self.name)
        if len(calls) == 2:  # the second graph file: the first is already on disk in the temp dir
            raise KeyboardInterrupt
        return real_write(self, data)

    monkeypatch.setattr(build.Path, "write_bytes", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build.export(run_dir, tmp_path / "exp", log=lambda *_: None)
    assert os.listdir(tmp_path) == []  # no export directory, no temp directory


def test_interrupted_force_export_keeps_the_old_one(run_dir, export_dir, tmp_path, monkeypatch):
    from edgevae.export import build

    old = shutil.copytree(export_dir, tmp_path / "exp")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setattr(build, "_check_written", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build.export(run_dir, old, force=True, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert os.listdir(tmp_path) == ["exp"]


@pytest.fixture(scope="module")
def model(export_dir):
    return edgevae.load(export_dir)


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(z=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)))
def test_decode_fuzz_only_documented_errors(model, z):
    try:
        out = model.decode(z)
    except EdgeVAEError:
        return
    # Accepted: the documented shape, finite real values; output shape, range and determinism hold.
    assert z.ndim == 2 and z.shape[1] == D and z.shape[0] >= 1 and np.isfinite(z.astype(np.float64)).all()
    assert out.shape == (z.shape[0], *SHAPE) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out, model.decode(z))


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.one_of(st.integers(-5, 70_000), st.floats(), st.none(), st.text(max_size=3)),
       seed=st.one_of(st.integers(-(2**65), 2**65), st.none(), st.floats()),
       temperature=st.one_of(st.floats(allow_nan=True), st.integers(-3, 3)))
def test_sample_fuzz_only_documented_errors(model, n, seed, temperature):
    try:
        out = model.sample(n, seed=seed, temperature=temperature)
    except EdgeVAEError:
        return
    assert isinstance(n, int) and 1 <= n <= 65_536 and 0 <= temperature <= 100
    assert out.shape == (n, *SHAPE) and 0.0 <= out.min() and out.max() <= 1.0


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.float16]),
                    shape=st.sampled_from([(1, *SHAPE), (3, *SHAPE), SHAPE, (2, 1, 8, 8), (0, *SHAPE)]),
                    elements=st.floats(-0.5, 1.5, width=16) | st.just(np.nan)))
def test_encode_fuzz_only_documented_errors(model, x):
    try:
        enc = model.encode(x, seed=0)
    except EdgeVAEError:
        return
    assert x.ndim == 4 and x.shape[1:] == SHAPE and 0 <= np.nanmin(x) and np.nanmax(x) <= 1
    assert enc.z.shape == enc.mu.shape == enc.logvar.shape == (x.shape[0], D)
    assert np.isfinite(enc.z).all()


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(st.none(), st.integers(), st.binary(max_size=4), st.text(max_size=12), st.just("EXPORT")),
       threads=st.one_of(st.none(), st.integers(-3, 10**6), st.floats(), st.booleans()),
       variant=st.one_of(st.sampled_from(["fp32", "int8", "fp16"]), st.text(max_size=6), st.none(),
                         st.lists(st.text(max_size=2), max_size=2)),
       expect=st.one_of(st.none(), st.text(max_size=70), st.just("PIN"), st.integers()))
def test_load_arguments_fuzz_only_documented_errors(export_dir, path, threads, variant, expect):
    import hashlib

    pin = hashlib.sha256((export_dir / "manifest.json").read_bytes()).hexdigest()
    path, expect = (str(export_dir) if path == "EXPORT" else path), (pin if expect == "PIN" else expect)
    try:
        model = edgevae.load(path, threads=threads, variant=variant, expect_sha256=expect)
    except EdgeVAEError:
        return
    assert path == str(export_dir) and variant == "fp32" and expect in (None, pin)
    assert model.sample(2, seed=0).shape == (2, *SHAPE)


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=hnp.arrays(np.float32, st.sampled_from([(D,), (1, D), SHAPE, (D + 1,), (2, D)]),
                    elements=st.floats(-5, 5, width=32) | st.just(np.inf)),
       steps=st.one_of(st.integers(-2, 12), st.floats(), st.just(10**6)),
       method=st.one_of(st.sampled_from(["lerp", "slerp"]), st.text(max_size=5)),
       dim=st.one_of(st.integers(-2, D + 1), st.floats()), span=st.one_of(st.floats(), st.integers(-1, 5)))
def test_paths_fuzz_only_documented_errors(model, a, steps, method, dim, span):
    for call in (lambda: model.interpolate(a, -a, steps, method), lambda: model.traverse(dim, steps=steps, span=span),
                 lambda: model.traverse(dim, values=a.ravel()[:8], z=np.zeros(D))):
        try:
            out = call()
        except EdgeVAEError:
            continue
        assert out.ndim == 4 and out.shape[1:] == SHAPE and 0 <= out.min() and out.max() <= 1


@settings(max_examples=100 * SCALE, deadline=None)
@given(seed=st.one_of(st.integers(-1, 2**65), st.floats(), st.none()),
       shape=st.one_of(st.integers(-2, 300), st.floats(), st.none(), st.text(max_size=2),
                       st.lists(st.integers(-1, 70), max_size=4), st.just((10**5, 10**5))))
def test_noise_fuzz_only_documented_errors(seed, shape):
    try:
        eps = edgevae.standard_normal(seed, shape)
    except EdgeVAEError:
        return
    assert eps.dtype == np.float32 and np.isfinite(eps).all()
    assert eps.shape == ((shape,) if isinstance(shape, int) else tuple(shape))


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=hnp.arrays(st.sampled_from([np.float32, np.float64, np.uint8]),
                         hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=5)),
       nrow=st.one_of(st.none(), st.integers(-1, 10**9), st.floats()), scale=st.one_of(st.integers(-1, 10**6),
                                                                                       st.floats()))
def test_grid_fuzz_only_documented_errors(tmp_path, images, nrow, scale):
    try:
        path = edgevae.save_grid(images, tmp_path / "grid.png", nrow=nrow, scale=scale)
    except EdgeVAEError:
        return
    assert path.stat().st_size > 0


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


@pytest.mark.slow
def test_load_many_threads_for_a_minute(export_dir):
    """8 threads call sample/encode/decode for 60 s: no error, outputs equal serial calls, RSS flat."""
    import threading
    import time

    model = edgevae.load(export_dir)
    x = model.sample(16, seed=99)
    jobs = {("sample", s): (lambda s=s: model.sample(8, seed=s)) for s in range(16)}
    jobs.update({("encode", s): (lambda s=s: model.encode(x, seed=s).z) for s in range(16)})
    jobs.update({("decode", s): (lambda s=s: model.decode(edgevae.standard_normal(s, (32, D)))) for s in range(16)})
    expected = {key: fn() for key, fn in jobs.items()}
    keys = list(jobs)
    for _ in range(3):  # warm up allocator arenas before the baseline
        for fn in jobs.values():
            fn()
    rss_before, stop, errors, counts = _rss_bytes(), time.monotonic() + 60, [], [0] * 8

    def worker(i):
        k = i
        while time.monotonic() < stop:
            key = keys[k % len(keys)]
            try:
                if not np.array_equal(jobs[key](), expected[key]):
                    errors.append(f"{key}: differs from the serial call")
            except Exception as e:  # noqa: BLE001 - any exception is a failure to report
                errors.append(f"{key}: {e!r}")
            k += 7
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    growth = _rss_bytes() - rss_before
    print(f"load: {sum(counts)} calls from 8 threads in 60 s, 0 errors expected, {len(errors)} seen; "
          f"RSS change {growth / 2**20:+.1f} MiB")
    assert not errors, errors[:5]
    # A leak of even one output per call would add ~GBs here; allow allocator noise of 32 MiB.
    assert growth < 32 * 2**20
