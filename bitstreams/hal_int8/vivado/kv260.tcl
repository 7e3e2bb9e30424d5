# Kria KV260 (K26 SOM, PYNQ 3 / Kria-PYNQ) block design and bitstream for hal_int8_layer.
# Usage (from bitstreams/hal_int8/vivado; `make kv260` does this):
#   vivado -mode batch -source kv260.tcl -tclargs <ip_repo> <out_dir> [clock_mhz]
set ip_repo [expr {[llength $argv] > 0 ? [lindex $argv 0] : "../build/ip_kv260"}]
set out     [expr {[llength $argv] > 1 ? [lindex $argv 1] : "../kv260"}]
set mhz     [expr {[llength $argv] > 2 ? [lindex $argv 2] : 200}]
source [file join [file dirname [info script]] block_design.tcl]
hal_int8_build kv260 xck26-sfvc784-2LV-c xilinx.com:kv260_som:part0:1.3 $mhz $ip_repo $out \
    {som240_1_connector xilinx.com:kv260_carrier:som240_1_connector:1.3}
