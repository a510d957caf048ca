"""`edgevae train`'s main() in-process (the subprocess path is in test_cli.py): --resume from the saved
config, one-line errors; and export/ takes what train/ now builds (a conv VAE whose decoder output is the
continuous Bernoulli's mean)."""
import dataclasses
import json
import shutil
import socket

from edgevae.train.__main__ import main
from edgevae.train.config import TrainConfig


def _cli(capsys, *argv):
    """(exit code, stdout, stderr) of `edgevae train ARGV`, run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(result, *fragments):
    code, _, err = result
    lines = err.strip().splitlines()
    assert code != 0 and lines and "Traceback" not in err
    assert all(f in lines[-1] for f in fragments), err

FLAGS = ["--data=shapes", "--num-train=96", "--num-test=32", "--image-size=16", "--hidden=16", "--latent-dim=2",
         "--batch-size=32"]


def test_resume_needs_only_out_and_the_new_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(capsys, *FLAGS, "--epochs=1", f"--out={run}")[0] == 0
    code, out, err = _cli(capsys, f"--out={run}", "--epochs=2", "--resume")
    assert code == 0, err
    assert "num_train=96" in out and "resuming" in out and "epoch   2/2" in out
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    _one_line_error(_cli(capsys, f"--out={run}", "--epochs=3", "--resume", "--lr=0.5"),
                    "cannot resume with a different config", "--lr 0.5")
    before = (run / "checkpoint.pt").read_bytes()
    _one_line_error(_cli(capsys, f"--out={run}", "--epochs=1", "--resume"),  # --epochs is the new total, not more
                    "cannot resume", "has 2 epoch(s) done and --epochs is 1", "pass more than 2")
    code, out, err = _cli(capsys, f"--out={run}", "--epochs=2", "--resume")  # a finished run: nothing to do
    assert code == 0 and "nothing to do" in out and "already has 2 of 2 epochs" in out, err
    assert (run / "checkpoint.pt").read_bytes() == before  # and the run is left as it was
    copy = tmp_path / "copy"  # a run directory copied elsewhere resumes there, writing only the copy
    shutil.copytree(run, copy)
    code, out, err = _cli(capsys, f"--out={copy}", "--epochs=3", "--resume")
    assert code == 0 and "epoch   3/3" in out, err
    assert [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)
    assert (run / "checkpoint.pt").read_bytes() == before


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("1,2\n")
    _one_line_error(_cli(capsys, "--data", str(tmp_path / "x.csv")), "--data must be", "not .npz or .npy")
    _one_line_error(_cli(capsys, "--out", str(tmp_path / "none"), "--resume"), "no checkpoint to resume")
    _one_line_error(_cli(capsys, "--binarize", "--likelihood", "gaussian"), "--binarize needs")
    _one_line_error(_cli(capsys, "--iwae-k", "5", "--beta", "2"), "--iwae-k > 1 needs")
    _one_line_error(_cli(capsys, *FLAGS, "--arch=conv", "--conv-channels=4,4,4,4,4", f"--out={tmp_path / 'c'}"),
                    "needs image sides divisible by 32")
    with socket.socket() as s:  # a local port nothing listens on: the downloader's "offline" path
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _one_line_error(_cli(capsys, "--data=mnist", f"--data-root={tmp_path}", f"--mirror=http://127.0.0.1:{port}/"),
                    "cannot download train-images-idx3-ubyte.gz", "offline?")


def test_conv_continuous_bernoulli_run_exports_with_parity(tmp_path):
    from edgevae.export.build import export
    from edgevae.train.loop import train

    run = train(TrainConfig(data="shapes", num_train=640, num_test=32, image_size=16, conv_channels=(4, 8),
                            latent_dim=2, epochs=6, batch_size=32, arch="conv", likelihood="continuous-bernoulli",
                            out=str(tmp_path / "run")))
    out = export(run, tmp_path / "exp", log=lambda *_: None)  # export verifies parity <= 1e-5 itself, or raises
    spec = json.loads((out / "manifest.json").read_text())
    assert set(spec["files"]) == {"encoder.onnx", "decoder.onnx"}


def test_help_lists_every_config_field(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in out


def test_readme_documents_every_training_flag():
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Command line"):text.index("## The two graphs")]
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f"`--{f.name.replace('_', '-')}`" not in section]
    assert not missing, f"README's Command line table lacks {missing}"


def test_a_spatial_latent_says_what_its_samples_will_be(tmp_path, capsys):
    # a spatial latent without a fitted prior (binary-like images get none) has samples unlike the images: the run
    # says so once, and what fits one
    flags = [f for f in FLAGS if not f.startswith(("--hidden", "--latent-dim"))]
    code, out, err = _cli(capsys, *flags, "--arch=resnet", "--widths=4,8", "--latent-channels=2", "--epochs=1",
                          f"--out={tmp_path / 'run'}")
    assert code == 0, err
    assert out.count("a spatial latent (2x8x8) without a fitted prior: its prior samples will not look like your "
                     "images; --prior-fit mixture fits one (to a latent of at most 2,048 numbers)") == 1
