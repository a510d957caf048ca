"""Quality: the recipe's test NLL (importance-weighted, k = 5000) beside the IWAE paper's Table 1.

    python bench/quality.py                                   # MNIST at ../shared/data/mnist, 30 minutes, 2 cores
    python bench/quality.py --fashion-data ../shared/data/fashion-mnist   # Fashion-MNIST after it
    python bench/quality.py --parallel                        # the datasets at once, the cores shared out
    python bench/quality.py --reuse                           # keep rows measured before (same recipe, data, k)

Protocol, per dataset: train RECIPE (below; the same flags work with `edgevae train`) on all 60,000
training images (no validation hold-out, as in the paper) for --minutes of wall clock (everything the
training call does: loading, per-epoch evaluation, checkpoints), then `edgevae evaluate RUN --k 5000
--checkpoint last`: the importance-weighted NLL with 5000 samples on all 10,000 test images, binarized
once with the seed train/evaluate.py documents (the paper evaluates on dynamically binarized MNIST).
Each dataset runs in a child process (its log in WORK/NAME/log.txt); its row is saved in
WORK/NAME/quality.json, and the table in bench/RESULTS.md is built from the rows of this invocation.
The evaluation's time is measured and reported too: k = 5000 decoder passes per test image is 50
million passes of the recipe's convolutional decoder.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: E402

# The recipe: a one-stochastic-layer VAE of the residual family (train/resnet.py) with dynamic binarization,
# trained on the ELBO for a wall-clock budget with the cosine schedule spread over it. Its decoder is small
# (8, 16, 32 channels at 28, 14, 7 pixels) because the k = 5000 evaluation runs it 50 million times.
# GroupNorm in its blocks (--norm group), as measured: MNIST's digits are black and white, so the colour that
# GroupNorm divides away (train/resnet.py) is not at stake, and the figures in RESULTS.md are this recipe's.
RECIPE = dict(model="vae", arch="resnet", widths=(8, 16, 32), latent_dim=50, likelihood="bernoulli",
              binarize=True, batch_size=64, lr=2e-3, schedule="cosine", val_fraction=0.0, eval_every=10, seed=0,
              norm="group")
MINUTES = 30.0  # training budget per dataset
EPOCHS = 100_000  # a cap the budget always reaches first
FASHION_EPOCHS = EPOCHS
PUBLISHED = (  # Burda, Grosse & Salakhutdinov (2015), Table 1: dynamically binarized MNIST, NLL with k = 5000
    ("VAE, 1 stochastic layer (k = 1)", 86.76),
    ("VAE, 2 stochastic layers (k = 1)", 85.33),
    ("IWAE, 1 stochastic layer, k = 50", 84.78),
    ("IWAE, 2 stochastic layers, k = 50", 82.90),
)
PUBLISHED_EPOCHS = 3280
TEST_IMAGES = 10_000  # MNIST's and Fashion-MNIST's test sets


def recipe_flags(recipe: dict = RECIPE) -> str:
    """The recipe as `edgevae train` flags."""
    from edgevae.train.config import TrainConfig

    defaults, parts = TrainConfig(), []
    for key, value in recipe.items():
        if value == getattr(defaults, key) and key not in ("model", "arch", "latent_dim", "batch_size", "lr",
                                                           "likelihood"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def _trained_minutes(out: Path, config) -> float:
    """The training minutes of the finished run in `out`, from its log; SystemExit unless it is `config`'s run."""
    import dataclasses

    import torch

    saved = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("resume", "device")}
    def same(a, b) -> bool:
        return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b

    differ = [k for k, v in wanted.items()
              if k in (*RECIPE, "minutes", "data") and k in saved and not same(v, saved[k])]
    budget = re.findall(r"time budget of .* reached: stopped after epoch \d+ \(\d+ steps, (\d+) s\)",
                        (out / "log.txt").read_text(errors="replace"))
    if differ or not budget:
        raise SystemExit(f"{out}: not a finished run of this recipe and budget ({', '.join(differ) or 'no budget line'}"
                         f"); train it without --trained")
    return int(budget[-1]) / 60


