"""``hal fpga build``: a model's hls4ml design for a board (see ``fpga@hls4ml``).

Compiles the model for ``fpga@hls4ml`` with the board's files, then runs Vivado HLS and
Vivado when both are on PATH. Nothing here claims a build that did not happen: without the
tools it lists the generated files and the commands to run where they are installed.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    f = sub.add_parser("fpga", help="FPGA designs: build a model's hls4ml design for a board")
    fsub = f.add_subparsers(dest="fpga_command", required=True)
    fb = fsub.add_parser("build", help="write a model's hls4ml project (PYNQ driver, Vivado "
                         "block design) and build its bitstream when Vivado is on PATH")
    fb.add_argument("model", help="a zoo model name or an .onnx path")
    fb.add_argument("--board", default="pynq-z2", choices=("pynq-z2", "zcu102"))
    fb.add_argument("--io-type", choices=("io_parallel", "io_stream"))
    fb.add_argument("--strategy", choices=("Latency", "Resource"))
    fb.add_argument("--reuse-factor", type=int)
    fb.add_argument("--calibration", metavar="FILE.npy|.npz", help="int8 calibration inputs "
                    "(zoo models bring their own)")
    fb.set_defaults(func=cmd_fpga_build)


def cmd_fpga_build(args) -> int:
    """0 when a bitstream was built, 1 when the tools are missing (the generated files are
    listed), HalError otherwise."""
    import hal
    from hal.backends.hls4ml_backend import Hls4mlExecutable
    from hal.backends.hls4ml_backend.project import run_board_build, vivado_tools
    from hal.errors import BackendError
    from hal.frontends import to_model
    from hal.inputs import load_calibration

    model = to_model(args.model)
    # opt_level 0: the C simulation library built along the way only needs to exist
    options = {k: v for k, v in (("io_type", args.io_type), ("strategy", args.strategy),
                                 ("reuse_factor", args.reuse_factor)) if v is not None}
    options.update(board=args.board, precision="int8", opt_level=0)
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph):
        options["power_of_two"] = True  # hls4ml computes power-of-two scales exactly
    if args.calibration:
        options["calibration"] = load_calibration(args.calibration, model)
    compiled = hal.compile(model, "fpga@hls4ml", **options)
    projects = [exe.project for exe in compiled.executables if isinstance(exe, Hls4mlExecutable)]
    if not projects:
        raise BackendError(f"no part of {args.model!r} runs on fpga@hls4ml, so there is nothing "
                           f"to build; placement: {sorted(set(compiled.placement.values()))}")
    tools = vivado_tools()
    missing = [t for t, where in tools.items() if where is None]
    for proj in projects:
        print(f"hls4ml project for {args.board}: {proj.path}")
        for f in proj.board_files:
            print(f"  {f}")
    if missing:
        print(f"Vivado is missing: {' and '.join(missing)} not found on PATH, so no bitstream "
              f"was built. The files above were generated; on a machine with Vivado (2019.2 or "
              f"2020.1, with Vivado HLS) run in each project directory:")
        print('  vivado_hls -f build_prj.tcl "reset=0 csim=0 synth=1 cosim=0 validation=0 '
              'export=1 vsynth=0 fifo_opt=0"')
        print("  vivado -mode batch -source design.tcl")
        print("or run this command again there.")
        return 1
    for proj in projects:
        print(f"building {proj.path} with {tools['vivado_hls']} and {tools['vivado']} ...")
        for f in run_board_build(proj):
            print(f"  built {f}")
    return 0
