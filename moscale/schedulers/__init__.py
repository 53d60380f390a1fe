"""The refinement schedule of the sampler: steps per scale, re-masking, guidance ramp, token draws."""
