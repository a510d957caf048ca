"""Training speed: our in-memory trainer against the pytorch/examples VAE recipe, side by side in one run.

    python bench/train_speed.py --data ../shared/data/mnist --repeats 3 --results bench/RESULTS.md

Both train the pytorch/examples model -- a 784-400-20 MLP VAE, batch 128, Adam at 1e-3 -- for one epoch
over MNIST's 60,000 training images, and report training images per second (the epoch's training
steps only; no evaluation, no start-up). Runs alternate (recipe, ours, recipe, ours, ...) so a busy
machine slows both alike; the table gives the median of --repeats runs of each.

    recipe   pytorch/examples vae/main.py on CPU: a torchvision-style MNIST Dataset (one PIL image per
             item, then ToTensor), DataLoader(batch_size=128, shuffle=True) with the default collate
             and num_workers=0 (the example passes workers only for CUDA), sigmoid + binary cross
             entropy (sum) + KL, torch.optim.Adam defaults.
    ours     train.loop.train: the whole uint8 set in memory batched by index, BCE from logits,
             fused Adam; images/s as it writes to metrics.jsonl (train_images_per_second).
    recipe step, in-memory batches   the recipe's model and step fed by our batching: how much of
             the difference is the input pipeline and how much the step.

Every number in the table and in bench/RESULTS.md's section comes from this run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgevae.train.config import TrainConfig
from edgevae.train.idx import idx_directory
from edgevae.train.loop import train

BATCH, HIDDEN, LATENT, LR = 128, 400, 20, 1e-3  # the pytorch/examples VAE and its defaults


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py's model, as written there."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = pixels
        self.fc1, self.fc21, self.fc22 = nn.Linear(pixels, HIDDEN), nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.fc3, self.fc4 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, pixels)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, self.pixels)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(logvar) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_loss(recon_x, x, mu, logvar, pixels):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, pixels), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class PerItemMNIST(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST + transforms.ToTensor() do per item (torchvision has no CPU wheel here)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.data, self.targets = images[:, 0], labels  # (N, H, W) uint8, as torchvision stores them

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        img, target = Image.fromarray(self.data[index].numpy()), int(self.targets[index])  # mode "L"
        w, h = img.size
        tensor = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(h, w, 1).permute(2, 0, 1).contiguous()
        return tensor.to(torch.float32).div(255), target  # ToTensor


def _example_epoch(batches, pixels: int, test_x: torch.Tensor) -> tuple[float, float]:
    """(images per second of the recipe's training loop over `batches`, its test loss after the epoch).

    The test loss is pytorch/examples' test(): BCE (sum) + KL with a sampled z, averaged per image.
    """
    torch.manual_seed(0)
    model = ExampleVAE(pixels)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    seen, start = 0, time.perf_counter()
    for x, _ in batches:
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        example_loss(recon, x, mu, logvar, pixels).backward()
        optimizer.step()
        seen += len(x)
    rate = seen / (time.perf_counter() - start)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(test_x), 1000):
            x = test_x[i:i + 1000].float().div(255)
            recon, mu, logvar = model(x)
            total += example_loss(recon, x, mu, logvar, pixels).item()
    return rate, total / len(test_x)


def recipe(data) -> tuple[float, float]:
    loader = torch.utils.data.DataLoader(PerItemMNIST(data.train_x, data.train_y), batch_size=BATCH, shuffle=True)
    return _example_epoch(loader, data.train_x[0].numel(), data.test_x)


def recipe_in_memory(data) -> tuple[float, float]:
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
    batches = ((data.train_x[order[i:i + BATCH]].float().div_(255), None) for i in range(0, len(order), BATCH))
    return _example_epoch(batches, data.train_x[0].numel(), data.test_x)


def ours(data_dir: str, work: Path, i: int) -> tuple[float, float]:
    """(training images per second, test negative ELBO per image after the epoch), from metrics.jsonl."""
    config = TrainConfig(data=data_dir, out=str(work / f"ours{i}"), hidden=(HIDDEN,), latent_dim=LATENT,
                         batch_size=BATCH, lr=LR, epochs=1, val_fraction=0, seed=i)
    out = train(config)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return row["train_images_per_second"], row["test_neg_elbo"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(C.ROOT.parent / "shared" / "data" / "mnist"), help="MNIST IDX directory")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per trainer (median reported)")
    C.add_results_flag(parser)
    args = parser.parse_args(argv)
    data = idx_directory(args.data)
    results = {"pytorch/examples recipe (DataLoader, per-item PIL + ToTensor)": [],
               "ours: train.loop.train (in-memory uint8, batched by index)": [],
               "recipe step on in-memory batches (attribution)": []}
    names = list(results)
    with tempfile.TemporaryDirectory() as work:
        for i in range(args.repeats):
            results[names[0]].append(recipe(data))
            results[names[1]].append(ours(args.data, Path(work), i))
            results[names[2]].append(recipe_in_memory(data))
            print(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{v[-1][0]:,.0f}" for v in results.values()))
    base = [rate for rate, _ in results[names[0]]]
    table = ["| trainer | images/s (median) | runs | test -ELBO after the epoch (median) "
             "| vs recipe (median of per-repeat ratios) |",
             "| --- | ---: | --- | ---: | ---: |"]
    losses = {}
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        losses[name] = statistics.median(loss for _, loss in runs)
        ratio = statistics.median(x / b for x, b in zip(rates, base))  # neighbours in time share the machine's load
        table.append(f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} | "
                     f"{losses[name]:.2f} | {ratio:.2f}x |")
    change = losses[names[1]] / losses[names[0]] - 1
    verdict = (f"Test loss after one epoch: ours {losses[names[1]]:.2f} vs the recipe's {losses[names[0]]:.2f} "
               f"nats per image ({change:+.1%}; goal: within ±1%).")
    text = "\n".join([
        f"784-400-20 MLP VAE, batch {BATCH}, Adam lr {LR}, one epoch over {len(data.train_x):,} MNIST images per run, "
        f"runs alternated, median of {args.repeats}; torch threads {torch.get_num_threads()}.",
        "", *table, "", verdict])
    print("\n" + "\n".join(table) + "\n" + verdict)
    C.write_section("train_speed", "Training speed: in-memory trainer vs the pytorch/examples DataLoader recipe",
                    text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
