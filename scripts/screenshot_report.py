"""Screenshot a prunekit report page (a run's report.html, a comparison's <name>_report.html, eval.html) with the
system's headless Chromium, for the docs.

    python scripts/screenshot_report.py runs/demo --out docs/img/report_demo.png
    python scripts/screenshot_report.py runs/compare/criteria_report.html --out docs/img/report_compare.png

A run folder's report.html is re-rendered from its report.json (and report.png) first with ``--render``, so a page
can be refreshed after the renderer changed without running the job again. Needs Debian's chromium and
chromium-driver and selenium (the dev extra).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prunekit.report.browser import chromium, screenshot, why_unavailable
from prunekit.report.run_page import render_run_html


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="an HTML report, or a run folder holding report.html")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--width", type=int, default=1200, help="window width in CSS pixels")
    ap.add_argument("--render", action="store_true", help="re-render a run folder's report.html from report.json")
    args = ap.parse_args()
    missing = why_unavailable()
    if missing:
        print(f"screenshot_report: {missing}", file=sys.stderr)
        return 2
    page = args.page / "report.html" if args.page.is_dir() else args.page
    if args.render:
        record = json.loads((page.parent / "report.json").read_text())
        png = page.parent / "report.png"
        page.write_text(render_run_html(record, png.read_bytes() if png.is_file() else None), encoding="utf-8")
    if not page.is_file():
        print(f"screenshot_report: {page} does not exist; give a report page or a run folder", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with chromium(width=args.width) as driver:
        screenshot(driver, page.resolve().as_uri(), str(args.out), width=args.width)
        errors = driver.get_log("browser")
    if errors:
        print(f"screenshot_report: the page logged {errors}", file=sys.stderr)
        return 1
    print(f"{args.out} ({args.out.stat().st_size / 1e3:.0f} KB) from {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
