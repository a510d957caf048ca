"""torch -> the two ONNX graphs of docs/design.md, as in-memory ModelProtos.

Thin wrappers give each graph its named inputs and outputs; nothing in the model is patched. They wrap a
`Source` (export/adapters.py): any VAE, with pixels in [0, 1] at the boundary.
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

from edgevae import spec as S

OPSET = 18
_EXAMPLE_BATCH = 3  # traced batch size; 0 and 1 would be specialized by torch.export


class EncoderGraph(nn.Module):
    """encoder.onnx: (x, eps[, y]) -> (z, mu, logvar), z = mu + exp(0.5 * logvar) * eps.

    The plain autoencoder's is (x[, y]) -> z: it has no variance and takes no noise.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(S.signature("encoder", self.vae.kind, self.vae.conditional)[0], inputs))
        mu, logvar = self.vae.encode(named["x"], named.get("y"))
        if self.vae.kind == "ae":
            return mu
        return self.vae.reparameterize(mu, logvar, named["eps"]), mu, logvar


class DecoderGraph(nn.Module):
    """decoder.onnx: (z[, y]) -> x_hat, the decoder's mean image in [0, 1]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(S.signature("decoder", self.vae.kind, self.vae.conditional)[0], inputs))
        # onnxruntime's vectorised sigmoid can return 1 + 1e-7; the contract says [0, 1], so the graph clamps.
        return self.vae.decode(named["z"], named.get("y")).clamp(0.0, 1.0)


def _dynamic_shapes(vae: nn.Module, names) -> tuple[dict, ...]:
    """The batch axis of every input; for a tileable model also the latent's h and w (and x's H = scale * h)."""
    batch = torch.export.Dim(S.BATCH_AXIS, min=1, max=1 << 20)
    if not getattr(vae, "tileable", False):
        return tuple({0: batch} for _ in names)
    scale = vae.latent_scale
    h = torch.export.Dim(S.TILE_AXES[0], min=1, max=S.MAX_SIDE // scale)
    w = torch.export.Dim(S.TILE_AXES[1], min=1, max=S.MAX_SIDE // scale)
    axes = {"x": {0: batch, 2: scale * h, 3: scale * w}, "eps": {0: batch, 2: h, 3: w}, "z": {0: batch, 2: h, 3: w}}
    return tuple(axes.get(name, {0: batch}) for name in names)


def to_onnx(module: nn.Module, args: tuple, input_names, output_names, dynamic_shapes=None) -> onnx.ModelProto:
    """One module's graph by the dynamo exporter; dynamic_shapes by input name (default: a Source wrapper's)."""
    if dynamic_shapes is None:
        dynamic_shapes = dict(zip(input_names, _dynamic_shapes(module.vae, input_names)))
    # its "torchvision is not installed" note
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # torch.export's deprecation chatter about its own internals (raised from torch and copyreg),
        # and a note that the inputs share one named batch dim, which is what we ask for
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used", category=UserWarning)
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, opset_version=OPSET, verbose=False, optimize=True,
            input_names=list(input_names), output_names=list(output_names), external_data=False,
            dynamic_shapes=_as_args(module, dynamic_shapes, input_names),
        )
    return program.model_proto


def _as_args(module: nn.Module, shapes: dict, input_names) -> dict | tuple:
    """dynamic_shapes in the form torch.export wants for the module's forward signature."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:  # forward(*inputs)
        return {params[0].name: tuple(shapes.get(n) for n in input_names)}
    return {p.name: shapes.get(n) for p, n in zip(params, input_names)}


def example_inputs(vae: nn.Module, role: str, n: int = _EXAMPLE_BATCH) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes and dtypes for a graph, in signature order."""
    make = {"x": lambda: torch.rand(n, *vae.image_shape), "eps": lambda: torch.randn(n, *vae.latent_shape),
            "z": lambda: torch.randn(n, *vae.latent_shape), "y": lambda: torch.arange(n) % max(vae.num_classes, 1)}
    return tuple(make[name]() for name in S.signature(role, vae.kind, vae.conditional)[0])


def export_graphs(vae: nn.Module) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(encoder, decoder) ModelProtos for a Source, batch axis dynamic (and h, w when tileable), no metadata yet."""
    protos = []
    for role, wrapper in (("encoder", EncoderGraph), ("decoder", DecoderGraph)):
        names = S.signature(role, vae.kind, vae.conditional)
        protos.append(to_onnx(wrapper(vae), example_inputs(vae, role), *names))
    return protos[0], protos[1]


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
