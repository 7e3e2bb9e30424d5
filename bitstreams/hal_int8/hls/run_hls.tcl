# C synthesis of hal_int8_layer and export as a Vivado IP (ip_catalog zip).
# Usage (from bitstreams/hal_int8/hls; `make kv260` does this):
#   vitis_hls -f run_hls.tcl -tclargs <part> <clock_mhz> <out_dir>
# The C testbench is HAL's test suite: tests/test_fpga_accelerator.py runs this same file, compiled
# with g++, against hal.backends.fpga.spec; csim is therefore not repeated here.
set part  [expr {[llength $argv] > 0 ? [lindex $argv 0] : "xck26-sfvc784-2LV-c"}]
set mhz   [expr {[llength $argv] > 1 ? [lindex $argv 1] : 200}]
set out   [expr {[llength $argv] > 2 ? [lindex $argv 2] : "../build/ip"}]

open_project -reset ../build/hls_prj
set_top hal_int8_layer
add_files hal_int8.cpp -cflags "-std=c++14 -I."
add_files hal_int8.h
add_files hal_int8_params.h
open_solution -reset sol -flow_target vivado
set_part $part
create_clock -period [expr {1000.0 / $mhz}] -name default
config_interface -m_axi_addr64
config_export -format ip_catalog -vendor hal -library hls -version 1.0 \
    -ipname hal_int8_layer -display_name "HAL int8 layer accelerator" -rtl verilog
csynth_design
file mkdir $out
export_design -format ip_catalog -output [file normalize $out/hal_int8_layer.zip]
# The generated register header: hls/check_regmap.py compares it with manifest.json.
foreach f [glob -nocomplain ../build/hls_prj/sol/impl/misc/drivers/*/src/*_hw.h] {
    file copy -force $f $out/
}
exit
