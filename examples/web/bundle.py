"""Copy the browser page, the shared JavaScript, onnxruntime-web's WASM files and one export into a folder an app ships.

    python3 examples/web/bundle.py exports/shapes --out site
    -> site/web/index.html, site/js/*.mjs, site/export/ (the page opens /export/ by default)

Serve the folder's root as one origin (an Electron protocol handler, Tauri's frontendDist, any static
server) and open /web/index.html. The page is pinned to this export: the manifest's sha256 is written into
its <meta name="edgevae-manifest-sha256">, so it refuses any other manifest, and the manifest pins each
graph. Needs examples/web/node_modules (npm ci). Standard library only; docs/embedding.md "In the browser".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
# The page as it runs; serve.py, bundle.py and headless.mjs are tools, not part of it.
PAGE = ("index.html", "style.css", "boot.mjs", "app.mjs", "model.mjs", "draw.mjs", "latent.mjs")
ORT_DIST = "node_modules/onnxruntime-web/dist"  # model.mjs loads onnxruntime-web from here, below the page
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PIN = '<meta name="edgevae-manifest-sha256" content="">'


def bundle(export: Path, out: Path) -> list[Path]:
    """Write the folder; returns the files written. Raises ValueError with a one-line reason."""
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty")
    try:
        manifest_bytes = (export / "manifest.json").read_bytes()
        names = list(json.loads(manifest_bytes)["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{export}: not an export directory ({e})") from None
    missing = [f"{ORT_DIST}/{name}" for name in ORT_FILES if not (WEB / ORT_DIST / name).is_file()]
    if missing:
        raise ValueError(f"examples/web lacks {missing[0]}: cd examples/web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci")
    copies = [(WEB / name, out / "web" / name) for name in PAGE]
    copies += [(path, out / "js" / path.name) for path in sorted((WEB.parent / "js").glob("*.mjs"))]
    copies += [(WEB / ORT_DIST / name, out / "web" / ORT_DIST / name) for name in ORT_FILES]
    copies += [(export / name, out / "export" / name) for name in ["manifest.json", *names]]
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    page = out / "web" / "index.html"
    html = page.read_text()
    if PIN not in html:
        raise ValueError(f"{WEB / 'index.html'}: no empty {PIN} to fill in")
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    page.write_text(html.replace(PIN, PIN.replace('content=""', f'content="{digest}"')))
    return [target for _, target in copies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bundle the browser page with one export for an app to ship.")
    parser.add_argument("export", type=Path, help="an export directory")
    parser.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    args = parser.parse_args(argv)
    try:
        files = bundle(args.export, args.out)
    except (ValueError, OSError) as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in files)
    digest = hashlib.sha256((args.out / "export" / "manifest.json").read_bytes()).hexdigest()
    print(f"wrote {args.out}/ ({len(files)} files, {size / 1e6:.1f} MB): serve its root, open /web/index.html; "
          f"pinned to manifest sha256 {digest[:12]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
