"""LO-SDA and the score-based methods sharing its latent generative prior (DPS, latent 3D-Var)."""
