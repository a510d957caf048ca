"""docs/embedding.md's C++ noise function, compiled as printed, reproduces edgevae.standard_normal.

Needs a C++ compiler (g++); skips without one on a developer machine and fails under CI=true.
"""
import re
import subprocess

import numpy as np
import pytest
from conftest import ROOT, require_tools
from test_noise import REFERENCE

import edgevae

MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
int main(int, char** argv) {
    for (float f : standard_normal(std::strtoull(argv[1], nullptr, 10), std::strtoull(argv[2], nullptr, 10))) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        std::printf("%u\n", bits);
    }
}
"""


@pytest.fixture(scope="module")
def noise_binary(tmp_path_factory):
    require_tools("g++", hint="apt-get install g++")
    blocks = re.findall(r"```cpp\n(.*?)```", (ROOT / "docs" / "embedding.md").read_text(), flags=re.S)
    source = next(b for b in blocks if "std::vector<float> standard_normal(uint64_t seed" in b)
    directory = tmp_path_factory.mktemp("cpp")
    (directory / "noise.cpp").write_text(source + MAIN)
    # -O2 without -ffast-math, as the page says; warnings are errors so the printed code stays clean.
    result = subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-o", "noise", "noise.cpp"],
                            cwd=directory, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return directory / "noise"


def _bits(binary, seed: int, count: int) -> np.ndarray:
    out = subprocess.run([str(binary), str(seed), str(count)], capture_output=True, text=True, check=True, timeout=30)
    return np.array(out.stdout.split(), dtype=np.uint64).astype(np.uint32)


@pytest.mark.parametrize("seed,shape,bits", REFERENCE)
def test_cpp_noise_reference_vectors(noise_binary, seed, shape, bits):
    assert _bits(noise_binary, seed, int(np.prod(shape))).tolist() == bits  # exact float32 bit patterns


def test_cpp_noise_matches_numpy(noise_binary):
    # glibc's log/cos/sin against numpy's may differ in a double's last bit, rarely visible after the
    # rounding to float32: allow one ulp, as tests/test_noise.py does for its scalar transcription.
    got = _bits(noise_binary, 2**63 + 12345, 10_001).view(np.float32)
    np.testing.assert_array_max_ulp(got, edgevae.standard_normal(2**63 + 12345, (10_001,)), maxulp=1)
