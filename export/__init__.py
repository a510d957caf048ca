"""EdgeVAE export: a run directory -> encoder.onnx + decoder.onnx + manifest.json, verified.

    python -m export runs/shapes --out exports/shapes
"""
