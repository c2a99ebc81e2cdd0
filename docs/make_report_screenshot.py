"""Look at a run's report as a reader does: headless Chromium, 1400 px wide.

Opens `report/report.html` of a finished run (by default the demo's, runs/demo) in headless
Chromium (Debian's `chromium` + `chromium-driver`) with a 1400 px window, saves a screenshot
of the whole page and one of each figure as it is shown, and checks that every figure is
legible there: the figures are drawn at 110 dpi with no text under 7 pt (about 10.7 px at
100%), so a figure shown at 90% of its own width or more keeps its smallest text at 9.6 px
or more. A figure the page shrinks further fails the check (exit status 1), named with the
scale it is shown at.

    python docs/make_report_screenshot.py [--workdir runs/demo] [--out DIR]
                                          [--width 1400] [--min-scale 0.9]

The screenshots go to DIR (default: the run's report/screens/).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

from lvlmrec.serve.browser import browser_available, headless_chromium

#: the tallest full-page screenshot taken (px); a longer report is cut there
MAX_HEIGHT = 30_000

FIGURES = """
    return [...document.querySelectorAll('figure img')].map((img, i) => ({
        index: i, name: img.alt || `figure ${i}`, natural: img.naturalWidth,
        shown: img.getBoundingClientRect().width, complete: img.complete}));
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", "-w", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, help="folder for page.png and one PNG per figure "
                        "(default: WORKDIR/report/screens)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--min-scale", type=float, default=0.9)
    args = parser.parse_args()
    if not browser_available():
        raise SystemExit("needs Debian's chromium and chromium-driver: "
                         "apt-get install -y chromium chromium-driver")
    report = (args.workdir / "report" / "report.html").resolve()
    if not report.is_file():
        raise SystemExit(f"no report at {report}: run `lvlmrec report -w {args.workdir}`")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    args.out = args.out or args.workdir / "report" / "screens"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, \
            headless_chromium(profile, args.width, 1000) as driver:
        driver.get(report.as_uri())
        WebDriverWait(driver, 60).until(
            lambda d: all(f["complete"] for f in d.execute_script(FIGURES)))
        figures = driver.execute_script(FIGURES)
        for element, fig in zip(driver.find_elements(By.CSS_SELECTOR, "figure img"), figures):
            driver.execute_script("arguments[0].scrollIntoView()", element)
            Image.open(io.BytesIO(element.screenshot_as_png)).save(
                args.out / f"figure_{fig['index']:02d}_{fig['name']}.png")
        height = min(MAX_HEIGHT, driver.execute_script(
            "return document.documentElement.scrollHeight"))
        driver.set_window_size(args.width, height)
        driver.execute_script("window.scrollTo(0, 0)")
        png = driver.get_screenshot_as_png()
    Image.open(io.BytesIO(png)).convert("RGB").save(args.out / "page.png", optimize=True)

    failed = []
    print(f"{report} at {args.width} px:")
    for fig in figures:
        scale = fig["shown"] / fig["natural"]
        ok = scale >= args.min_scale - 1e-6
        failed += [] if ok else [fig["name"]]
        print(f"  {fig['name']:<20} {fig['natural']:>5} px drawn, shown at {fig['shown']:7.1f} px"
              f" ({scale:.0%}){'' if ok else '  TOO SMALL'}")
    print(f"screenshots in {args.out}/")
    if failed:
        print(f"shown under {args.min_scale:.0%} of their size: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
