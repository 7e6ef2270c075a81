"""Screenshots of a report for looking at it: Chromium (full page, PNG) and the PDF's pages (pdftoppm).

python scripts/snap_report.py RUN_DIR OUT_DIR [--width 1000]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = b.new_page(viewport={"width": args.width, "height": 900})
        page.goto((args.run_dir / "report.html").resolve().as_uri())
        page.screenshot(path=str(args.out / "chromium.png"), full_page=True)
        b.close()
    pdf = args.run_dir / "report.pdf"
    if pdf.is_file():
        subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(args.out / "page")], check=True)
    print("\n".join(sorted(str(f) for f in args.out.iterdir())))


if __name__ == "__main__":
    main()
