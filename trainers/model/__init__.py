"""The denoiser and the process around it: the SF operator (`spectral_forcing`), JiT (`jit`), unet-tiny (`unet`),
the plug-in denoiser contract any `nn.Module` follows (`contract`), the rectified flow (`flow`), ODE samplers
(`samplers`) and weight EMAs (`ema`). Of the other groups it imports only `trainers.data` and `trainers.distributed`.

    python -c "from trainers.model.spectral_forcing import SpectralForcing; print(SpectralForcing(32).cutoff(0.5))"
"""
