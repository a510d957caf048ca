"""EdgeVAE desktop: a Tk app that generates images from an export with the runtime alone (no torch).

    python examples/desktop/app.py exports/shapes          # or: make desktop EXPORT=exports/shapes

Open an export (Ctrl+O, or the command line); generate a grid from a seed and a temperature (Return in
the seed box, Generate, or move the temperature); drag the sliders to edit the first latent dimensions
of the grid's first image (the large image follows live); interpolate between two seeds; pick a class
for conditional models; save the grid, the image or the strip as PNG (Ctrl+S saves the grid: the same
file as `edgevae sample EXPORT --n N --seed S --temperature T`).

Needs Python's tkinter (Debian: python3-tk) and the runtime (numpy, onnxruntime, pillow). All model work
runs on one worker thread (worker.py, newest request wins); the window polls for results only while work
is in flight, and the runtime's sessions do not spin, so the app idles at no CPU.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk

try:
    import edgevae
except ImportError:
    sys.exit("needs the EdgeVAE runtime: pip install edgevae (or pip install -e . in the repository)")
import conditional
import jobs
import testhook
from PIL import ImageTk
from worker import Result, Worker

POLL_MS = 15  # how often the window collects results while work is in flight (never when idle)
SLIDERS = 8  # the first latent dimensions get a slider each
SPAN = 3.0  # sliders cover [-3, 3]: three standard deviations of the prior N(0, I)
STEP = 0.05  # resolution of the sliders and the temperature; arrow keys move one step
MAX_SEED = 2**64 - 1  # seeds of the portable noise are 64-bit


class App:
    """The window: controls on the left, the grid, the edited image and the strip on the right."""

    def __init__(self, root: tk.Tk, export: str | None):
        self.root, self.worker, self.model = root, Worker(), None
        self.pictures: dict[str, jobs.Picture] = {}  # what each view shows: "grid", "latent", "strip"
        self.photos: dict[str, ImageTk.PhotoImage] = {}  # Tk shows an image only while it is referenced
        self.requests: dict[int, dict] = {}  # token -> the parameters of that request
        self.shown: dict[str, dict] = {}  # kind -> parameters of the picture on screen
        self.z, self.saved, self.error, self.polling, self.picker = None, [], "", False, None
        self._build()
        root.protocol("WM_DELETE_WINDOW", self.quit)
        for key, action in (("<Control-o>", self.open_dialog), ("<Control-s>", lambda: self.save("grid")),
                            ("<Control-q>", self.quit)):
            root.bind(key, lambda _e, action=action: action())
        if export:
            self.open(export)
        else:
            self.status.set("Open an export directory (Ctrl+O)")
        root.after_idle(self._report)

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        root = self.root
        root.title("EdgeVAE")
        bar = ttk.Frame(root, padding=4)
        bar.grid(row=0, column=0, columnspan=2, sticky="ew")
        self.widgets: dict[str, tk.Misc] = {"window": root}
        for name, text, action in (("open", "Open…", self.open_dialog),
                                   ("save_grid", "Save grid…", lambda: self.save("grid")),
                                   ("save_latent", "Save image…", lambda: self.save("latent")),
                                   ("save_strip", "Save strip…", lambda: self.save("strip"))):
            self.widgets[name] = ttk.Button(bar, text=text, command=action)
            self.widgets[name].pack(side="left")
        self.info = tk.StringVar()
        ttk.Label(bar, textvariable=self.info).pack(side="left", padx=8)

        side = ttk.Frame(root, padding=4)
        side.grid(row=1, column=0, sticky="ns")
        box = ttk.LabelFrame(side, text="Sample", padding=4)
        box.pack(fill="x")
        self.seed, self.count = tk.StringVar(value="0"), tk.StringVar(value="16")
        self.temperature = tk.DoubleVar(value=1.0)
        self._row(box, 0, "Seed", "seed", ttk.Entry(box, textvariable=self.seed, width=22))
        self.widgets["seed"].bind("<Return>", lambda _e: self.generate())
        ttk.Button(box, text="Random", command=self.random_seed).grid(row=0, column=2)
        self._row(box, 1, "Temperature", "temperature",
                  tk.Scale(box, variable=self.temperature, from_=0.0, to=2.0, resolution=STEP,
                           orient="horizontal", length=170, command=lambda _v: self.generate()))
        self._row(box, 2, "Images", "count", ttk.Spinbox(box, from_=1, to=256, textvariable=self.count, width=6,
                                                         command=self.generate))
        self.widgets["count"].bind("<Return>", lambda _e: self.generate())
        self.widgets["generate"] = ttk.Button(box, text="Generate", command=self.generate)
        self.widgets["generate"].grid(row=3, column=1, sticky="w")
        self.class_slot = ttk.Frame(box)
        self.class_slot.grid(row=4, column=0, columnspan=3, sticky="ew")

        self.latent_box = ttk.LabelFrame(side, text="Latent of the first image", padding=4)
        self.latent_box.pack(fill="x", pady=4)
        self.sliders: list[tk.Scale] = []

        box = ttk.LabelFrame(side, text="Interpolate", padding=4)
        box.pack(fill="x")
        self.seed_b, self.steps = tk.StringVar(value="1"), tk.StringVar(value="8")
        self.method = tk.StringVar(value="slerp")
        self._row(box, 0, "to seed", "seed_b", ttk.Entry(box, textvariable=self.seed_b, width=22))
        self.widgets["seed_b"].bind("<Return>", lambda _e: self.interpolate())
        self._row(box, 1, "Steps", "steps", ttk.Spinbox(box, from_=2, to=32, textvariable=self.steps, width=6,
                                                        command=self.interpolate))
        self._row(box, 2, "Path", "method", ttk.Combobox(box, textvariable=self.method, values=("lerp", "slerp"),
                                                         state="readonly", width=8))
        self.widgets["method"].bind("<<ComboboxSelected>>", lambda _e: self.interpolate())
        self.widgets["interpolate"] = ttk.Button(box, text="Interpolate", command=self.interpolate)
        self.widgets["interpolate"].grid(row=3, column=1, sticky="w")

        view = ttk.Frame(root, padding=4)
        view.grid(row=1, column=1, sticky="nw")
        for kind, where in (("grid", dict(row=0, column=0)), ("latent", dict(row=0, column=1, padx=8)),
                            ("strip", dict(row=1, column=0, columnspan=2, pady=8))):
            # No border or padding: the image's top-left pixel is the widget's, which the screenshot test uses.
            self.widgets[kind] = tk.Label(view, bd=0, highlightthickness=0, padx=0, pady=0)
            self.widgets[kind].grid(sticky="nw", **where)
        self.status = tk.StringVar()
        ttk.Label(root, textvariable=self.status, padding=4).grid(row=2, column=0, columnspan=2, sticky="w")

    def _row(self, parent, row: int, label: str, name: str, widget: tk.Widget) -> None:
        ttk.Label(parent, text=label).grid(row=row, column=0, sticky="w", padx=(0, 4))
        widget.grid(row=row, column=1, sticky="w")
        self.widgets[name] = widget

    def _rebuild_for_model(self) -> None:
        """Sliders for the model's first latent dimensions, and the class picker if it is conditional."""
        for child in self.latent_box.winfo_children():
            child.destroy()
        self.sliders = []
        for i in range(min(SLIDERS, self.model.latent_dim)):
            ttk.Label(self.latent_box, text=f"z{i}").grid(row=i, column=0, sticky="s", padx=(0, 4))
            slider = tk.Scale(self.latent_box, from_=-SPAN, to=SPAN, resolution=STEP, orient="horizontal",
                              length=260, command=lambda v, i=i: self._on_slider(i, float(v)))
            slider.grid(row=i, column=1, sticky="ew")
            self.sliders.append(slider)
            self.widgets[f"slider{i}"] = slider
        if self.picker is not None:
            self.picker.destroy()
            self.picker = None
        names = conditional.classes(self.model)
        if names is not None:
            self.picker = conditional.ClassPicker(self.class_slot, names, self.generate)
            self.picker.pack(fill="x")

    # -- actions ----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path = filedialog.askdirectory(parent=self.root, title="Open an EdgeVAE export", mustexist=True)
        if path:
            self.open(path)

    def open(self, path: str) -> None:
        self.status.set(f"loading {path}…")
        self._submit("load", lambda: edgevae.load(path), {"path": str(path)})

    def random_seed(self) -> None:
        self.seed.set(str(secrets.randbits(32)))
        self.generate()

    def _int(self, var: tk.StringVar, what: str, low: int, high: int) -> int | None:
        try:
            value = int(var.get().strip())
            if low <= value <= high:
                return value
        except ValueError:
            pass
        self._fail(f"{what} must be an integer in [{low}, {high}], got {var.get()!r}")
        return None

    def generate(self) -> None:
        """Redraw the grid, the edited image (sliders reset to the first sample) and the strip."""
        seed, n = self._int(self.seed, "seed", 0, MAX_SEED), self._int(self.count, "images", 1, 256)
        if self.model is None or seed is None or n is None:
            return
        model, t, y = self.model, round(self.temperature.get(), 6), self.picker.value() if self.picker else None
        self._submit("grid", lambda: jobs.grid(model, seed, t, n, y), {"seed": seed, "temperature": t, "n": n, "y": y})
        self.z = jobs.base_latent(model, seed, t)  # one Philox block: cheap enough for the UI thread
        for i, slider in enumerate(self.sliders):
            slider.set(self._shown_value(i))
        self._decode_latent()
        self.interpolate()

    def _shown_value(self, i: int) -> float:
        return min(SPAN, max(-SPAN, float(self.z[i])))

    def _on_slider(self, i: int, value: float) -> None:
        # Tk calls back after slider.set() too, with z[i] rounded to STEP: only a real move changes z.
        if self.z is None or abs(value - self._shown_value(i)) <= STEP / 2 + 1e-9:
            return
        self.z[i] = value
        self._decode_latent()

    def _decode_latent(self) -> None:
        model, z, y = self.model, self.z.copy(), self.picker.value() if self.picker else None
        self._submit("latent", lambda: jobs.latent(model, z, y), {"z": z.tolist(), "y": y})

    def interpolate(self) -> None:
        seed_a, seed_b = self._int(self.seed, "seed", 0, MAX_SEED), self._int(self.seed_b, "seed B", 0, MAX_SEED)
        steps = self._int(self.steps, "steps", 2, 32)
        if self.model is None or None in (seed_a, seed_b, steps):
            return
        model, t, method = self.model, round(self.temperature.get(), 6), self.method.get()
        y = self.picker.value() if self.picker else None
        params = {"seed_a": seed_a, "seed_b": seed_b, "temperature": t, "steps": steps, "method": method, "y": y}
        self._submit("strip", lambda: jobs.strip(model, seed_a, seed_b, t, steps, method, y), params)

    def save(self, kind: str) -> None:
        picture = self.pictures.get(kind)
        if picture is None:
            return self._fail(f"nothing to save yet: the {kind} is empty")
        path = filedialog.asksaveasfilename(parent=self.root, title=f"Save {kind}", defaultextension=".png",
                                            filetypes=[("PNG image", "*.png")], initialfile=f"{kind}.png")
        if path:
            self._submit("save", lambda: jobs.save(picture, path), {"kind": kind, **self.shown.get(kind, {})})

    def quit(self) -> None:
        self.worker.close()
        self.root.destroy()

    # -- results ----------------------------------------------------------------------------------
    def _submit(self, kind: str, job, params: dict) -> None:
        self.requests[self.worker.submit(kind, job)] = params
        self.status.set("working…")
        if not self.polling:  # poll only while work is in flight: an idle window has no timers
            self.polling = True
            self.root.after(POLL_MS, self._poll)

    def _poll(self) -> None:
        for result in self.worker.drain():
            try:
                self._deliver(result)
            except Exception as e:  # e.g. Tk cannot show the picture: say so, and keep polling alive
                self._fail(f"{result.kind}: {type(e).__name__}: {e}")
        if self.worker.idle():
            self.polling = False
            if not self.error:
                self.status.set("ready")
            self._report()
        else:
            self.root.after(POLL_MS, self._poll)

    def _deliver(self, result: Result) -> None:
        params = self.requests.pop(result.token, {})
        if result.error is not None:
            return self._fail(f"{result.kind}: {result.error}")
        self.error = ""
        if result.kind == "load":
            self.model = result.value
            self.info.set(f"{Path(params['path']).name}: latent {'x'.join(map(str, self.model.latent_shape))}, image "
                          f"{'x'.join(map(str, self.model.image_shape))}, {self.model.variant}")
            self._rebuild_for_model()
            self.generate()
        elif result.kind == "save":
            self.saved.append({"path": result.value, **params})
            self.status.set(f"saved {result.value}")
        else:
            self.pictures[result.kind], self.shown[result.kind] = result.value, params
            self.photos[result.kind] = ImageTk.PhotoImage(result.value.image)
            self.widgets[result.kind].configure(image=self.photos[result.kind])

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.set(message)
        self._report()

    def _report(self) -> None:
        """Tell tests/test_desktop.py where things are and what is shown (no-op unless it asked)."""
        if testhook.path() is None:
            return
        self.root.update_idletasks()  # geometry after the latest images changed the layout
        state = {"ready": self.model is not None, "busy": not self.worker.idle(), "error": self.error,
                 "latent_dim": getattr(self.model, "latent_dim", None), "shown": self.shown,
                 "scales": {k: p.scale for k, p in self.pictures.items()}, "saved": self.saved,
                 "z": None if self.z is None else self.z.tolist(), "class_picker": self.picker is not None}
        testhook.write(state, self.widgets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EdgeVAE desktop: generate images from an export.")
    parser.add_argument("export", nargs="?", help="an export directory (edgevae export RUN_DIR --out DIR)")
    args = parser.parse_args(argv)
    try:
        root = tk.Tk()
    except tk.TclError as e:
        sys.exit(f"cannot open a window: {e}")
    App(root, args.export)
    root.mainloop()


if __name__ == "__main__":
    main()
