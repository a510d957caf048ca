"""EdgeVAE export: a run directory -> encoder.onnx + decoder.onnx + manifest.json, verified.

    edgevae export runs/shapes --out exports/shapes
"""
