"""``python -m mcdask.model.kinds KIND``: print a built-in device kind as JSON."""

import json
import sys

from mcdask.model.kinds import KINDS, get

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: python -m mcdask.model.kinds {{{','.join(KINDS)}}}")
    print(json.dumps(get(sys.argv[1]).to_dict(), indent=2))
