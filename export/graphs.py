"""torch -> the two ONNX graphs of DESIGN.md, as in-memory ModelProtos.

Thin wrappers give each graph its named inputs and outputs; nothing in the model is patched.
Exporter: torch.onnx's dynamo path (torch.export). The TorchScript path is deprecated since
PyTorch 2.9; torch.export gives a graph whose batch axis is a symbolic dim checked at export time,
so a shape that would be frozen to the example batch is an error here, not a surprise on a device.
Opset 18 is pinned: onnxruntime >= 1.14 runs it, and it is what the dynamo exporter emits natively
(no version conversion pass between what was traced and what ships).
"""
from __future__ import annotations

import logging
import warnings

import onnx
import torch
from torch import nn

from runtime import spec as S

OPSET = 18
_EXAMPLE_BATCH = 3  # traced batch size; 0 and 1 would be specialized by torch.export


class EncoderGraph(nn.Module):
    """encoder.onnx: (x, eps) -> (z, mu, logvar), z = mu + exp(0.5 * logvar) * eps."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        mu, logvar = self.vae.encoder(x)
        return self.vae.reparameterize(mu, logvar, eps), mu, logvar


class DecoderGraph(nn.Module):
    """decoder.onnx: z -> x_hat, the decoder's mean image in [0, 1]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor):
        return self.vae.decode(z)


def _to_onnx(module: nn.Module, args: tuple, input_names, output_names) -> onnx.ModelProto:
    batch = torch.export.Dim(S.BATCH_AXIS, min=1, max=1 << 20)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "torchvision is not installed"
    with warnings.catch_warnings():
        # torch.export's deprecation chatter about its own internals (raised from torch and copyreg),
        # and a note that the inputs share one named batch dim, which is what we ask for
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used", category=UserWarning)
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, opset_version=OPSET, verbose=False, optimize=True,
            input_names=list(input_names), output_names=list(output_names), external_data=False,
            dynamic_shapes={name: {0: batch} for name in input_names},
        )
    return program.model_proto


def export_graphs(vae: nn.Module, image_shape: tuple[int, int, int]) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(encoder, decoder) ModelProtos for a trained VAE, batch axis dynamic, no metadata yet."""
    x = torch.rand(_EXAMPLE_BATCH, *image_shape)
    eps = torch.randn(_EXAMPLE_BATCH, vae.latent_dim)
    encoder = _to_onnx(EncoderGraph(vae), (x, eps), S.ENCODER_INPUTS, S.ENCODER_OUTPUTS)
    decoder = _to_onnx(DecoderGraph(vae), (eps,), S.DECODER_INPUTS, S.DECODER_OUTPUTS)
    return encoder, decoder


def op_types(model: onnx.ModelProto) -> set[str]:
    """Every op type in the graph, including inside subgraphs and local functions."""
    found: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            found.add(node.op_type)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    for function in model.functions:
        found.update(node.op_type for node in function.node)
    return found


def set_spec(model: onnx.ModelProto, spec_json: str) -> None:
    """Write the spec as the graph's only metadata, in one call (set_model_props replaces)."""
    onnx.helper.set_model_props(model, {S.METADATA_KEY: spec_json})
