"""The zoo written by hand directly in peer frameworks: the baselines HAL is measured against."""