def child(name: str, data: str, epochs: int, work: Path, k: int, test_limit: int, threads: int,
          minutes: float = MINUTES, trained: bool = False) -> dict:
    """Train and evaluate one dataset in this process; returns (and saves) its row."""
    import torch

    from edgevae.train.config import TrainConfig
    from edgevae.train.evaluate import EvalConfig, evaluate_run
    from edgevae.train.loop import train

    torch.set_num_threads(threads)
    out = work / name
    config = TrainConfig(**RECIPE, data=data, epochs=epochs, out=str(out), minutes=minutes)
    if trained:  # evaluate the run an earlier invocation trained, if it is this recipe's run with this budget
        train_minutes = _trained_minutes(out, config)
        print(f"{name}: evaluating the run trained earlier in {out} ({train_minutes:.1f} minutes of training)",
              flush=True)
    else:
        start = time.perf_counter()
        train(config)
        train_minutes = (time.perf_counter() - start) / 60
    start = time.perf_counter()
    result = evaluate_run(out, EvalConfig(k=k, checkpoint="last", limit=test_limit, threads=threads))
    epochs = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]  # reached within the budget
    row = {"name": name, "data": data, "epochs": epochs, "minutes": minutes, "recipe": recipe_flags(),
           "test_limit": test_limit,
           "threads": threads, "train_minutes": train_minutes,
           "eval_minutes": (time.perf_counter() - start) / 60,
           "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           **{key: result[key] for key in ("nll", "nll_stderr", "neg_elbo", "kl", "active_units", "latent_dim",
                                           "test_images", "test_data", "k")}}
    (out / "quality.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def run_children(jobs: list[tuple[str, str, int]], args, threads: int) -> list[dict]:
    """Start one child process per job (all at once with --parallel), wait, return their rows in job order."""
    work = Path(args.work)
    started, reused = [], {}
    for name, data, epochs in jobs:
        (work / name).mkdir(parents=True, exist_ok=True)
        if args.reuse and (row := _saved(work / name / "quality.json", data, epochs, args)):
            print(f"{name}: reusing {work / name / 'quality.json'} (same recipe, data, epochs, k)", flush=True)
            reused[name] = row
            continue
        command = [sys.executable, __file__, "--child", name, "--data", data, "--epochs", str(epochs),
                   *(["--trained"] if args.trained else []),
                   "--minutes", str(args.minutes),
                   "--work", str(work), "--k", str(args.k), "--test-limit", str(args.test_limit),
                   "--threads", str(threads)]
        print(f"{name}: {'evaluating the run trained' if args.trained else 'training'} {args.minutes:g} minutes "
              f"(at most {epochs} epochs) on {data} ({threads} thread(s)); "
              f"log {work / name / 'log.txt'}",
              flush=True)
        with (work / name / "log.txt").open("a" if args.trained else "w") as log:  # the child writes through its copy
            started.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=C.ROOT)))
        if not args.parallel:
            started[-1][1].wait()
    for name, process in started:
        if process.wait() != 0:
            raise RuntimeError(f"{name} failed; see {work / name / 'log.txt'}")
    rows = [reused.get(name) or json.loads((work / name / "quality.json").read_text()) for name, _, _ in jobs]
    for row in rows:
        print(f"{row['name']}: test NLL {row['nll']:.2f} ± {row['nll_stderr']:.2f} nats", flush=True)
    return rows


def _saved(path: Path, data: str, epochs: int, args) -> dict | None:
    """The row an earlier run of this script saved, if it measured exactly what this one would."""
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    same = (row.get("data"), row.get("minutes"), row.get("recipe"), row.get("k"), row.get("test_limit"))
    return row if same == (data, args.minutes, recipe_flags(), args.k, args.test_limit) else None


