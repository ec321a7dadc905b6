"""Dataset implementations behind `trainers.data.loader` (the entry point: import from there, not from here).

    python -c "from trainers.data.loader import build_dataset; print(build_dataset('digits', image_size=16).describe())"

One module per data source: `grf` (synthetic power-law fields), `arrays` (MNIST subset and sklearn digits, in memory),
`cifar` (the python-pickle CIFAR-10 batches), `folder` (ImageFolder/ImageNet with the ADM centre crop); `base` holds
what they share (argument checks, sample keys, describe()).
"""
