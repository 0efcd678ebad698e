; matmul.s -- y = x @ w on the MXM: x is f16 [4, 16] (activations), w is f16 [16, 16] (weights),
; y is f32 [4, 16]. Shows weight installation, the f16 rate and the accumulator read-out.
;
; tiny floorplan: 1 MXM_W0 | 2 SXM_W | 3..6 MEM_W7..MEM_W4 | 7 MEM_W3 | 8 MEM_W2 | 9 MEM_W1 | 10 MEM_W0 | 11 VXM
; Data flows west (W streams) into the plane at position 1 and comes back east (E streams).
;
; 1. IW: the 16 weight rows (f16 = 2 byte planes, in MEM_W0 and MEM_W1) travel on group W0. Plane k
;    leaves MEM_Wk (position 10-k) L.mem_read = 1 cycle after its READ and needs 9-k more cycles to
;    reach position 1, so READs in cycles 0 and 1 meet at the plane in cycle 10, where IW takes one
;    row per cycle (10..25). The buffer is ready in 10 + 16 - 1 + L.mxm_install(2) = 27.
; 2. MATMUL.f16 in cycle 27: x (planes in MEM_W2, MEM_W3, on group W2) enters the activation buffer
;    in cycles 27..30 (READs in 19 and 20). An f16 pass takes cpv = 4 cycles (a quarter of the i8
;    rate), so row j of the accumulator is written in 27 + 4j + L.mxm_matmul(4): 31, 35, 39, 43.
; 3. ACCR reads row j in cycle t + j, which must come after the row was written: t = 41 is the
;    first cycle that works (row 3 is read in 44 > 43). y (f32, group E0) is on the streams in
;    42..45; plane k reaches MEM_W(3-k) at position 7+k in cycle 48+k, where a WRITE stores it.
; The last word is written in 51 + 3 + L.mem_write(1) = 55, so the program takes 56 cycles.
.chip tiny
.tensor w const f16 [16, 16] planes=MEM_W0@0,MEM_W1@0 = [1, -1, -0.875, -0.625, 1, 0.375, 0.75, -0.625, 0.5, -0.25, 0, -1, 0.25, 0.75, 0.375, -0.75, 0.125, -0.5, 1, 0.75, -0.625, 0, 0.875, 0.75, 0.5, 0.25, -1, 0.5, 0, -0.875, -0.5, 0.125, 0.5, 0, 0.25, 0.75, 0.375, -0.25, 0.25, 0.25, -0.875, -0.875, 0.375, -0.25, 0.25, -0.375, -0.625, -0.75, -0.25, 0.625, -0.25, -0.25, 0.125, 1, -0.25, 0.25, -0.125, 0.25, -0.125, 0.25, 0.125, 0.375, 1, -0.75, 0.125, -0.125, -0.25, -0.5, -1, -0.25, 0.75, -0.875, -0.25, 1, 1, -0.625, -1, 0.375, -1, -0.375, 0, 0.75, -0.875, 0.375, 0.125, -0.75, 0.75, 0.75, 0, 1, 0.25, 0.875, 1, 0.125, -0.5, -0.75, 0.125, -0.625, 0.5, 0.875, -0.5, 0.125, -1, -0.625, -0.25, 0.875, 1, 0.25, 0.125, 0.125, -0.875, -0.25, 1, -0.25, -0.625, -0.5, 0.5, -1, 1, 0.75, 0.125, -0.125, 0.5, 0.125, 0, -0.375, -0.125, 0.5, -1, -1, 0.5, -0.25, 0.625, -1, 0.875, -0.75, -0.125, 1, -0.875, 0.375, 0.5, -0.125, -0.875, 0, -0.125, 0.75, 0.375, -0.375, -1, 0.25, -0.5, 0.375, 0.75, -0.25, 0.875, 0, 0.125, 0.625, 0.625, 0.875, 1, -0.75, -0.125, 0.875, -0.375, -1, 0.125, 0.5, 0.5, 0.625, 0.25, -0.75, 0.75, -0.125, 0.75, 0.625, 1, -1, 0.75, 0.25, 0, 0.625, 1, 0, -0.875, 0.5, -0.625, -0.625, -0.625, -0.625, 0.875, -0.25, -0.875, -0.625, -0.25, -0.375, -0.375, 1, 0.75, 0.125, 1, -0.375, -0.75, -0.5, -0.875, 1, -0.625, -0.125, -0.625, 1, -0.75, 0, 1, 0, 0.875, 0.875, 0.625, 0.5, 0.125, 0.125, 0.75, -0.125, 1, 0.75, -0.25, -0.25, 0.5, 0.875, -0.875, -0.875, -0.5, -0.125, -0.75, 0, 0.125, 1, 0.5, -0.5, 0.625, 0.625, 0.375, 0.375, -0.375, 0.5, -0.75, 0.25, 0.875, 1, -0.375, -0.375, 0.25, -0.25, 0.5, -0.625, -0.75, -1]
.tensor x const f16 [4, 16] planes=MEM_W2@0,MEM_W3@0 = [2, 0.5, 0.75, 1.75, 0.25, 1.25, 1.5, -1.25, -2, -0.75, -1, 1.5, 1.75, -2, 0, 1.25, -1.5, 1.25, -1.5, -0.25, 1.25, -0.75, -0.75, -1, 1, -1, 2, -0.25, 0, 0, 0.25, 0.25, 0, 2, 1.25, 1.25, 0.75, 0.5, -0.75, 2, -0.25, -1.25, 1.5, -1.5, 1.5, 0.5, -1.75, -2, -0.25, -2, -1.5, 0, 2, -0.25, 1.25, 1.75, 1.25, 0.5, -0.25, 0, -1, 0, -0.5, -1]
.tensor y output f32 [4, 16] planes=MEM_W3@32,MEM_W2@32,MEM_W1@32,MEM_W0@32

.queue MXM_W0
@10 IW.f16 buf=0, s=W0, n=16, clr=1
@27 MATMUL.f16 buf=0, s=W2, n=4, acc=0, mode=0
@41 ACCR acc=0, n=4, to=f32, d=E0

.queue MEM_W0
@0 READ addr=0, n=16, s=W0
@51 WRITE addr=32, n=4, s=E3
.queue MEM_W1
@1 READ addr=0, n=16, s=W1
@50 WRITE addr=32, n=4, s=E2
.queue MEM_W2
@19 READ addr=0, n=4, s=W2
@49 WRITE addr=32, n=4, s=E1
.queue MEM_W3
@20 READ addr=0, n=4, s=W3
@48 WRITE addr=32, n=4, s=E0
