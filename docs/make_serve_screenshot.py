"""Take the screenshot of the serve page shown in docs/serve.md.

Serves a finished run (by default the demo's, `make demo` writes it to runs/demo), opens
one user's recommendations by two representations in headless Chromium (Debian's
`chromium` + `chromium-driver`) at 1400 px wide, waits until every image has loaded and
saves a PNG. The user is shown as a user would reach them: their original id typed into
the user field with "original ids" selected in the id selector beside it.

    python docs/make_serve_screenshot.py [--workdir runs/demo] [--out docs/serve_page.png]
                                         [--user N] [--left NAME] [--right NAME]

Without --left/--right it compares what the page opens with: the two best representations
by the report metric. Without --user it takes the first user whose left-hand top 10 has
two or more test hits.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from lvlmrec.serve.app import create_app
from lvlmrec.serve.browser import IMAGES_LOADED, browser_available, headless_chromium, serving
from lvlmrec.serve.service import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve_page.png"))
    parser.add_argument("--user", type=int)
    parser.add_argument("--left", help="default: the best representation")
    parser.add_argument("--right", help="default: the second best")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", default="1400x1250", help="window WIDTHxHEIGHT")
    args = parser.parse_args()
    if not browser_available():
        raise SystemExit("needs Debian's chromium and chromium-driver: "
                         "apt-get install -y chromium chromium-driver")

    run = load_run(args.workdir)
    app = create_app(run=run)
    api = TestClient(app)
    ranked = api.get("/representations").json()["ranked"]
    args.left = args.left or ranked[0]
    args.right = args.right or ranked[1]
    user = args.user
    if user is None:
        user = next(u for u in range(run.n_users) if api.get(
            f"/users/{u}/recommendations?k={args.k}&representation={args.left}"
        ).json()["n_hits"] >= 2)
    width, height = map(int, args.size.split("x"))
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serving(app) as url, tempfile.TemporaryDirectory() as profile, \
            headless_chromium(profile, width, height) as driver:
        driver.get(f"{url}/#user={user}&left={args.left}&right={args.right}&k={args.k}")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Showing"))
        # then reach the same user the way a user would: their original id, typed
        source_id = run.user_source_ids[user]
        driver.execute_script("document.getElementById('id-type').value = 'source';"
                              "document.getElementById('status').textContent = ''")
        field = driver.find_element(By.ID, "user-input")
        field.clear()
        field.send_keys(source_id)
        driver.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Showing"))
        if f"user={user}&" not in driver.current_url:
            raise SystemExit(f"typing {source_id!r} did not open user {user}: "
                             f"{driver.current_url}")
        # the suggestion list the typing opened would cover the page
        driver.execute_script("document.activeElement.blur()")
        for column in ("#left", "#right"):
            wait.until(lambda d: d.execute_script(IMAGES_LOADED, f"{column} .rec-image", args.k))
        wait.until(lambda d: d.execute_script(IMAGES_LOADED, "#history img", 1))
        png = driver.get_screenshot_as_png()
    # a 256-colour palette keeps the picture sharp at a third of the bytes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"user {user} ({run.user_source_ids[user]}), {args.left} vs {args.right}: "
          f"{args.out}")


if __name__ == "__main__":
    main()
