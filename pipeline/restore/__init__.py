"""The restore flow: plan (which images), read (LR PNGs), upscale (model stage), write."""
