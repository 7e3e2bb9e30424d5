# ZCU104 (PYNQ 3) block design and bitstream for hal_int8_layer.
# Usage (from bitstreams/hal_int8/vivado; `make zcu104` does this):
#   vivado -mode batch -source zcu104.tcl -tclargs <ip_repo> <out_dir> [clock_mhz]
set ip_repo [expr {[llength $argv] > 0 ? [lindex $argv 0] : "../build/ip_zcu104"}]
set out     [expr {[llength $argv] > 1 ? [lindex $argv 1] : "../zcu104"}]
set mhz     [expr {[llength $argv] > 2 ? [lindex $argv 2] : 200}]
source [file join [file dirname [info script]] block_design.tcl]
hal_int8_build zcu104 xczu7ev-ffvc1156-2-e xilinx.com:zcu104:part0:1.1 $mhz $ip_repo $out
