"""A generated ImageNet-like folder for the data benchmarks: JPEGs in ImageNet's size range, in class folders.

    .venv/bin/python -m benchmarks.imagenet_like /tmp/imagenet_like --images 2000 --classes 20 --seed 0

Each image is 400-640 x 300-480 px (either orientation's long side first, as ImageNet's photos are mostly landscape),
JPEG quality 90, with smooth colour regions, edges and fine texture so that it costs about what a photo costs to
decode and weighs about what an ImageNet JPEG of that size weighs (~100 kB). Layout `root/class_XX/img_XXXXX.jpg`,
the `imagefolder` layout. Everything is a function of the seed: the same arguments write byte-identical files.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageFilter

WIDTH = (400, 640)
HEIGHT = (300, 480)
QUALITY = 90


def _image(rng: np.random.Generator) -> Image.Image:
    w, h = int(rng.integers(WIDTH[0], WIDTH[1] + 1)), int(rng.integers(HEIGHT[0], HEIGHT[1] + 1))
    if rng.random() < 0.2:  # a portrait photo now and then
        w, h = h, w
    # smooth colour field (a few large blobs), upsampled from a coarse grid
    coarse = rng.integers(0, 256, size=(int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    # edges: a handful of solid rectangles and a medium-scale pattern
    mid = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    mid = np.asarray(Image.fromarray(mid).resize((w, h), Image.Resampling.NEAREST)
                     .filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
    img = 0.6 * base + 0.4 * mid
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        img[y0:y1, x0:x1] = 0.5 * img[y0:y1, x0:x1] + 0.5 * rng.integers(0, 256, size=3)
    # fine texture (grain, foliage, fur): what makes a photo's JPEG heavy
    img += rng.normal(0.0, float(rng.uniform(8.0, 14.0)), size=(h, w, 1)).astype(np.float32)
    img += rng.normal(0.0, 4.0, size=(h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_imagenet_like(root: str, n: int = 2000, classes: int = 20, seed: int = 0) -> list[str]:
    """Write n JPEGs into root/class_XX/ (classes folders, images dealt round-robin); returns the paths written.

    Files already there with the right name are kept (the content is a function of (seed, index) only), so a second
    call with the same arguments writes nothing.
    """
    if n < 1 or classes < 1:
        raise ValueError(f"need n >= 1 and classes >= 1, got n={n}, classes={classes}")
    paths = []
    for i in range(n):
        folder = os.path.join(root, f"class_{i % classes:02d}")
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        paths.append(path)
        if os.path.exists(path):
            continue
        os.makedirs(folder, exist_ok=True)
        image = _image(np.random.default_rng([seed, i]))
        tmp = path + ".tmp"
        image.save(tmp, format="JPEG", quality=QUALITY)
        os.replace(tmp, path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="folder to write (created; existing images of the same name are kept)")
    ap.add_argument("--images", type=int, default=2000, help="number of JPEGs (default 2000)")
    ap.add_argument("--classes", type=int, default=20, help="number of class folders (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = make_imagenet_like(args.root, args.images, args.classes, args.seed)
    size = sum(os.path.getsize(p) for p in paths)
    print(f"{len(paths)} JPEGs in {args.classes} class folders under {args.root}: {size / len(paths) / 1e3:.0f} kB each "
          f"on average")


if __name__ == "__main__":
    main()
