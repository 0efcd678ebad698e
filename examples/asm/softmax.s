; softmax.s -- y = softmax(x) along the 16 lanes of each of 2 rows (f32), all on the VXM:
;     m = RMAX(x);  e = EXP(x - m);  s = RSUM(e);  y = e / s
;
; Streams hold no data: a value is at the VXM (position 11) for exactly one cycle. So x is read
; from SRAM twice (for RMAX and for SUB), and e, which the DIV needs 4 cycles after it appears,
; is kept alive by two MOVs on a free ALU (a two-cycle delay line each). tiny has 8 streams per
; direction, i.e. two f32 groups (E0, E4, W0, W4); every group is reused once its earlier value
; has moved on.
;
; cycle  ALU   op                      reads at VXM        writes at VXM (latency)
;   5    VXM0  RMAX   x -> E4          x on E0 (5,6)       m on E4 (9,10)   (L.vxm_reduce = 4)
;   9    VXM1  SUB    x - m -> W4      x on E0, m on E4    W4 (11,12)       (L.vxm_alu = 2)
;  11    VXM2  EXP    -> W0            W4                  W0 (15,16)       (L.vxm_transcendental = 4)
;  15    VXM3  RSUM   -> E4            W0                  E4 (19,20)
;  15    VXM0  MOV    e -> E0          W0                  E0 (17,18)
;  17    VXM0  MOV    e -> W4          E0                  W4 (19,20)
;  19    VXM1  DIV    e / s -> E0      W4, E4              E0 (21,22)
; x plane k (MEM_Wk, position 10-k) is READ in cycles 3-k and 7-k to pass the VXM in 5 and 9.
; y plane k reaches MEM_Ek (position 12+k) in cycle 22+k; the last word is written in
; 25 + 1 + L.mem_write(1) = 27, so the program takes 28 cycles.
.chip tiny
.tensor x const f32 [2, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0 = [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, -3.32478, -3.64831, 4.0066, -1.52131, 0.875041, -0.101371, -1.32344, -1.52388, 1.89025, -0.905603, -0.454331, 0.0666647, 3.52953, 2.04153, 1.1478, -1.69071]
.tensor y output f32 [2, 16] planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0

.queue MEM_W3
@0 READ addr=0, n=2, s=E3
@4 READ addr=0, n=2, s=E3
.queue MEM_W2
@1 READ addr=0, n=2, s=E2
@5 READ addr=0, n=2, s=E2
.queue MEM_W1
@2 READ addr=0, n=2, s=E1
@6 READ addr=0, n=2, s=E1
.queue MEM_W0
@3 READ addr=0, n=2, s=E0
@7 READ addr=0, n=2, s=E0

.queue VXM0
@5 RMAX.f32 a=E0, n=2, m=16, d=E4
@15 MOV.f32 a=W0, n=2, d=E0
@17 MOV.f32 a=E0, n=2, d=W4
.queue VXM1
@9 SUB.f32 a=E0, b=E4, n=2, d=W4
@19 DIV.f32 a=W4, b=E4, n=2, d=E0
.queue VXM2
@11 EXP.f32 a=W4, n=2, d=W0
.queue VXM3
@15 RSUM.f32 a=W0, n=2, m=16, d=E4

.queue MEM_E0
@22 WRITE addr=0, n=2, s=E0
.queue MEM_E1
@23 WRITE addr=0, n=2, s=E1
.queue MEM_E2
@24 WRITE addr=0, n=2, s=E2
.queue MEM_E3
@25 WRITE addr=0, n=2, s=E3
