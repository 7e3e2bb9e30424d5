"""A small Vivado hardware handoff (.hwh) for the pynq stand-in test: TEST FIXTURE, NOT A BUILD
OUTPUT. A real hal_int8.hwh comes from `make -C bitstreams/hal_int8 kv260` (Vivado writes it
next to hal_int8.bit); until a build exists, this one describes the same block design
(bitstreams/hal_int8/vivado/block_design.tcl: a Zynq UltraScale+ PS, the hal_int8_layer IP on
M_AXI_HPM0_FPD, its four AXI masters on S_AXI_HP0_FPD) in the .hwh XML format, with the register
map taken from manifest.json, so that pynq's own parser builds the Overlay's ip_dict from it.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

BASE, RANGE = 0xA0000000, 0x10000


def _params(d: dict, indent: str) -> str:
    return "".join(f'{indent}<PARAMETER NAME={quoteattr(k)} VALUE={quoteattr(str(v))}/>\n'
                   for k, v in d.items())


def _registers(manifest: dict) -> str:
    out = []
    for r in manifest["registers"]:
        access = {"rw": "read-write", "r": "read-only", "w": "write-only",
                  "toc": "read-write"}[r["access"]]
        for part, (offset, width) in enumerate(
                [(int(r["offset"], 16), 32)] if r["width"] <= 32 else
                [(int(r["offset"], 16), 32), (int(r["offset"], 16) + 4, 32)]):
            name = r["name"] if r["width"] <= 32 else f"{r['name']}_{'LO' if part == 0 else 'HI'}"
            out.append(f"""            <REGISTER NAME={quoteattr(name)}>
              <PROPERTY NAME="DESCRIPTION" VALUE={quoteattr(r.get("description", name))}/>
              <PROPERTY NAME="ADDRESS_OFFSET" VALUE="{offset:#x}"/>
              <PROPERTY NAME="SIZE" VALUE="{width}"/>
              <PROPERTY NAME="ACCESS" VALUE="{access}"/>
              <PROPERTY NAME="IS_ENABLED" VALUE="true"/>
              <PROPERTY NAME="RESET_VALUE" VALUE="0x0"/>
              <FIELDS>
                <FIELD NAME={quoteattr(name)}>
                  <PROPERTY NAME="DESCRIPTION" VALUE={quoteattr(name)}/>
                  <PROPERTY NAME="ADDRESS_OFFSET" VALUE="0"/>
                  <PROPERTY NAME="ACCESS" VALUE="{access}"/>
                  <PROPERTY NAME="MODIFIED_READ_VALUES" VALUE=""/>
                  <PROPERTY NAME="WRITE_CONSTRAINT" VALUE="0"/>
                  <PROPERTY NAME="READ_ACTION" VALUE=""/>
                  <PROPERTY NAME="BIT_OFFSET" VALUE="0"/>
                  <PROPERTY NAME="BIT_WIDTH" VALUE="{width}"/>
                </FIELD>
              </FIELDS>
            </REGISTER>
