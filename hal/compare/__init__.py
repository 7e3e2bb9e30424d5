"""Device comparison: the measurement harness and its reports."""
