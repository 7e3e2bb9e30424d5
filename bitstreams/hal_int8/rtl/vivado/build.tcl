# The Verilog hal_int8 as a Vivado IP, in a block design with the processing system, for the
# PYNQ boards; bitstream and .hwh (same base name, as pynq.Overlay expects).
#
#   vivado -mode batch -nojournal -nolog -source build.tcl -tclargs <board> [mhz] [pe_out] [pe_in]
#
# board: pynq-z2 (Zynq-7020), kv260, zcu104 (Zynq UltraScale+). Outputs in
# ../../build/rtl/<board>/: hal_int8.bit, hal_int8.hwh, utilization and timing reports.
# Bus: PS master (GP0 / HPM0) -> AXI interconnect -> s_axi_control; m_axi_gmem -> SmartConnect
# -> HP0 -> DDR; ap_done -> PS interrupt. Same register map as the HLS IP (manifest.json).
set here [file dirname [file normalize [info script]]]
set board [lindex $argv 0]
set mhz [expr {[llength $argv] > 1 ? [lindex $argv 1] : 100}]
set pe_out [expr {[llength $argv] > 2 ? [lindex $argv 2] : 8}]
set pe_in [expr {[llength $argv] > 3 ? [lindex $argv 3] : 8}]
set boards {
    pynq-z2 {xc7z020clg400-1 tul.com.tw:pynq-z2:part0:1.0 zynq7}
    kv260   {xck26-sfvc784-2LV-c xilinx.com:kv260_som:part0:1.3 zynqmp}
    zcu104  {xczu7ev-ffvc1156-2-e xilinx.com:zcu104:part0:1.1 zynqmp}
}
if {![dict exists $boards $board]} {
    error "board must be one of [dict keys $boards], got '$board'"
}
lassign [dict get $boards $board] part board_part ps_kind
set out [file normalize $here/../../build/rtl/$board]
set ip_dir [file normalize $here/../../build/rtl/ip_$board]
file mkdir $out

# ---- 1. package the RTL as IP hal:rtl:hal_int8:1.0 ----
create_project -force ip_$board $ip_dir/project -part $part
add_files -norecurse [lmap f {hal_int8.v hal_int8_core.v hal_int8_ram.v hal_int8_seqmath.v
                              hal_int8_requant.v hal_int8_axi_rd.v hal_int8_axi_wr.v} {
    file join $here .. $f}]
