"""``python -m workloads``: read each built-in model's Keras definition and rewrite its
``facts/NAME.json`` (run after changing a model file; a test checks the files are current)."""

from __future__ import annotations

import json

from . import FACTS, NAMES, derive


def main() -> None:
    FACTS.mkdir(exist_ok=True)
    for name in NAMES:
        path = FACTS / f"{name}.json"
        path.write_text(json.dumps(derive(name).to_dict(), indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
