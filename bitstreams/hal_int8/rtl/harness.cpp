// Co-simulation harness of the Verilated hal_int8: an AXI4-lite host (register reads and writes
// as bus transactions) and an AXI4 memory model (fixed read and write-response latencies),
// exported with a C ABI for backends/fpga/transports/rtl.py (ctypes).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "Vhal_int8.h"
#include "Vhal_int8___024root.h"
#include "verilated.h"

namespace {

struct Burst {
    uint64_t addr;
    int beats;
    uint64_t ready_at;
};

struct Sim {
    VerilatedContext ctx;
    Vhal_int8 *top;
    uint8_t *mem;
    uint64_t base, size;
    int rd_latency, wr_latency;
    uint64_t ticks = 0;
    uint64_t bad_accesses = 0;
    std::deque<Burst> reads;            // accepted read bursts (one served at a time)
    std::deque<uint64_t> aw_queue;      // write addresses waiting for their data
    std::deque<std::pair<uint32_t, uint8_t>> w_queue;  // data + strobes waiting for an address
    std::deque<uint64_t> b_due;         // cycle at which each write response is given
};

uint8_t *at(Sim *s, uint64_t addr) {
    if (addr < s->base || addr + 4 > s->base + s->size) {
        ++s->bad_accesses;
        return nullptr;
    }
    return s->mem + (addr - s->base);
}

// One clock cycle: handshakes are sampled on the values both sides drive before the edge.
void tick(Sim *s) {
    Vhal_int8 *t = s->top;
    t->ap_clk = 0;
    t->eval();
    const bool ar = t->m_axi_gmem_arvalid && t->m_axi_gmem_arready;
    const bool r = t->m_axi_gmem_rvalid && t->m_axi_gmem_rready;
    const bool aw = t->m_axi_gmem_awvalid && t->m_axi_gmem_awready;
    const bool w = t->m_axi_gmem_wvalid && t->m_axi_gmem_wready;
    const bool b = t->m_axi_gmem_bvalid && t->m_axi_gmem_bready;
    const uint64_t araddr = t->m_axi_gmem_araddr, awaddr = t->m_axi_gmem_awaddr;
    const int arlen = t->m_axi_gmem_arlen;
    const uint32_t wdata = t->m_axi_gmem_wdata;
    const uint8_t wstrb = t->m_axi_gmem_wstrb;
    t->ap_clk = 1;
    t->eval();
    ++s->ticks;

    if (ar) s->reads.push_back({araddr, arlen + 1, s->ticks + s->rd_latency});
    if (r) {
        Burst &cur = s->reads.front();
        cur.addr += 4;
        if (--cur.beats == 0) s->reads.pop_front();
    }
    if (aw) s->aw_queue.push_back(awaddr);
    if (w) s->w_queue.push_back({wdata, wstrb});
    while (!s->aw_queue.empty() && !s->w_queue.empty()) {
        uint8_t *p = at(s, s->aw_queue.front());
        auto [data, strb] = s->w_queue.front();
        for (int i = 0; i < 4; ++i)
            if (p && (strb >> i & 1)) p[i] = uint8_t(data >> (8 * i));
        s->aw_queue.pop_front();
        s->w_queue.pop_front();
        s->b_due.push_back(s->ticks + s->wr_latency);
    }
    if (b) s->b_due.pop_front();

    // drive the slave side for the next cycle
    t->m_axi_gmem_arready = s->reads.size() < 2;
    const bool rv = !s->reads.empty() && s->ticks >= s->reads.front().ready_at;
    t->m_axi_gmem_rvalid = rv;
    if (rv) {
        const uint8_t *p = at(s, s->reads.front().addr);
        uint32_t v = 0;
        if (p) std::memcpy(&v, p, 4);
        t->m_axi_gmem_rdata = v;
        t->m_axi_gmem_rlast = s->reads.front().beats == 1;
    } else {
        t->m_axi_gmem_rlast = 0;
    }
    t->m_axi_gmem_awready = s->aw_queue.size() < 4;
    t->m_axi_gmem_wready = s->w_queue.size() < 4;
    t->m_axi_gmem_bvalid = !s->b_due.empty() && s->ticks >= s->b_due.front();
}

}  // namespace

