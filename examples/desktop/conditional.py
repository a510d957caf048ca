"""Classes for conditional models: the picker, and the `labels` argument the runtime takes.

A conditional export lists class names in its spec (`model.classes`, None for unconditional models);
the runtime's sample/decode/interpolate take `labels=` as a class index or name.
"""
from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk


def classes(model) -> list[str] | None:
    """The model's class names, or None for an unconditional model."""
    return list(model.classes) if model.classes else None


def kwargs(y: int | None) -> dict:
    """Extra arguments for a runtime call to generate images of class y ({} when unconditional)."""
    return {} if y is None else {"labels": y}


class ClassPicker(ttk.Frame):
    """A labelled combobox of class names; `value()` is the chosen index."""

    def __init__(self, parent, names: list[str], on_change: Callable[[], None]):
        super().__init__(parent)
        ttk.Label(self, text="Class").grid(row=0, column=0, sticky="w")
        self._names = names
        self._var = tk.StringVar(value=names[0])
        box = ttk.Combobox(self, textvariable=self._var, values=names, state="readonly", width=14)
        box.grid(row=0, column=1, sticky="ew")
        box.bind("<<ComboboxSelected>>", lambda _e: on_change())

    def value(self) -> int:
        return self._names.index(self._var.get())
