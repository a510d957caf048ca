"""EdgeVAE training (PyTorch): data sources, the VAE, the ELBO, the training loop.

    edgevae train --data shapes --latent-dim 16 --epochs 10 --out runs/shapes
"""
