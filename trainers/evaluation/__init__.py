"""Sample quality and held-out losses of a run: the `Evaluator` (`evaluator`) with its feature accumulators
(`features`) and real-image references (`references`), the metric math (`metrics`, `kid`), the feature extractors
(`inception`, `classifier`), radial spectra (`radial_spectrum`), the held-out denoising loss (`heldout`) and image
output (`images`). Never imports `trainers.training`.

    specforce eval runs/tiny/ema.pt --num-samples 500      # evaluate a saved run the way its loop did
"""
