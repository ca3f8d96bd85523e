"""Generative models: latent dynamics backends, decoders, and the composed convSSM."""
