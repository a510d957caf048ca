"""Classes for conditional models, kept in one place until the runtime can condition.

A conditional export lists class names in its spec (`model.spec["classes"]`, None for unconditional
models) and its graphs take `y` int64 [N]. The runtime's methods do not accept `y` yet, so the picker is
built only for a list of classes and stays disabled, saying why, until `Model.sample` grows a `y`
parameter; then `kwargs` starts passing it and nothing else in the app changes.
"""
from __future__ import annotations

import inspect
import tkinter as tk
from tkinter import ttk
from typing import Callable

import numpy as np


def classes(model) -> list[str] | None:
    """The model's class names, or None for an unconditional model."""
    names = model.spec.get("classes")
    return [str(c) for c in names] if isinstance(names, list) and names else None


def supported(method: Callable) -> bool:
    """Whether this runtime's method takes the class input `y`."""
    return "y" in inspect.signature(method).parameters


def kwargs(method: Callable, y: int | None, n: int) -> dict:
    """Extra arguments for `method` to generate n images of class y ({} when unconditional or unsupported)."""
    if y is None or not supported(method):
        return {}
    return {"y": np.full(n, y, dtype=np.int64)}


class ClassPicker(ttk.Frame):
    """A labelled combobox of class names; `value()` is the chosen index or None."""

    def __init__(self, parent, names: list[str], enabled: bool, on_change: Callable[[], None]):
        super().__init__(parent)
        ttk.Label(self, text="Class").grid(row=0, column=0, sticky="w")
        self._names = names
        self._var = tk.StringVar(value=names[0])
        box = ttk.Combobox(self, textvariable=self._var, values=names, state="readonly" if enabled else "disabled",
                           width=14)
        box.grid(row=0, column=1, sticky="ew")
        box.bind("<<ComboboxSelected>>", lambda _e: on_change())
        self._enabled = enabled
        if not enabled:
            ttk.Label(self, text="(this runtime cannot condition yet)", foreground="gray").grid(
                row=1, column=0, columnspan=2, sticky="w")

    def value(self) -> int | None:
        return self._names.index(self._var.get()) if self._enabled else None
