"""Each zoo model written by hand directly in a peer framework: the baselines HAL is measured against."""
