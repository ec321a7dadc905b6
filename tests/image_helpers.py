"""Image folders for the data tests: small RGB files of assorted sizes in class folders (JPEG and PNG)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def make_folder(root, classes=3, per_class=7, seed=0):
    """root/c<k>/<i>.jpg|png RGB images of assorted sizes (some need the box-halving step of the ADM crop)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"c{c}" / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root
