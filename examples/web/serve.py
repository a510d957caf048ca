"""Serve the browser example and one export directory from one origin on 127.0.0.1 (standard library only).

    python3 examples/web/serve.py exports/shapes [--port 8000]     # or: make web EXPORT=exports/shapes
    -> open http://127.0.0.1:8000/web/?export=/export/

Routes: /web/ is examples/web (the page and its node_modules: run `npm ci` there first), /js/ is
examples/js (the JavaScript shared with examples/node), /export/ is the export directory; nothing else.
One origin, so the page fetches the graphs without CORS; 127.0.0.1 is a secure context, so WebCrypto
(crypto.subtle) can hash them. Single-threaded WASM needs no cross-origin isolation (COOP/COEP headers).
Every answer carries the Content-Security-Policy CSP below, the one the page is tested under.
--port 0 picks a free port; the first line printed is the page's URL.
"""
from __future__ import annotations

import argparse
import sys
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent
# What the page needs and no more: its own origin, and compiling WebAssembly (onnxruntime-web's kernels).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'")


class Handler(SimpleHTTPRequestHandler):
    """Files under three routes, never cached (a re-exported model is seen on reload), with module and wasm types."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json"}

    def __init__(self, *args, export: Path, quiet: bool, **kwargs):
        self.routes = {"/web/": EXAMPLES / "web", "/js/": EXAMPLES / "js", "/export/": export}
        self.quiet = quiet
        super().__init__(*args, directory=str(EXAMPLES), **kwargs)

    def translate_path(self, path: str) -> str:
        route = urllib.parse.urlsplit(path).path
        for prefix, root in self.routes.items():
            if route.startswith(prefix):
                self.directory = str(root)  # SimpleHTTPRequestHandler resolves below self.directory, no "../"
                return super().translate_path(path[len(prefix) - 1:])
        return str(EXAMPLES / "no such route")  # answered 404

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path in ("/", "/web"):
            self.send_response(302)
            self.send_header("Location", "/web/?export=/export/")
            self.end_headers()
            return
        super().do_GET()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        super().end_headers()

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve examples/web and an export directory on 127.0.0.1.")
    parser.add_argument("export", help="an export directory (manifest.json, encoder.onnx, decoder.onnx)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request to stderr")
    args = parser.parse_args(argv)
    export = Path(args.export).resolve()
    if not export.is_dir():
        print(f"{args.export}: not a directory", file=sys.stderr)
        return 2
    if not (EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir():
        print("examples/web has no node_modules: cd examples/web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci", file=sys.stderr)
        return 2
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), partial(Handler, export=export, quiet=args.quiet))
    except OSError as e:
        print(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = server.server_address[1]
    print(f"http://127.0.0.1:{port}/web/?export=/export/", flush=True)
    print(f"serving examples/web and {export} (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