""")
    return "".join(out)


def _aximm(name: str, bus: str, kind: str, width: int, protocol: str, indent: str) -> str:
    return (f'{indent}<BUSINTERFACE BUSNAME="{bus}" DATAWIDTH="{width}" NAME="{name}" '
            f'TYPE="{kind}" VLNV="xilinx.com:interface:aximm:1.0">\n'
            + _params({"DATA_WIDTH": width, "PROTOCOL": protocol, "FREQ_HZ": 200000000,
                       "CLK_DOMAIN": "hal_int8_zynq_ultra_ps_e_0_0_pl_clk0"}, indent + "  ")
            + f"{indent}  <PORTMAPS>\n{indent}  </PORTMAPS>\n{indent}</BUSINTERFACE>\n")


def _ps_params(mhz: int) -> dict:
    """The PS parameters pynq reads: PL clock enables, sources, divisors, frequencies."""
    p = {"C_MAXIGP0_DATA_WIDTH": 32, "C_SAXIGP2_DATA_WIDTH": 128, "PSU__USE__M_AXI_GP0": 1,
         "PSU__USE__S_AXI_GP2": 1, "PSU__USE__IRQ0": 1}
    for i in range(4):
        on = i == 0
        p.update({f"PSU__FPGA_PL{i}_ENABLE": int(on),
                  f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL": "IOPLL",
                  f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0": 5 if on else 4,
                  f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1": 1,
                  f"PSU__CRL_APB__PL{i}_REF_CTRL__FREQMHZ": mhz if on else 250,
                  f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ": mhz if on else 250})
    return p


def hwh_text(manifest: dict, mhz: int = 200) -> str:
    acc = manifest["accelerator"]
    inst, vlnv = acc["instance"], acc["ip_vlnv"]
    mtype = vlnv.split(":")[2]
    ddr = "".join(
        f'        <MEMRANGE ADDRESSBLOCK="HP0_DDR_LOW" BASENAME="C_BASEADDR" BASEVALUE="0x00000000"'
        f' HIGHNAME="C_HIGHADDR" HIGHVALUE="0x7FFFFFFF" INSTANCE="zynq_ultra_ps_e_0" '
        f'IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="m_axi_gmem{i}" '
        f'MEMTYPE="MEMORY" SLAVEBUSINTERFACE="S_AXI_HP0_FPD"/>\n' for i in range(4))
    masters = "".join(_aximm(f"m_axi_gmem{i}", f"{inst}_m_axi_gmem{i}", "MASTER", 128, "AXI4",
                             "        ") for i in range(4))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<!-- TEST FIXTURE for the pynq stand-in test, written by tests/pynq_env/hwh_fixture.py from
     manifest.json; not a Vivado build output (there is no hal_int8.bit) -->
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Thu Jan  1 00:00:00 2026" VIVADOVERSION="2022.1">

  <SYSTEMINFO ARCH="zynquplus" BOARD="xilinx.com:kv260_som:part0:1.3" DEVICE="xck26" NAME="hal_int8" PACKAGE="sfvc784" SPEEDGRADE="-2LV"/>

  <EXTERNALPORTS/>

  <EXTERNALINTERFACES/>

  <MODULES>
    <MODULE COREREVISION="1" FULLNAME="/{inst}" HWVERSION="1.0" INSTANCE="{inst}" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="{mtype}" VLNV="{vlnv}">
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi_control" NAME="Reg" RANGE="{RANGE}" USAGE="register">
          <REGISTERS>
{_registers(manifest)}          </REGISTERS>
        </ADDRESSBLOCK>
      </ADDRESSBLOCKS>
      <PARAMETERS>
{_params({"C_S_AXI_CONTROL_ADDR_WIDTH": 8, "C_S_AXI_CONTROL_DATA_WIDTH": 32,
          "C_S_AXI_CONTROL_BASEADDR": f"{BASE:#010X}",
          "C_S_AXI_CONTROL_HIGHADDR": f"{BASE + RANGE - 1:#010X}",
          "Component_Name": f"hal_int8_{inst}_0", "clk_period": 1000 / mhz}, "        ")}      </PARAMETERS>
      <MEMORYMAP>
{ddr}      </MEMORYMAP>
      <PORTS>
        <PORT CLKFREQUENCY="{mhz * 1000000}" DIR="I" NAME="ap_clk" SIGIS="clk" SIGNAME="zynq_ultra_ps_e_0_pl_clk0">
          <CONNECTIONS>
            <CONNECTION INSTANCE="zynq_ultra_ps_e_0" PORT="pl_clk0"/>
          </CONNECTIONS>
        </PORT>
        <PORT DIR="I" NAME="ap_rst_n" SIGIS="rst" SIGNAME="proc_sys_reset_0_peripheral_aresetn"/>
        <PORT DIR="O" NAME="interrupt" SENSITIVITY="LEVEL_HIGH" SIGIS="INTERRUPT"/>
      </PORTS>
      <BUSINTERFACES>
{_aximm("s_axi_control", "axi_ctrl_M00_AXI", "SLAVE", 32, "AXI4LITE", "        ")}{masters}      </BUSINTERFACES>
    </MODULE>
    <MODULE CONFIGURABLE="TRUE" COREREVISION="20" FULLNAME="/zynq_ultra_ps_e_0" HWVERSION="3.4" INSTANCE="zynq_ultra_ps_e_0" IPTYPE="PERIPHERAL" IS_ENABLE="1" IS_PL="FALSE" MODTYPE="zynq_ultra_ps_e" VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.4">
      <PARAMETERS>
{_params(_ps_params(mhz), "        ")}      </PARAMETERS>
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_S_AXI_CONTROL_BASEADDR" BASEVALUE="{BASE:#010X}" HIGHNAME="C_S_AXI_CONTROL_HIGHADDR" HIGHVALUE="{BASE + RANGE - 1:#010X}" INSTANCE="{inst}" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>
      </MEMORYMAP>
      <PORTS>
        <PORT CLKFREQUENCY="{mhz * 1000000}" DIR="O" NAME="pl_clk0" SIGIS="clk" SIGNAME="zynq_ultra_ps_e_0_pl_clk0">
          <CONNECTIONS>
            <CONNECTION INSTANCE="{inst}" PORT="ap_clk"/>
          </CONNECTIONS>
        </PORT>
      </PORTS>
      <BUSINTERFACES>
{_aximm("M_AXI_HPM0_FPD", "zynq_ultra_ps_e_0_M_AXI_HPM0_FPD", "MASTER", 32, "AXI4", "        ")}{_aximm("S_AXI_HP0_FPD", "axi_mem_M00_AXI", "SLAVE", 128, "AXI4", "        ")}      </BUSINTERFACES>
    </MODULE>
  </MODULES>

</EDKSYSTEM>
"""


def write_hwh(manifest: dict, path: Path, mhz: int = 200) -> Path:
    path = Path(path)
    path.write_text(hwh_text(manifest, mhz), encoding="utf-8")
    return path
