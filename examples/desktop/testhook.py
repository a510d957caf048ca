"""What tests/test_desktop.py needs to see of the app: active only when EDGEVAE_DESKTOP_STATE names a file.

The test drives the app with real X events (xdotool clicks and keys) and screenshots. To know where to
click and when a generation has finished, it reads this JSON file, which the app rewrites after each
result: screen geometry of the named widgets, the current seed/temperature/latent, what was saved, and
whether work is still in flight. It is write-only: nothing in it steers the app.
"""
from __future__ import annotations

import json
import os
import tkinter as tk
from pathlib import Path

ENV = "EDGEVAE_DESKTOP_STATE"


def path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def geometry(widget) -> dict:
    """Where a widget is on the screen: root x, y and size in pixels; for a tk.Scale also its knob."""
    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    out = {"x": x, "y": y, "width": widget.winfo_width(), "height": widget.winfo_height()}
    if isinstance(widget, tk.Scale):  # knob centre at the current value, and pixels per unit of value
        kx, ky = widget.coords()
        out.update(knob=[x + kx, y + ky], value=float(widget.get()),
                   unit_px=widget.coords(1)[0] - widget.coords(0)[0])
    return out


def write(state: dict, widgets: dict) -> None:
    """Atomically replace the state file (a reader never sees half a file); no-op unless enabled."""
    target = path()
    if target is None:
        return
    state = {**state, "pid": os.getpid(), "widgets": {name: geometry(w) for name, w in widgets.items()}}
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, target)
