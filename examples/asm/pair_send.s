; pair_send.s -- two chips: chip 0 sends x (f32 [2, 16]) over link 0, chip 1 computes y = x + 1.
;
; System pair-tiny: two tiny chips, link 0 <-> link 0 and link 1 <-> link 1. Floorplan of each chip:
;   0 C2C0 | 1 MXM_W0 | 2 SXM_W | 3..10 MEM_W7..MEM_W0 | 11 VXM0..3, ICU |
;   12..19 MEM_E0..MEM_E7 | 20 SXM_E | 21 MXM_E0 | 22 C2C1
; Both chips count the same global cycles (lockstep), so every cycle below is one clock.
;
; Chip 0. x keeps plane k in MEM_Wk (position 10-k); plane k travels west on Wk to C2C0
; (position 0). SEND reads vector j in cycle t+j, so with the SEND in cycle 12 a READ at position p
; issues in 12 - L.mem_read - p = 11 - p: MEM_W0 @1, MEM_W1 @2, MEM_W2 @3, MEM_W3 @4.
; The link carries c2c.bytes_per_cycle = 4 bytes a cycle; an f32 vector is 4 x 16 = 64 bytes, so
; cv = cdiv(64, 4) = 16 cycles a vector, and vector j arrives in chip 1's FIFO of link 0 in
;     12 + (j+1)*16 + c2c.latency (20) = 48 (j = 0), 64 (j = 1).
; (The tx port is busy in cycles 12..43: another SEND on link 0 may issue from cycle 44.)
;
; Chip 1. RECV takes vector j in cycle t+j, which must not be before its arrival:
;     t >= max(48 - 0, 64 - 1) = 63.
; It writes vector j on E0..E3 at position 0 in 63 + L.c2c_recv + j = 64 + j; the values reach the
; VXM (position 11) in 75 + j, where ADD.f32 reads them (b is the immediate 1.0) and writes y on
; E4..E7 in 75 + L.vxm_alu + j = 77 + j. MEM_Ek (position 12+k) takes plane k in 78 + k + j, so
; its WRITE issues in 78 + k. The last word (MEM_E3, vector 1) is taken in cycle 82 and written in
; 82 + L.mem_write = 83, so the program takes 84 cycles.
.system pair-tiny
.tensor x const f32 [2, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, -0.5, 0.25, -1, 1e-3, 3.5, 100, -7, 0.125, 1e30, -1e30, 0.1, -2, 65504, 1.5, -0, 16777216]
.tensor y output f32 [2, 16] chip=1 planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0

; chip 0: read x towards the link, send it
.queue C2C0
@12 SEND.f32 s=W0, n=2
.queue MEM_W3
@4 READ addr=0, n=2, s=W3
.queue MEM_W2
@3 READ addr=0, n=2, s=W2
.queue MEM_W1
@2 READ addr=0, n=2, s=W1
.queue MEM_W0
@1 READ addr=0, n=2, s=W0

; chip 1: receive, add 1, store
.queue C2C0 chip=1
@63 RECV.f32 d=E0, n=2
.queue VXM0 chip=1
@75 ADD.f32 a=E0, b=#1.0, n=2, d=E4
.queue MEM_E0 chip=1
@78 WRITE addr=0, n=2, s=E4
.queue MEM_E1 chip=1
@79 WRITE addr=0, n=2, s=E5
.queue MEM_E2 chip=1
@80 WRITE addr=0, n=2, s=E6
.queue MEM_E3 chip=1
@81 WRITE addr=0, n=2, s=E7
