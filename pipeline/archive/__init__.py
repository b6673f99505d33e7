"""The archive flow: plan (list, skip), downscale (model stage), write (LR PNGs)."""
