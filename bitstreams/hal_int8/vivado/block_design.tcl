# Block design shared by the Zynq UltraScale+ MPSoC boards (sourced by kv260.tcl, zcu104.tcl):
#   PS (board preset) --M_AXI_HPM0_FPD--> AXI Interconnect --> hal_int8_layer s_axi_control
#   hal_int8_layer m_axi_gmem0..3 --> SmartConnect --> S_AXI_HP0_FPD (128 bit) --> DDR
#   pl_clk0 at $mhz clocks everything; proc_sys_reset from pl_resetn0; interrupt -> pl_ps_irq0
# Then synthesis, implementation, bitstream; hal_int8.bit and hal_int8.hwh (same base name, as
# pynq.Overlay expects) plus utilization and timing reports are copied to $out.
#
# Expects: $board (kv260|zcu104), $part, $board_part, $mhz, $ip_repo, $out, optional
# $board_connections.
proc hal_int8_build {board part board_part mhz ip_repo out {board_connections ""}} {
    set proj_dir [file normalize ../build/vivado_$board]
    create_project -force hal_int8_$board $proj_dir -part $part
    set_property board_part $board_part [current_project]
    if {$board_connections ne ""} {
        set_property board_connections $board_connections [current_project]
    }
    # run_hls.tcl exports the IP as a zip; Vivado's catalog takes it once unpacked into a repo.
    set repo [file normalize $proj_dir/ip_repo]
    file mkdir $repo
    set_property ip_repo_paths $repo [current_project]
    update_ip_catalog
    update_ip_catalog -add_ip [file normalize $ip_repo/hal_int8_layer.zip] -repo_path $repo

    create_bd_design hal_int8
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
    set_property -dict [list \
        CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \
        CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} CONFIG.PSU__SAXIGP2__DATA_WIDTH {128} \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $mhz \
        CONFIG.PSU__USE__IRQ0 {1}] $ps

    set acc [create_bd_cell -type ip -vlnv hal:hls:hal_int8_layer:1.0 hal_int8_layer_0]
    set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]
    set ctl [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect axi_ctrl]
    set_property CONFIG.NUM_MI {1} $ctl
    set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_mem]
    set_property -dict [list CONFIG.NUM_SI {4} CONFIG.NUM_MI {1}] $mem

    set clk [get_bd_pins $ps/pl_clk0]
    foreach pin [list $ps/maxihpm0_fpd_aclk $ps/saxihp0_fpd_aclk $acc/ap_clk \
                     $rst/slowest_sync_clk $ctl/ACLK $ctl/S00_ACLK $ctl/M00_ACLK $mem/aclk] {
        connect_bd_net $clk [get_bd_pins $pin]
    }
    connect_bd_net [get_bd_pins $ps/pl_resetn0] [get_bd_pins $rst/ext_reset_in]
    connect_bd_net [get_bd_pins $rst/interconnect_aresetn] [get_bd_pins $ctl/ARESETN]
    foreach pin [list $acc/ap_rst_n $ctl/S00_ARESETN $ctl/M00_ARESETN $mem/aresetn] {
        connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $pin]
    }
    connect_bd_intf_net [get_bd_intf_pins $ps/M_AXI_HPM0_FPD] [get_bd_intf_pins $ctl/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins $ctl/M00_AXI] [get_bd_intf_pins $acc/s_axi_control]
    foreach i {0 1 2 3} {
        connect_bd_intf_net [get_bd_intf_pins $acc/m_axi_gmem$i] [get_bd_intf_pins $mem/S0${i}_AXI]
    }
    connect_bd_intf_net [get_bd_intf_pins $mem/M00_AXI] [get_bd_intf_pins $ps/S_AXI_HP0_FPD]
    connect_bd_net [get_bd_pins $acc/interrupt] [get_bd_pins $ps/pl_ps_irq0]

    assign_bd_address
    validate_bd_design
    save_bd_design

    set bd_file [get_files hal_int8.bd]
    generate_target all $bd_file
    add_files -norecurse [make_wrapper -files $bd_file -top]
    set_property top hal_int8_wrapper [current_fileset]
    update_compile_order -fileset sources_1

    launch_runs impl_1 -to_step write_bitstream -jobs [expr {max(1, [exec nproc] / 2)}]
    wait_on_run impl_1
    if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
        error "implementation of hal_int8 for $board failed: see $proj_dir"
    }
    file mkdir $out
    open_run impl_1
    report_utilization -file $out/utilization.rpt
    report_timing_summary -file $out/timing.rpt
    file copy -force [glob $proj_dir/*.runs/impl_1/hal_int8_wrapper.bit] $out/hal_int8.bit
    file copy -force [glob $proj_dir/*.gen/sources_1/bd/hal_int8/hw_handoff/hal_int8.hwh] \
        $out/hal_int8.hwh
    puts "hal_int8: wrote $out/hal_int8.bit and $out/hal_int8.hwh"
}
