"""Bad frames get one error naming the input (the stream turns it into an error record and goes
on), and the table of bad inputs in docs/bad-inputs.md is backed by tests: every row names a
test that exists, and the message the row quotes is one that test's module asserts."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import workloads
from mcdask.errors import FrameError
from mcdask.streaming.records import validate

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad-inputs.md"
W = workloads.get("alexnet")
GOOD = np.zeros((220, 220, 3), np.uint8)

FRAME_CASES = {
    "wrong shape": ({"frame": np.zeros((1, 100, 100, 3), np.uint8)},
                    "input 'frame' has shape (1, 100, 100, 3), expected (220, 220, 3) (or (1, 220, 220, 3))"),
    "wrong dtype": ({"frame": GOOD.astype(np.int64)}, "input 'frame' has dtype int64, expected uint8 or float32"),
    "NaN": ({"frame": np.full((220, 220, 3), np.nan, np.float32)},
            "input 'frame' contains NaN or infinite values (or beyond float32)"),
    "beyond float32": ({"frame": np.full((220, 220, 3), 1e300)},
                       "input 'frame' contains NaN or infinite values (or beyond float32)"),
    "missing input": ({"flow": GOOD}, "input 'frame' missing; alexnet needs ['frame']"),
    "unknown inputs": ({"frame": GOOD, 1: GOOD, "x": GOOD}, "unknown inputs ['x', 1]; alexnet takes ['frame']"),
}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_a_bad_frame_says_which_input_and_what_is_wrong(case):
    inputs, says = FRAME_CASES[case]
    with pytest.raises(FrameError) as e:
        validate(W, inputs)
    assert str(e.value) == says


def rows() -> list[tuple[str, str, str]]:
    """(message, exit, test id) of every row of the table."""
    out = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3].startswith("`tests/"):
            message = re.search(r"`([^`]+)`", cells[1])
            assert message, f"row without a `message`: {line}"
            out.append((message.group(1), cells[2], cells[3].strip("`")))
    return out


def literals(path: Path) -> list[str]:
    """Every string constant in a test module (f-strings' constant parts included)."""
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_every_row_of_the_bad_inputs_table_is_a_test_that_asserts_its_message():
    table = rows()
    assert len(table) >= 30, "the table lost its rows"
    files = sorted({test.split("::")[0] for _, _, test in table})
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = set(collected.stdout.splitlines())
    text = {f: literals(ROOT / f) for f in files}
    for message, status, test in table:
        assert test in ids, f"{test} is not a test (collected: {collected.stdout[-500:]})"
        assert status in ("0", "1", "2", "3", "-"), f"{test}: exit {status!r} is not a documented code"
        unescaped = message.replace("\\(", "(").replace("\\)", ")")
        assert any(unescaped in s or message in s for s in text[test.split("::")[0]]), \
            f"{test}: its module asserts no message containing {message!r}"