set_property top hal_int8 [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $ip_dir/hal_int8 -vendor hal -library rtl -taxonomy /UserIP \
    -import_files -force
set core [ipx::current_core]
set_property name hal_int8 $core
set_property version 1.0 $core
set_property display_name "hal_int8 (Verilog)" $core
foreach {p v} [list PE_OUT $pe_out PE_IN $pe_in] {
    set_property value $v [ipx::get_user_parameters $p -of_objects $core]
}
# port-name prefixes make Vivado infer s_axi_control (AXI4-Lite) and m_axi_gmem (AXI4)
ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core
ipx::associate_bus_interfaces -busif s_axi_control -clock ap_clk $core
ipx::associate_bus_interfaces -busif m_axi_gmem -clock ap_clk $core
set_property value ap_rst_n [ipx::get_bus_parameters ASSOCIATED_RESET \
    -of_objects [ipx::get_bus_interfaces ap_clk -of_objects $core]]
set mm [ipx::add_memory_map s_axi_control $core]
set_property slave_memory_map_ref s_axi_control [ipx::get_bus_interfaces s_axi_control -of_objects $core]
set blk [ipx::add_address_block reg0 $mm]
set_property range 256 $blk
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::save_core $core
close_project

# ---- 2. block design ----
create_project -force hal_int8_rtl_$board $out/project -part $part
set_property board_part $board_part [current_project]
set_property ip_repo_paths $ip_dir/hal_int8 [current_project]
update_ip_catalog
create_bd_design hal_int8
set acc [create_bd_cell -type ip -vlnv hal:rtl:hal_int8:1.0 hal_int8_0]
set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]
set ctl [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect axi_ctrl]
set_property CONFIG.NUM_MI {1} $ctl
set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_mem]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $mem
if {$ps_kind eq "zynq7"} {
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 ps7_0]
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config {make_external "FIXED_IO, DDR" apply_board_preset "1"} $ps
    set_property -dict [list CONFIG.PCW_USE_M_AXI_GP0 {1} CONFIG.PCW_USE_S_AXI_HP0 {1} \
        CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {64} CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $mhz \
        CONFIG.PCW_USE_FABRIC_INTERRUPT {1} CONFIG.PCW_IRQ_F2P_INTR {1}] $ps
    set clk [get_bd_pins $ps/FCLK_CLK0]
    set clk_pins [list $ps/M_AXI_GP0_ACLK $ps/S_AXI_HP0_ACLK]
    set resetn [get_bd_pins $ps/FCLK_RESET0_N]
    set master [get_bd_intf_pins $ps/M_AXI_GP0]
    set slave [get_bd_intf_pins $ps/S_AXI_HP0]
    set irq [get_bd_pins $ps/IRQ_F2P]
} else {
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
    set_property -dict [list CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \
        CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} CONFIG.PSU__SAXIGP2__DATA_WIDTH {128} \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $mhz CONFIG.PSU__USE__IRQ0 {1}] $ps
    set clk [get_bd_pins $ps/pl_clk0]
    set clk_pins [list $ps/maxihpm0_fpd_aclk $ps/saxihp0_fpd_aclk]
    set resetn [get_bd_pins $ps/pl_resetn0]
    set master [get_bd_intf_pins $ps/M_AXI_HPM0_FPD]
    set slave [get_bd_intf_pins $ps/S_AXI_HP0_FPD]
    set irq [get_bd_pins $ps/pl_ps_irq0]
}
foreach pin [concat $clk_pins [list $acc/ap_clk $rst/slowest_sync_clk $ctl/ACLK $ctl/S00_ACLK \
                                    $ctl/M00_ACLK $mem/aclk]] {
    connect_bd_net $clk [get_bd_pins $pin]
}
connect_bd_net $resetn [get_bd_pins $rst/ext_reset_in]
connect_bd_net [get_bd_pins $rst/interconnect_aresetn] [get_bd_pins $ctl/ARESETN]
foreach pin [list $acc/ap_rst_n $ctl/S00_ARESETN $ctl/M00_ARESETN $mem/aresetn] {
    connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $pin]
}
connect_bd_intf_net $master [get_bd_intf_pins $ctl/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $ctl/M00_AXI] [get_bd_intf_pins $acc/s_axi_control]
connect_bd_intf_net [get_bd_intf_pins $acc/m_axi_gmem] [get_bd_intf_pins $mem/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $mem/M00_AXI] $slave
connect_bd_net [get_bd_pins $acc/interrupt] $irq
assign_bd_address
validate_bd_design
save_bd_design

# ---- 3. implementation ----
set bd_file [get_files hal_int8.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top hal_int8_wrapper [current_fileset]
update_compile_order -fileset sources_1
launch_runs impl_1 -to_step write_bitstream -jobs [expr {max(1, [exec nproc] / 2)}]
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "implementation of the hal_int8 RTL for $board failed: see $out/project"
}
open_run impl_1
report_utilization -file $out/utilization.rpt
report_timing_summary -file $out/timing.rpt
file copy -force [glob $out/project/*.runs/impl_1/hal_int8_wrapper.bit] $out/hal_int8.bit
file copy -force [glob $out/project/*.gen/sources_1/bd/hal_int8/hw_handoff/hal_int8.hwh] \
    $out/hal_int8.hwh
puts "hal_int8 RTL: wrote $out/hal_int8.bit and $out/hal_int8.hwh"