def section(rows: list[dict], args) -> str:
    """The Markdown table and notes for RESULTS.md."""
    header = ["model", "data", f"test NLL, k = {args.k} (nats)", "test -ELBO", "active units", "epochs",
              "training minutes", "evaluation minutes"]
    table = [[f"this recipe ({r['threads']} thread(s))", r["name"], f"**{r['nll']:.2f}** ± {r['nll_stderr']:.2f}",
              f"{r['neg_elbo']:.2f}", f"{r['active_units']} of {r['latent_dim']}", r["epochs"],
              f"{r['train_minutes']:.1f}", f"{r['eval_minutes']:.1f}"] for r in rows]
    table += [[f"Burda et al. (2015) Table 1: {what}", "MNIST", f"{nll:.2f}", "", "", f"{PUBLISHED_EPOCHS:,}", "", ""]
              for what, nll in PUBLISHED]
    test = rows[0]
    subset = [_subset_note(r, Path(args.work)) for r in rows] if args.test_limit else []
    notes = [
        f"Recipe: `edgevae train --data DIR {recipe_flags()} --minutes {args.minutes:g} --epochs {args.epochs} "
        f"--out RUN` (the budget ends training; epochs is how many it reached), then "
        f"`edgevae evaluate RUN --k {args.k} --checkpoint last`. Training minutes include loading, the "
        "per-epoch evaluations and checkpoints; evaluation minutes are the k-sample NLL on the test images evaluated.",
        f"Test set: {test['test_images']:,} images, {test['test_data']} (train/evaluate.py's BINARIZATION_SEED); "
        "± is the standard error across test images. The published numbers are for dynamically binarized "
        "MNIST; there are none for Fashion-MNIST.",
        "Datasets trained " + ("at the same time, one per core" if args.parallel else "one after the other") + "."
        + (" Evaluated with --trained: the runs an earlier invocation of this script trained (training minutes from "
           "its log), evaluated by this one." if args.trained else "")
        + (f" Only the first {args.test_limit:,} test images are evaluated (--test-limit): k = {args.k} passes of "
           f"the decoder per image take ~1.4 s per image on 2 cores here, ~4 hours for all 10,000."
           if args.test_limit else "")
        + (" With --reuse, a row measured by an earlier run of this script with the same recipe, data, epochs "
           "and k is kept: " + ", ".join(f"{r['name']} measured {r['measured']}" for r in rows) if args.reuse else ""),
        *(n for n in subset if n),
    ]
    return C.table(header, table) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def _subset_note(row: dict, work: Path) -> str:
    """How a --test-limit subset compares with the whole test set: the training loop's last -ELBO on all test
    images (its own binarization, k = 1) beside the subset's, and the NLL estimate that difference implies."""
    metrics = work / row["name"] / "metrics.jsonl"
    if not metrics.is_file():
        return ""
    last = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()][-1]
    full, part = last["test_neg_elbo"], row["neg_elbo"]
    return (f"{row['name']}: on all {TEST_IMAGES:,} test images the training loop's last evaluation (epoch "
            f"{last['epoch']}, k = 1, its own binarization) gives -ELBO {full:.2f}; on the {row['test_images']:,} "
            f"evaluated here it is {part:.2f}, so these images are {full - part:+.2f} nats easier than the whole set, "
            f"and the whole set's NLL is estimated at {row['nll']:.2f} + {full - part:.2f} = "
            f"**{row['nll'] + full - part:.2f}** nats (an estimate: the subset's gap in the ELBO taken for its gap "
            f"in the NLL).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(C.ROOT.parent / "shared" / "data" / "mnist"), help="MNIST IDX directory")
    parser.add_argument("--fashion-data", default="", help="Fashion-MNIST IDX directory (default: skipped)")
    parser.add_argument("--minutes", type=float, default=MINUTES, help="training budget per dataset (wall clock)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="MNIST training epochs at most")
    parser.add_argument("--fashion-epochs", type=int, default=FASHION_EPOCHS, help="Fashion-MNIST epochs at most")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate the first N test images (0 = all)")
    parser.add_argument("--work", default=str(C.ROOT / "runs" / "quality"), help="run directories go here")
    parser.add_argument("--parallel", action="store_true", help="train the datasets at once, one core each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per child (0 = cores, or cores / "
                                                               "datasets with --parallel)")
    parser.add_argument("--reuse", action="store_true", help="keep a dataset's row from an earlier run of this "
                                                             "script when recipe, data, epochs and k are the same")
    C.add_results_flag(parser)
    parser.add_argument("--trained", action="store_true", help="evaluate the runs in WORK an earlier invocation "
                                                               "trained (same recipe and budget) without training")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.epochs, Path(args.work), args.k, args.test_limit, args.threads,
              args.minutes, args.trained)
        return 0
    jobs = [(name, path, epochs) for name, path, epochs in (("MNIST", args.data, args.epochs),
                                                           ("Fashion-MNIST", args.fashion_data, args.fashion_epochs))
            if path]
    cores = os.cpu_count() or 1
    threads = args.threads or (max(1, cores // len(jobs)) if args.parallel else cores)
    print(f"recipe: {recipe_flags()}")
    rows = run_children(jobs, args, threads)
    body = section(rows, args)
    print("\n" + body)
    C.write_section("quality", "Quality: test NLL against the IWAE paper (Burda et al. 2015, Table 1)", body,
                    args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
