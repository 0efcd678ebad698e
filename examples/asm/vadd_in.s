; vadd_in.s -- vadd.s with x and y as inputs: z = x + y for two f32 tensors of shape [4, 16].
;
; The program is vadd.s's (same READs, ADD and WRITEs, same cycles); only the data comes from the
; host, so it can be any f32 values. vadd.s's x holds small integers, whose two low byte planes are
; zero: a READ of one of those planes a cycle off changes nothing you could see. Give this one
; values whose four bytes all differ (docs/tutorial.md) and every plane shows.
;
; Floorplan of the tiny chip (position: slices):
;   0 C2C0 | 1 MXM_W0 | 2 SXM_W | 3..10 MEM_W7..MEM_W0 | 11 VXM0..3, ICU |
;   12..19 MEM_E0..MEM_E7 | 20 SXM_E | 21 MXM_E0 | 22 C2C1
;
; An f32 vector is 4 byte planes. x keeps plane k in MEM_Wk, y in MEM_Ek, and each plane travels on
; its own stream: x on E0..E3 (eastward), y on W0..W3 (westward). For all 8 planes to meet at the
; VXM (position 11) in cycle 5, a slice at position p issues its READ in cycle
;     5 - L.mem_read - |11 - p|        (L.mem_read = 1 on tiny)
; The ADD reads both groups in cycles 5..8 and writes z on E4..E7 in cycles 7..10
; (L.vxm_alu = 2); MEM_Ek sits k+1 positions east of the VXM, so it takes plane k in cycle 8+k.
; The last word is written in cycle 11 + 3 + L.mem_write = 15, so the program takes 16 cycles.
.chip tiny
.tensor x input f32 [4, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0
.tensor y input f32 [4, 16] planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0
.tensor z output f32 [4, 16] planes=MEM_E0@16,MEM_E1@16,MEM_E2@16,MEM_E3@16

.queue MEM_W3
@0 READ addr=0, n=4, s=E3
.queue MEM_W2
@1 READ addr=0, n=4, s=E2
.queue MEM_W1
@2 READ addr=0, n=4, s=E1
.queue MEM_W0
@3 READ addr=0, n=4, s=E0

.queue MEM_E3
@0 READ addr=0, n=4, s=W3
@11 WRITE addr=16, n=4, s=E7
.queue MEM_E2
@1 READ addr=0, n=4, s=W2
@10 WRITE addr=16, n=4, s=E6
.queue MEM_E1
@2 READ addr=0, n=4, s=W1
@9 WRITE addr=16, n=4, s=E5
.queue MEM_E0
@3 READ addr=0, n=4, s=W0
@8 WRITE addr=16, n=4, s=E4

.queue VXM0
@5 ADD.f32 a=E0, b=W0, n=4, d=E4
