"""One training run: the typed config (`config`) and its cross-field rules (`config_rules`), the checks against
this machine (`environment`), what a config builds (`builders`), the loop (`loop`) with its per-step rules
(`step_rules`), GPU options (`accel`), checkpoints (`checkpoint`), the trial record (`record`) and SF figures
(`sf_figures`). The top of `trainers`: it may import every other group.

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny
"""
