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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
