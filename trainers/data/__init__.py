"""Training and evaluation data: `loader` is the entry point (datasets by name, the sharded infinite stream, the
uint8-to-model-input step); one module per source: `grf` (synthetic power-law fields), `arrays` (MNIST subset,
sklearn digits), `cifar` (CIFAR-10 batches), `folder` (ImageFolder/ImageNet with the ADM centre crop, indexed by
`folder_index` over `image_files`), `prepared` (a `specforce prepare` output, format in `prepared_format`); `base`
holds what they share and `cond` the conditioning vectors.

    python -c "from trainers.data.loader import build_dataset; print(build_dataset('digits', image_size=16).describe())"
"""
