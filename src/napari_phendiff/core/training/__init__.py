"""Training: ONE loop (run.py) for every model kind; what a kind's optimisation step does lives in diffusion.py
(pixel and latent denoisers) and in models/cyclegan.py (the baseline's adversarial step)."""
