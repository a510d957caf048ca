"""The README's Python snippet runs as written (against a fresh export), so the documented API cannot rot."""
import re
import subprocess
import sys

from conftest import ROOT


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_snippets_run(export_dir, tmp_path):
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        code = block.replace('"exports/shapes"', repr(str(export_dir)))
        # A fresh interpreter in an empty directory, as a user's app would run it: torch-free.
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin"}, timeout=120)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").exists()
