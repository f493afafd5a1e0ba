// fqsr_stream_fifo.v: a valid/ready FIFO of DEPTH beats (the skip FIFO of a residual add),
// Verilog-2005, synthesizable style, lint-clean under verilator --lint-only -Wall. WIDTH bits a
// beat (data with TUSER/TLAST beside it, as the caller packs them). s_tready = not full, which
// does not depend on s_tvalid; the head is shown on m_tdata while m_tvalid (first word falls
// through). `level` is the occupancy, for the testbenches' high-water marks.
module fqsr_stream_fifo #(
    parameter WIDTH = 18,
    parameter DEPTH = 16
) (
    input  wire              clk,
    input  wire              rst,
    input  wire [WIDTH-1:0]  s_tdata,
    input  wire              s_tvalid,
    output wire              s_tready,
    output wire [WIDTH-1:0]  m_tdata,
    output wire              m_tvalid,
    input  wire              m_tready,
    output reg  [31:0]       level
);
    localparam AW = (DEPTH <= 1) ? 1 : $clog2(DEPTH);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] rd, wr;
    wire push = s_tvalid && s_tready;
    wire pop = m_tvalid && m_tready;
    assign s_tready = !rst && (level < DEPTH);
    assign m_tvalid = (level != 0);
    assign m_tdata = mem[rd];
    // the next pointer, wrapping at DEPTH (not necessarily a power of two)
    function [AW-1:0] next;
        input [AW-1:0] v;
        begin
            next = ({{(32-AW){1'b0}}, v} == DEPTH - 1) ? {AW{1'b0}} : v + 1'b1;
        end
    endfunction
    always @(posedge clk) begin
        if (rst) begin
            rd <= {AW{1'b0}};
            wr <= {AW{1'b0}};
            level <= 32'd0;
        end else begin
            if (push) begin
                mem[wr] <= s_tdata;
                wr <= next(wr);
            end
            if (pop) rd <= next(rd);
            if (push && !pop) level <= level + 32'd1;
            else if (pop && !push) level <= level - 32'd1;
        end
    end
endmodule