extern "C" {

void *hal_rtl_new(uint64_t base, uint64_t size, int rd_latency, int wr_latency) {
    Sim *s = new Sim;
    s->top = new Vhal_int8{&s->ctx};
    s->mem = static_cast<uint8_t *>(std::calloc(size, 1));
    s->base = base;
    s->size = size;
    s->rd_latency = rd_latency;
    s->wr_latency = wr_latency;
    Vhal_int8 *t = s->top;
    t->ap_rst_n = 0;
    for (int i = 0; i < 4; ++i) tick(s);
    t->ap_rst_n = 1;
    tick(s);
    s->ticks = 0;
    return s;
}

void hal_rtl_free(void *h) {
    Sim *s = static_cast<Sim *>(h);
    s->top->final();
    delete s->top;
    std::free(s->mem);
    delete s;
}

uint8_t *hal_rtl_mem(void *h) { return static_cast<Sim *>(h)->mem; }
uint64_t hal_rtl_ticks(void *h) { return static_cast<Sim *>(h)->ticks; }
uint64_t hal_rtl_bad_accesses(void *h) { return static_cast<Sim *>(h)->bad_accesses; }

// AXI4-lite write of one 32-bit register; returns 0, or -1 if the slave never answered.
int hal_rtl_write(void *h, uint32_t offset, uint32_t value) {
    Sim *s = static_cast<Sim *>(h);
    Vhal_int8 *t = s->top;
    t->s_axi_control_awaddr = offset;
    t->s_axi_control_awvalid = 1;
    t->s_axi_control_wdata = value;
    t->s_axi_control_wstrb = 0xF;
    t->s_axi_control_wvalid = 1;
    t->s_axi_control_bready = 1;
    for (int i = 0; i < 1000; ++i) {
        t->ap_clk = 0;
        t->eval();
        const bool aw = t->s_axi_control_awvalid && t->s_axi_control_awready;
        const bool w = t->s_axi_control_wvalid && t->s_axi_control_wready;
        const bool b = t->s_axi_control_bvalid;
        tick(s);
        if (aw) t->s_axi_control_awvalid = 0;
        if (w) t->s_axi_control_wvalid = 0;
        if (b) {
            t->s_axi_control_bready = 0;
            return 0;
        }
    }
    return -1;
}

// AXI4-lite read of one 32-bit register; -1 in *ok if the slave never answered.
uint32_t hal_rtl_read(void *h, uint32_t offset, int *ok) {
    Sim *s = static_cast<Sim *>(h);
    Vhal_int8 *t = s->top;
    t->s_axi_control_araddr = offset;
    t->s_axi_control_arvalid = 1;
    t->s_axi_control_rready = 1;
    for (int i = 0; i < 1000; ++i) {
        t->ap_clk = 0;
        t->eval();
        const bool ar = t->s_axi_control_arvalid && t->s_axi_control_arready;
        const bool r = t->s_axi_control_rvalid;
        const uint32_t v = t->s_axi_control_rdata;
        tick(s);
        if (ar) t->s_axi_control_arvalid = 0;
        if (r) {
            t->s_axi_control_rready = 0;
            *ok = 0;
            return v;
        }
    }
    *ok = -1;
    return 0;
}

// Clock until ap_done is set; returns the cycles run, or -1 after max_cycles.
int64_t hal_rtl_run(void *h, uint64_t max_cycles) {
    Sim *s = static_cast<Sim *>(h);
    for (uint64_t i = 0; i < max_cycles; ++i) {
        if (s->top->rootp->hal_int8__DOT__ap_done) return int64_t(i);
        tick(s);
    }
    return -1;
}

}  // extern "C"
