"""The installed package: one `edgevae` namespace, a CLI that never runs the user's own files, a runtime-only wheel."""
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

import edgevae

EDGEVAE = Path(sysconfig.get_path("scripts")) / "edgevae"  # the console script of this environment


def _trap(directory: Path) -> Path:
    """train.py, export.py and runtime.py of a user's own that leave a mark when anything runs them."""
    mark = directory / "ran.txt"
    for name in ("train", "export", "runtime"):
        (directory / f"{name}.py").write_text(f"open({str(mark)!r}, 'a').write('{name}\\n')\n")
    return mark


def test_cli_in_a_directory_with_its_own_train_export_runtime(run_dir, export_dir, tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    mark = _trap(work)
    r = run_cli("export", str(run_dir), "--out", str(work / "exp"), cwd=work)
    assert r.returncode == 0, r.stderr
    r = run_cli("sample", str(work / "exp"), "--n", "4", "--out", str(work / "g.png"), cwd=work)
    assert r.returncode == 0, r.stderr
    for args in (["train", "--help"], ["verify", "--help"], ["evaluate", "--help"], ["info", str(export_dir)]):
        r = subprocess.run([str(EDGEVAE), *args], cwd=work, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert not mark.exists(), f"the user's own files ran: {mark.read_text()}"
    assert (work / "g.png").is_file()


def test_installed_names_are_one_namespace(tmp_path):
    # In a fresh interpreter outside the repository (pytest's own sys.path holds the repository root).
    code = ("import importlib.util, edgevae, edgevae.train, edgevae.export; "
            "print(edgevae.__file__, edgevae.train.__file__, edgevae.export.__file__); "
            "print([n for n in ('train', 'export', 'runtime') if importlib.util.find_spec(n)])")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    files, found = r.stdout.splitlines()
    assert [Path(f).parent.name for f in files.split()] == ["runtime", "train", "export"]  # the repository folders
    assert found == "[]"  # nothing importable as train, export or runtime


def test_version_is_in_one_place():
    from importlib.metadata import version

    assert version("edgevae") == edgevae.__version__
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools instead of downloading one
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return next(out.glob("edgevae-*.whl"))


def test_wheel_holds_one_namespace(wheel):
    import zipfile

    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"edgevae", f"edgevae-{edgevae.__version__}.dist-info"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgevae/train/loop.py" in names and "edgevae/export/build.py" in names and "edgevae/_model.py" in names


def test_runtime_only_install_generates_without_torch(wheel, export_dir, tmp_path):
    """A fresh virtualenv with the base dependencies alone: the CLI and the API write grids, torch never comes."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "edgevae").is_dir() and not {"train", "export", "runtime", "torch", "onnx"} & {
        p.name for p in site.iterdir()}
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(["edgevae", "sample", str(export_dir), "--n", "16", "--out", "g.png"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "g.png").is_file(), r.stderr
    code = ("import edgevae, sys; m = edgevae.load(sys.argv[1]); edgevae.save_grid(m.sample(4, seed=0), 'api.png'); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnx')))")
    r = subprocess.run(["python", "-c", code, str(export_dir)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]" and (tmp_path / "api.png").is_file(), r.stderr
    # A training-side stage says what to install, in one line, instead of a traceback.
    r = subprocess.run(["edgevae", "train", "--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "pip install" in r.stderr and "edgevae[train]" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # numpy + onnxruntime + Pillow measured ~165 MiB (bench/install_size.py reports it beside the train extra's);
    # torch alone is several times that, so this catches a heavy dependency creeping into the base install.
    base = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    assert base < 250 * 2**20, f"{base / 2**20:.0f} MiB"
