"""FPGA accelerator sources, manifests and golden vectors, shipped as package data of
``hal.backends.fpga.bitstreams`` (see ``hal.backends.fpga.files``). Nothing to import here."""
