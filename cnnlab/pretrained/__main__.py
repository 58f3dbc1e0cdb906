"""`python -m cnnlab.pretrained fetch ARCH [--weights=IMAGENET1K_V1] [--notop] [--base_url=URL]
[--cache_dir=DIR]`: download a published weights file (checked against its hash), print its
path; `python -m cnnlab.pretrained list`: the archs and their published weights."""

import argparse
import sys

from cnnlab.pretrained import SOURCES, WeightsError
from cnnlab.pretrained.fetch import fetch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlab.pretrained")
    sub = p.add_subparsers(dest="verb", required=True)
    f = sub.add_parser("fetch", help="download a published weights file into the cache")
    f.add_argument("arch", help=f"one of {sorted(SOURCES)}")
    f.add_argument("--weights", default="IMAGENET1K_V1", help="torchvision's weights name")
    f.add_argument("--notop", action="store_true", help="Keras: the file without the classifier")
    f.add_argument("--base_url", default="", help="fetch the same file name from this mirror")
    f.add_argument("--cache_dir", default="", help="default $CNNLAB_CACHE_DIR/pretrained")
    sub.add_parser("list", help="the archs and their published weights")
    a = p.parse_args(argv)
    if a.verb == "list":
        for arch, src in SOURCES.items():
            print(arch, " ".join(src.files) or "(keras.applications' file)")
        return 0
    try:
        path = fetch(a.arch, weights=a.weights, top=not a.notop, directory=a.cache_dir or None,
                     base_url=a.base_url)  # fmt: skip
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
