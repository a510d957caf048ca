"""Download MNIST and Fashion-MNIST from their canonical locations, verified by sha256.

    edgevae download mnist --root data        # or just: edgevae train --data mnist
    edgevae download fashion-mnist --root data --mirror http://127.0.0.1:8000/

Files land in ROOT/NAME/ as the four standard .gz files, written atomically (temp file + rename).
The sha256 checked is that of the *decompressed* IDX bytes: mirrors re-compress the same content
(the gzip bytes differ, the images do not), and what must be right is the images. A file already
present is verified, not downloaded again; one that does not verify is an error, never overwritten.
Mirrors are tried in order; when all fail (offline, say), the error names the URLs and where to put
the files by hand.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import sys
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgevae.errors import argument_parser, one_line

from .files import open_regular

TIMEOUT = 30.0  # seconds per connection attempt / read
MAX_DOWNLOAD = 64 << 20  # bytes of one .gz file (MNIST's largest is 9.9 MB)
MAX_CONTENT = 128 << 20  # bytes it may decompress to (MNIST's largest IDX file is 47 MB)


@dataclass(frozen=True)
class Source:
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is base + stem + ".gz"
    files: dict[str, str]  # stem -> sha256 of the decompressed IDX bytes
    classes: tuple[str, ...] = ()  # label names, index = label; empty: the digits "0".."9"


DATASETS = {
    "mnist": Source(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's copy: yann.lecun.com often refuses
                 "http://yann.lecun.com/exdb/mnist/"),
        files={"train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
               "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
               "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
               "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    "fashion-mnist": Source(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
        files={"train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
               "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
               "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
               "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")),
}


class DownloadError(RuntimeError):
    """A dataset could not be fetched or did not verify; the message says what to do."""


def content_sha256(gz_bytes: bytes) -> str:
    """sha256 of the decompressed bytes, decompressed in pieces and at most MAX_CONTENT of them (a bomb stops
    there); raises ValueError if they are not gzip."""
    digest, total = hashlib.sha256(), 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(gz_bytes)) as f:
            while piece := f.read(1 << 20):
                total += len(piece)
                if total > MAX_CONTENT:
                    raise ValueError(f"decompresses to more than {MAX_CONTENT:,} bytes, more than any known file")
                digest.update(piece)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"not a gzip file ({e or type(e).__name__})") from None
    return digest.hexdigest()


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(MAX_DOWNLOAD + 1)
    if len(data) > MAX_DOWNLOAD:
        raise ValueError(f"more than {MAX_DOWNLOAD:,} bytes, more than any known file")
    return data


def fetch_file(stem: str, digest: str, mirrors: tuple[str, ...], target: Path, log=print,
               timeout: float = TIMEOUT) -> Path:
    """target/stem.gz, downloaded from the first mirror whose copy verifies."""
    path = target / f"{stem}.gz"
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + f"/{stem}.gz"
        log(f"downloading {url}")
        try:
            data = _get(url, timeout)
            got = content_sha256(data)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
            # HTTPException: the server dropped the connection mid-file (IncompleteRead) or spoke no HTTP
            failures.append(f"{url}: {getattr(e, 'reason', None) or type(e).__name__} {e}".strip())
            continue
        if got != digest:
            failures.append(f"{url}: sha256 of the content is {got[:12]}..., expected {digest[:12]}...")
            continue
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path
    raise DownloadError(f"cannot download {stem}.gz ({'; '.join(failures)}); offline? copy the file into {target} "
                        f"by hand, or pass --mirror URL")


def fetch(name: str, root: str | os.PathLike, mirror: str = "", log=print, sources: dict | None = None) -> Path:
    """ROOT/NAME holding the dataset's four verified .gz files; downloads only what is missing."""
    source = (sources or DATASETS)[name]
    target = Path(root) / name
    target.mkdir(parents=True, exist_ok=True)
    mirrors = (mirror,) if mirror else source.mirrors
    for stem, digest in source.files.items():
        path = target / f"{stem}.gz"
        if os.path.lexists(path):
            try:
                with open_regular(path) as f:
                    got = content_sha256(f.read(MAX_DOWNLOAD + 1))
            except ValueError as e:
                raise DownloadError(f"{path}: {e}; delete it to download again") from None
            if got != digest:
                raise DownloadError(f"{path}: content sha256 {got[:12]}... is not {name}'s {digest[:12]}...; "
                                    f"delete it to download again")
            continue
        fetch_file(stem, digest, mirrors, target, log=log)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(prog="edgevae download", description="Download and verify a dataset.")
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--root", default="data", help="directory to download into (default: data)")
    parser.add_argument("--mirror", default="", help="base URL to use instead of the canonical locations")
    args = parser.parse_args(argv)
    try:
        target = fetch(args.name, args.root, args.mirror)
    except (DownloadError, OSError) as e:  # OSError: a --root that cannot be made or written
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"verified {args.name} in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
