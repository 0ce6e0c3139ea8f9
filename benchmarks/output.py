"""What every benchmark does with its results: a table on stdout, the JSON on request."""

import json
from pathlib import Path
from typing import Any


def publish(table: str, results: dict[str, Any], json_path: Path | None) -> None:
    print()
    print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
