"""Test kit shared by HAL's own suite and plugin authors: the conformance runner."""
