"""What runs inside a training worker, plain PyTorch, grouped by job (docs/design.md §2):

    distributed.py  the helpers ranks use to share work and agree (all-reduce, gather, broadcast, failure flags)
    data/           datasets by name, the prepared-dataset format, the sharded infinite training stream
    model/          the Spectral Forcing operator, JiT, unet-tiny, the plug-in denoiser contract, flow, samplers, EMA
    evaluation/     sample quality (FID/IS, FD, KID, spectra, classifier scores) and the held-out denoising loss
    training/       one run: config and its rules, builders, the loop, checkpoints, the trial record

Each group imports only itself and the groups above it in this list; `trainers` imports neither `sweeps` nor
`analysis` (tests/test_layout.py checks both).

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny      # one run on CPU, a few minutes
"""
