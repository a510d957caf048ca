"""Reliability figures, each printed by a test: bad inputs tried, fuzz examples run, faults survived, load held.

    python bench/reliability.py

Runs the robustness, fault and bad-input tests (the slow 60 s load test included) in one pytest
process with output shown, and collects what they print: the load test's calls and memory change,
the fault test's SIGKILL count, hypothesis's example counts, and how many bad-input cases ran.
"""
from __future__ import annotations

import re
import subprocess
import sys

import _common as C  # noqa: E402

BAD_INPUT = "bad or error or refuse or tamper or missing or corrupt or wrong or truncat or unwritable or future " \
            "or outside or cut_off or escape or not_a or mismatch or offline or labels or one_line"
FILES = ["tests/test_robustness.py", "tests/test_faults.py", "tests/test_runtime.py", "tests/test_data.py",
         "tests/test_sources.py", "tests/test_cli.py", "tests/test_train_cli.py", "tests/test_export.py",
         "tests/test_kinds.py", "tests/test_training.py"]


def pytest(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=C.ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pytest failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    bad = pytest("-q", "-m", "slow or not slow", "-k", BAD_INPUT, *FILES)
    bad_cases = int(re.search(r"(\d+) passed", bad)[1])
    fuzz = pytest("-q", "-s", "--hypothesis-show-statistics", "-k", "fuzz", "tests/test_robustness.py")
    examples = sum(int(n) for n in re.findall(r"(\d+) passing(?: examples)?,", fuzz))  # hypothesis's statistics
    if examples == 0:
        raise SystemExit(f"no hypothesis statistics found in:\n{fuzz[-2000:]}")
    fuzz_tests = int(re.search(r"(\d+) passed", fuzz)[1])
    heavy = pytest("-q", "-s", "-m", "slow or not slow", "-k", "sigkill or load_many", "tests/test_faults.py",
                   "tests/test_robustness.py")
    faults = re.search(r"faults: (\d+) SIGKILLs injected \((\d+) after the first checkpoint\)", heavy)
    load = re.search(r"load: (\d+) calls from (\d+) threads in (\d+) s, .*?(\d+) seen; "
                     r"RSS change ([+-][\d.]+) MiB", heavy)
    rows = [
        ["bad inputs (files, arrays, arguments, flags), one test case each", f"{bad_cases} cases passed",
         "each gets the documented error type or a one-line CLI error"],
        ["hypothesis fuzzing of the runtime API", f"{examples:,} examples in {fuzz_tests} properties",
         "only EdgeVAEError raised; shapes, range and determinism hold"],
        ["SIGKILL during training, then --resume", f"{faults[1]} kills ({faults[2]} after a checkpoint)",
         "final metrics and weights identical to an uninterrupted run"],
        [f"load: {load[2]} threads calling the runtime for {load[3]} s", f"{int(load[1]):,} calls, {load[4]} errors",
         f"outputs equal serial calls; RSS change {load[5]} MiB"],
    ]
    text = C.table(["what", "measured", "held"], rows)
    print(text)
    C.write_section("reliability", "Reliability: bad input, fuzzing, faults, load", text)


if __name__ == "__main__":
    main()
