"""Write prunekit/cli/help.json: each command's --help, rendered from its options model at a fixed width.

`prunekit <command> --help` prints the stored text, so it answers without importing torch (the options models
validate with the library's parsers, which import it: 2.4 s here). tests/test_options.py checks the stored text
equals what the options models render now; after changing an option, run:

    python scripts/gen_help.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunekit.cli.main import render_help  # noqa: E402
from prunekit.cli.commands import COMMANDS  # noqa: E402

def main() -> None:
    texts = {cmd.name: render_help(cmd.name) for cmd in COMMANDS}
    out = ROOT / "prunekit" / "cli" / "help.json"
    out.write_text(json.dumps(texts, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}: {', '.join(texts)}")


if __name__ == "__main__":
    main()
