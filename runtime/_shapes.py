"""Every tensor's shape in a graph, inferred at a concrete batch (and tile), and what one run costs.

    infer(graph, data, label, {"z": (8,)}, {"x_hat": (1, 28, 28)}, facts, 1024, (256 << 20, 25 * 10**9), None)

The tensors alive at once (a tensor lives from the node that makes it to the last that reads it), plus a
convolution's unfolded-input workspace, estimate the memory one session.run holds; the multiply-adds of
the dot products (one per output value elsewhere) estimate its work. Shape values are followed only
through operations that keep sizes growing with the batch and a tile's sides (runtime/_shaperules.py), so
the costs at the largest batch or tile bound all smaller ones. `budget` picks the batch and tile that fit.
"""
from __future__ import annotations

import math

from . import _onnxproto as P
from ._shaperules import RULES, Bad, Info, macs
from .errors import EdgeVAEError

MAX_VALUES = 1 << 40  # any tensor beyond this many values is refused on sight
SHAPE_VALUES = 64  # int64 and float32 tensors up to this many values are followed by value (shapes, axes, scales)


def _fail(label: str, message: str) -> EdgeVAEError:
    return EdgeVAEError(f"{label}: {message}")


def infer(graph: P.Graph, data: bytes, label: str, inputs: dict, outputs: dict, facts,
          max_batch: int, budgets: tuple[int, int], tile_scale: int | None) -> None:
    """Check the inferred outputs against the spec's shapes and set facts.chunk, run_bytes, image_macs and
    max_cells (the _graphcheck.Facts of this graph) from the budgets (bytes per run, multiply-adds per image);
    EdgeVAEError naming `label` for a graph no batch or tile fits. inputs, outputs: {name: per-image shape}."""
    budget, work_budget = budgets
    consts = {}
    for t in graph.initializers:
        values = P.int_values(data, t, SHAPE_VALUES)
        if values is None:
            values = P.float_values(data, t, SHAPE_VALUES)  # Resize's scales, Clip's bounds
        consts[t.name] = Info(t.dims, P.ITEMSIZE[t.data_type], tuple(values) if values is not None else None, True)
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = i
    for name in outputs:
        last_use[name] = len(graph.nodes)

    def sized(name: str, shape: tuple, cells: int | None) -> tuple:
        """A tensor's per-image shape, with a tileable graph's sides cut to a tile of `cells` latent cells."""
        if cells is None or len(shape) != 3:
            return shape
        side = cells * (tile_scale if name in ("x", "x_hat") else 1)
        return (shape[0], min(shape[1], side), min(shape[2], side))

    def run(batch: int, cells: int | None = None) -> tuple[int, int]:
        """(peak bytes of tensors alive at once, multiply-adds) of one run at this batch and tile."""
        env = dict(consts)
        for name, shape in inputs.items():
            env[name] = Info((batch, *sized(name, shape, cells)), 8 if name == "y" else 4)
        alive = set(inputs)  # tensors held now (initializers and folded constants are counted apart)
        live = peak = sum(env[n].nbytes for n in inputs)
        folded = work = 0
        for i, node in enumerate(graph.nodes):
            where = f"node {i} ({node.op_type})"
            args = []
            for name in node.inputs:
                if name and name not in env:
                    raise _fail(label, f"{where} reads {name!r} before anything makes it")
                args.append(env[name] if name else None)
            rule = RULES.get(node.op_type)
            if rule is None:
                raise _fail(label, f"{where}: no shape rule for this op in runtime/_graphcheck.py")
            try:
                made, workspace = rule(node, args)
            except Bad as e:
                raise _fail(label, f"{where}: {e}") from None
            except (ArithmeticError, IndexError, TypeError, ValueError) as e:  # inputs no rule foresaw: malformed
                raise _fail(label, f"{where}: its inputs {[a.shape if a else None for a in args]} do not fit the op "
                                   f"({type(e).__name__})") from None
            if len(node.outputs) > len(made):
                raise _fail(label, f"{where} has {len(node.outputs)} outputs; the op makes {len(made)}")
            work += macs(node.op_type, args, made)
            for name, t in zip(node.outputs, made):
                if not name:
                    continue
                if name in env:
                    raise _fail(label, f"{where} writes {name!r}, which already exists")
                if math.prod(t.shape) > MAX_VALUES:
                    raise _fail(label, f"{where} makes a tensor of shape {t.shape}")
                env[name] = t
                if t.const:
                    folded += t.nbytes
                else:
                    alive.add(name)
                    live += t.nbytes
            peak = max(peak, live + workspace)
            for name in set(node.inputs) | set(node.outputs):
                if name in alive and last_use.get(name, i) <= i:
                    alive.discard(name)
                    live -= env[name].nbytes
        if folded > budget:
            raise _fail(label, f"its constant parts hold {folded:,} bytes (at most {budget:,})")
        for name, shape in outputs.items():
            want = (batch, *sized(name, shape, cells))
            if name not in env or env[name].shape != want:
                got = env[name].shape if name in env else "nothing (no node makes it)"
                raise _fail(label, f"output {name} has shape {got} at batch {batch}, expected {want}")
        return peak, work

    batch = max_batch
    while True:
        peak, _ = run(batch)
        if peak <= budget or batch == 1:
            break
        batch //= 2
    one_peak, one_work = run(1)  # also: the outputs at batch 1, so the batch axis flows through, not a constant
    facts.chunk, facts.run_bytes, facts.image_macs = batch, peak, one_work
    if one_peak <= budget and one_work <= work_budget:
        return
    if tile_scale is None:
        raise _fail(label, f"one image needs an estimated {one_peak:,} bytes of tensors and {one_work:,} "
                           f"multiply-adds (at most {budget:,} and {work_budget:,}; edgevae.load(..., "
                           f"max_run_bytes=, max_image_macs=) raises the bounds)")
    # A tileable graph too large to run whole within the bounds: the largest square tile that fits.
    low, high = 0, max(max(shape[1:]) for shape in inputs.values() if len(shape) == 3)
    while low < high:  # sizes and work grow with the tile, so the largest that fits is found by bisection
        mid = (low + high + 1) // 2
        tile_peak, tile_work = run(1, mid)
        low, high = (mid, high) if tile_peak <= budget and tile_work <= work_budget else (low, mid - 1)
    if low == 0:
        raise _fail(label, f"one latent cell needs more than {budget:,} bytes of tensors or {work_budget:,} "
                           f"multiply-adds")
    facts.chunk, facts.max_cells = 1, low
    facts.run_bytes, facts.image_macs = run(1, low)

