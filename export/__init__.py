"""EdgeVAE export: a VAE -> encoder.onnx + decoder.onnx + manifest.json, verified.

    edgevae export runs/shapes --out exports/shapes                 # a run of `edgevae train`
    edgevae export --diffusers DIR --out exports/sd-vae              # or your own VAE (export/importers.py)

    from edgevae.export import export_vae                           # from Python (export/api.py)
    export_vae(my_vae, (3, 64, 64), "exports/mine")
"""


def __getattr__(name: str):
    """export_vae and as_source, imported on first use (they bring torch)."""
    if name in ("export_vae", "as_source"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgevae.export' has no attribute {name!r}")
