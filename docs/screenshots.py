"""Build the docs site and photograph every page in headless Chromium, to look at as a reader.

    ./run python docs/screenshots.py              # -> site-screenshots/<page>.png, 1280 px wide
    ./run python docs/screenshots.py --only=tutorials/first-ablation.md

Builds with `mkdocs build --strict` into a temporary folder, then opens each page of the
navigation at 1280 px and saves the whole page (the window is made taller until the page's
footer is in the picture, up to 16,000 px, and the picture is cut at the footer). Needs
Debian's `chromium`; when it is missing and this runs as root, the script installs it with
apt-get first. Not run in CI: a browser is too heavy for it. Look at every image after a
change to the docs, and say which ones you looked at.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1280
MAX_HEIGHT = 16_000


def _page_end(png: Path) -> int | None:
    """Crop the screenshot to the page (the end of Material's dark footer); None when the
    footer is not in it (the window was shorter than the page)."""
    import numpy as np
    from PIL import Image

    image = Image.open(png).convert("RGB")
    edge = np.asarray(image)[:, 4, :].mean(axis=1)  # the left edge: header and footer are dark
    dark = np.flatnonzero(edge < 80)
    footer = dark[dark > 200]
    if not len(footer):
        return None
    end = int(footer[-1]) + 1
    if end < image.height - 2 or footer[-1] == image.height - 1:
        image.crop((0, 0, WIDTH, end)).save(png)
    return end


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.geteuid() == 0:
        print("installing Debian's chromium (apt-get) ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
        return shutil.which("chromium")
    sys.exit("error: no chromium on PATH; install Debian's package: apt-get install chromium")


def nav_pages() -> list[str]:
    def files(nav):
        out = []
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out += files(value) if isinstance(value, list) else [value]
        return out

    return files(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "site-screenshots"))
    p.add_argument("--only", action="append", help="a page's source path, e.g. index.md")
    a = p.parse_args()
    chromium = browser()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                        str(site)], cwd=ROOT, check=True)  # fmt: skip
        for page in a.only or nav_pages():
            html = site / ("" if page == "index.md" else page.removesuffix(".md")) / "index.html"
            lines = len((ROOT / "docs" / page).read_text().splitlines())
            height = min(MAX_HEIGHT, 600 + 34 * lines)
            png = out / (page.removesuffix(".md").replace("/", "__") + ".png")
            while True:  # until the page's footer is in the picture
                subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                "--hide-scrollbars", f"--window-size={WIDTH},{height}",
                                f"--screenshot={png}", html.as_uri()],
                               check=True, capture_output=True, timeout=120)  # fmt: skip
                end = _page_end(png)
                if end is not None or height >= MAX_HEIGHT:
                    break
                height = min(MAX_HEIGHT, int(height * 1.6))
            shown = png.relative_to(ROOT) if png.is_relative_to(ROOT) else png
            print(f"{shown}  ({end or height} px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
