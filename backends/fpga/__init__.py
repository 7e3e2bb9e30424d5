"""FPGA support: the int8 specification every FPGA path matches bit for bit."""
