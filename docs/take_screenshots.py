"""Screenshots of the Dagster UI for the README (docs/*.png), taken with headless Chromium.

    make demo && make ui &                      # the UI on 127.0.0.1:3000 with the demo's runs
    pip install playwright                      # in any venv; it drives the system Chromium, downloads no browser
    python docs/take_screenshots.py [--chromium /usr/bin/chromium] [--url http://127.0.0.1:3000]

    make example-tickets && make ui ROOT=.runs/support-tickets &    # worked example (a) on your own data
    python docs/take_screenshots.py --pages own-data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
PAGES = {  # set -> file -> (path, what must be on screen before the shot)
    "demo": {
        "ui-asset-graph.png": ("/asset-groups", "registered_model"),
        "ui-evaluation-metadata.png": ("/assets/evaluation?partition=demo-forget10", "metrics_table"),
        "ui-champion-gates.png": ("/assets/champion?view=checks", "promotion_gates_passed"),
    },
    "own-data": {  # make example-tickets: the collection report and the documents evaluation
        "ui-own-data-forget-set.png": ("/assets/forget_set?partition=forget-customer", "records_per_subject"),
        "ui-own-data-evaluation.png": ("/assets/evaluation?partition=forget-customer", "metrics_table"),
    },
}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--pages", choices=list(PAGES), default="demo")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        for name, (path, expected) in PAGES[args.pages].items():
            page.goto(args.url + path)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(2_000)  # Dagster's one-time community dialog opens after the page has loaded
            skip = page.get_by_role("button", name="Skip")
            if skip.count():
                skip.first.click()
            if name == "ui-asset-graph.png":  # groups start collapsed: the graph's context menu expands them
                page.wait_for_timeout(3_000)
                page.mouse.click(900, 900, button="right")
                page.locator("text=Expand all groups >> visible=true").first.click()
            page.get_by_text(expected).first.wait_for(timeout=30_000)
            if args.pages == "own-data":  # the rows this page is for sit below the fold
                page.get_by_text(expected).first.scroll_into_view_if_needed()
            page.wait_for_timeout(2_000)  # let the graph layout settle
            page.screenshot(path=DOCS / name)
            print(f"wrote {DOCS / name}")
        browser.close()


if __name__ == "__main__":
    main()
