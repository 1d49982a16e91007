	.type	_ZN4zaya7kernels3moe11expert_gemmINS_5dtype4BF16ELb1EEEvNS0_11MoeTop1ArgsE,@function
_ZN4zaya7kernels3moe11expert_gemmINS_5dtype4BF16ELb1EEEvNS0_11MoeTop1ArgsE:
	s_load_dwordx2 s[8:9], s[0:1], 0x70
	s_load_dwordx4 s[12:15], s[0:1], 0x48
	s_load_dwordx4 s[4:7], s[0:1], 0x78
	s_load_dwordx4 s[16:19], s[0:1], 0x60
	s_mov_b32 s10, s3
	s_waitcnt lgkmcnt(0)
	s_lshl_b64 s[24:25], s[8:9], 2
	s_add_u32 s3, s14, s24
	s_addc_u32 s5, s15, s25
	s_sub_i32 s21, s6, s4
	s_mov_b32 s20, 0
	s_ashr_i64 s[6:7], s[20:21], 30
	s_add_u32 s6, s3, s6
	s_addc_u32 s7, s5, s7
	s_load_dword s3, s[6:7], 0x8
	s_mov_b32 s22, -1
	s_mov_b32 s21, s20
	s_waitcnt lgkmcnt(0)
	s_cmp_le_i32 s3, s2
	s_cbranch_scc1 .LBB3_4
	s_add_i32 s22, s4, -1
	s_add_u32 s3, s24, s14
	s_addc_u32 s5, s25, s15
	s_add_u32 s4, s3, 12
	s_addc_u32 s5, s5, 0
.LBB3_2:
	s_load_dword s3, s[4:5], 0x0
	s_add_i32 s22, s22, 1
	s_add_u32 s4, s4, 4
	s_addc_u32 s5, s5, 0
	s_waitcnt lgkmcnt(0)
	s_cmp_le_i32 s3, s2
	s_cbranch_scc1 .LBB3_2
	s_ashr_i32 s23, s22, 31
	s_lshl_b64 s[6:7], s[22:23], 2
	s_add_u32 s6, s14, s6
	s_load_dword s3, s[4:5], -0x8
	s_addc_u32 s7, s15, s7
	s_load_dwordx2 s[4:5], s[6:7], 0x0
	s_waitcnt lgkmcnt(0)
	s_sub_i32 s2, s2, s3
	s_lshl_b32 s2, s2, 6
	s_add_i32 s21, s2, s4
	s_sub_i32 s2, s5, s21
	s_min_i32 s20, s2, 64
.LBB3_4:
	s_load_dwordx4 s[4:7], s[0:1], 0x0
	s_load_dwordx2 s[26:27], s[0:1], 0x28
	s_cmp_lt_i32 s22, 0
	s_cbranch_scc1 .LBB3_47
	v_cmp_gt_u32_e32 vcc, 64, v0
	s_and_saveexec_b64 s[0:1], vcc
	s_cbranch_execz .LBB3_9
	v_cmp_gt_i32_e32 vcc, s20, v0
	v_mov_b32_e32 v1, -1
	s_and_saveexec_b64 s[2:3], vcc
	s_cbranch_execz .LBB3_8
	s_lshl_b64 s[8:9], s[8:9], 3
	s_add_u32 s8, s8, s14
	v_add_u32_e32 v2, s21, v0
	s_addc_u32 s9, s9, s15
	v_ashrrev_i32_e32 v3, 31, v2
	v_lshl_add_u64 v[2:3], v[2:3], 2, s[8:9]
	global_load_dword v1, v[2:3], off offset:16
.LBB3_8:
	s_or_b64 exec, exec, s[2:3]
	v_lshlrev_b32_e32 v2, 2, v0
	s_waitcnt vmcnt(0)
	ds_write_b32 v2, v1 offset:15360
.LBB3_9:
	s_or_b64 exec, exec, s[0:1]
	v_cmp_gt_i64_e64 s[0:1], s[16:17], 0
	s_mov_b32 s11, 0
	v_lshrrev_b32_e32 v34, 2, v0
	v_lshrrev_b32_e32 v2, 1, v0
	s_mov_b64 s[8:9], 0
	s_and_b64 vcc, exec, s[0:1]
	v_and_b32_e32 v36, 15, v0
	s_waitcnt lgkmcnt(0)
	s_barrier
	s_waitcnt lgkmcnt(0)
	s_cbranch_vccnz .LBB3_11
	v_and_b32_e32 v35, 12, v34
	v_and_b32_e32 v1, 15, v0
	s_mov_b32 s0, s11
	s_mov_b32 s1, s11
	s_mov_b32 s2, s11
	s_mov_b32 s3, s11
	s_branch .LBB3_12
.LBB3_11:
	s_mov_b64 s[8:9], -1
.LBB3_12:
	v_mov_b64_e32 v[28:29], s[2:3]
	v_mov_b64_e32 v[26:27], s[0:1]
	v_and_b32_e32 v38, 32, v2
	v_mov_b64_e32 v[18:19], v[26:27]
	v_mov_b64_e32 v[10:11], v[26:27]
	v_mov_b64_e32 v[2:3], v[26:27]
	v_mov_b64_e32 v[32:33], v[28:29]
	v_mov_b64_e32 v[22:23], v[26:27]
	v_mov_b64_e32 v[14:15], v[26:27]
	v_mov_b64_e32 v[6:7], v[26:27]
	s_lshl_b64 s[14:15], s[10:11], 6
	v_and_b32_e32 v37, 32, v34
	s_andn2_b64 vcc, exec, s[8:9]
	v_mov_b64_e32 v[20:21], v[28:29]
	v_mov_b64_e32 v[12:13], v[28:29]
	v_mov_b64_e32 v[4:5], v[28:29]
	v_mov_b64_e32 v[30:31], v[26:27]
	v_mov_b64_e32 v[24:25], v[28:29]
	v_mov_b64_e32 v[16:17], v[28:29]
	v_mov_b64_e32 v[8:9], v[28:29]
	s_cbranch_vccnz .LBB3_22
	v_lshlrev_b32_e32 v2, 3, v0
	s_add_u32 s0, s16, 31
	v_and_b32_e32 v8, 24, v2
	v_mov_b32_e32 v9, 0
	v_and_b32_e32 v2, 0xfc, v0
	v_and_b32_e32 v1, 48, v34
	s_addc_u32 s1, s17, 0
	v_mov_b32_e32 v35, v9
	v_or_b32_e32 v16, 0x3c00, v2
	v_mul_u32_u24_e32 v2, 40, v34
	v_lshlrev_b32_e32 v3, 1, v8
	s_lshr_b64 s[24:25], s[0:1], 5
	s_movk_i32 s0, 0x100
	v_lshl_add_u32 v17, v2, 1, v3
	v_lshl_add_u64 v[2:3], s[14:15], 0, v[34:35]
	v_or_b32_e32 v1, 16, v1
	v_cmp_gt_u32_e32 vcc, s0, v0
	v_cmp_gt_i64_e64 s[0:1], s[18:19], v[2:3]
	v_mul_u32_u24_e32 v2, 40, v36
	v_and_b32_e32 v35, 12, v34
	v_mul_u32_u24_e32 v1, 40, v1
	v_lshlrev_b32_e32 v2, 1, v2
	v_lshlrev_b32_e32 v4, 1, v35
	v_lshlrev_b32_e32 v1, 1, v1
	v_add3_u32 v21, v1, v2, v4
	v_mul_u32_u24_e32 v1, 40, v38
	v_lshlrev_b32_e32 v1, 1, v1
	v_add3_u32 v1, v1, v2, v4
	v_add_u32_e32 v22, 0x1400, v1
	v_add_u32_e32 v23, 0x2800, v1
	v_add_u32_e32 v24, 0x1900, v1
	v_add_u32_e32 v25, 0x2d00, v1
	v_add_u32_e32 v28, 0x1420, v1
	v_add_u32_e32 v29, 0x2820, v1
	v_add_u32_e32 v30, 0x1920, v1
	v_add_u32_e32 v31, 0x2d20, v1
	v_and_b32_e32 v0, 3, v0
	v_mov_b32_e32 v1, v9
	s_mul_i32 s2, s19, s22
	s_mul_hi_u32 s3, s18, s22
	v_lshlrev_b64 v[0:1], 4, v[0:1]
	s_add_i32 s3, s3, s2
	s_mul_i32 s2, s18, s22
	v_mul_u32_u24_e32 v3, 40, v37
	s_lshl_b64 s[6:7], s[6:7], 1
	v_lshl_add_u64 v[10:11], s[4:5], 0, v[0:1]
	s_lshl_b64 s[2:3], s[2:3], 2
	s_lshl_b64 s[4:5], s[10:11], 7
	v_lshlrev_b32_e32 v3, 1, v3
	s_add_u32 s2, s2, s4
	v_add3_u32 v20, v3, v2, v4
	s_addc_u32 s3, s3, s5
	v_lshlrev_b32_e32 v2, 1, v34
	v_mov_b32_e32 v3, v9
	s_mov_b32 s8, 0
	v_lshl_add_u64 v[4:5], s[2:3], 0, v[2:3]
	s_mov_b32 s23, s8
	v_mul_lo_u32 v6, s16, v5
	v_mul_lo_u32 v7, s17, v4
	v_mad_u64_u32 v[4:5], s[2:3], s16, v4, v[0:1]
	s_lshl_b64 s[2:3], s[22:23], 2
	s_or_b32 s2, s2, 2
	s_mul_i32 s3, s18, s3
	s_mul_hi_u32 s9, s18, s2
	s_add_i32 s3, s9, s3
	s_mul_i32 s9, s19, s2
	s_add_i32 s3, s3, s9
	s_mul_i32 s2, s18, s2
	s_add_u32 s2, s2, s4
	s_addc_u32 s3, s3, s5
	v_add3_u32 v5, v7, v5, v6
	v_lshl_add_u64 v[2:3], s[2:3], 0, v[2:3]
	v_accvgpr_write_b32 a0, 0
	v_lshl_add_u64 v[12:13], s[26:27], 0, v[4:5]
	v_mul_lo_u32 v3, s16, v3
	v_mul_lo_u32 v4, s17, v2
	v_mad_u64_u32 v[0:1], s[2:3], s16, v2, v[0:1]
	v_accvgpr_mov_b32 a3, a0
	v_add3_u32 v1, v4, v1, v3
	v_accvgpr_mov_b32 a1, a0
	v_accvgpr_mov_b32 a2, a0
	v_accvgpr_mov_b32 a11, a3
	v_accvgpr_mov_b32 a7, a3
	v_accvgpr_mov_b32 a15, a3
	v_accvgpr_mov_b32 a31, a3
	v_accvgpr_mov_b32 a19, a3
	v_accvgpr_mov_b32 a23, a3
	v_accvgpr_mov_b32 a27, a3
	v_add_u32_e32 v18, 0x1400, v17
	v_add_u32_e32 v19, 0x2800, v17
	v_add_u32_e32 v26, 32, v20
	v_add_u32_e32 v27, 32, v21
	v_lshl_add_u64 v[14:15], s[26:27], 0, v[0:1]
	v_accvgpr_mov_b32 a10, a2
	v_accvgpr_mov_b32 a9, a1
	v_accvgpr_mov_b32 a8, a0
	v_accvgpr_mov_b32 a6, a2
	v_accvgpr_mov_b32 a5, a1
	v_accvgpr_mov_b32 a4, a0
	v_accvgpr_mov_b32 a14, a2
	v_accvgpr_mov_b32 a13, a1
	v_accvgpr_mov_b32 a12, a0
	v_accvgpr_mov_b32 a30, a2
	v_accvgpr_mov_b32 a29, a1
	v_accvgpr_mov_b32 a28, a0
	v_accvgpr_mov_b32 a18, a2
	v_accvgpr_mov_b32 a17, a1
	v_accvgpr_mov_b32 a16, a0
	v_accvgpr_mov_b32 a22, a2
	v_accvgpr_mov_b32 a21, a1
	v_accvgpr_mov_b32 a20, a0
	v_accvgpr_mov_b32 a26, a2
	v_accvgpr_mov_b32 a25, a1
	v_accvgpr_mov_b32 a24, a0
	s_branch .LBB3_16
.LBB3_14:
	s_or_b64 exec, exec, s[2:3]
	s_waitcnt vmcnt(1)
	ds_write_b128 v18, v[0:3]
	s_waitcnt vmcnt(0)
	ds_write_b128 v19, v[4:7]
.LBB3_15:
	s_or_b64 exec, exec, s[22:23]
	s_waitcnt lgkmcnt(0)
	s_barrier
	s_waitcnt lgkmcnt(0)
	ds_read_b64 v[0:1], v20
	ds_read_b64 v[2:3], v21
	ds_read_b64 v[4:5], v22
	ds_read_b64 v[6:7], v23
	s_waitcnt lgkmcnt(1)
	v_mfma_f32_16x16x16_bf16 a[12:15], v[0:1], v[4:5], a[12:15]
	s_add_u32 s24, s24, -1
	s_addc_u32 s25, s25, -1
	v_lshl_add_u64 v[10:11], v[10:11], 0, 64
	v_mfma_f32_16x16x16_bf16 a[8:11], v[2:3], v[4:5], a[8:11]
	ds_read_b64 v[4:5], v24
	v_lshl_add_u64 v[8:9], v[8:9], 0, 32
	v_lshl_add_u64 v[12:13], v[12:13], 0, 64
	s_waitcnt lgkmcnt(1)
	v_mfma_f32_16x16x16_bf16 a[24:27], v[0:1], v[6:7], a[24:27]
	v_lshl_add_u64 v[14:15], v[14:15], 0, 64
	s_cmp_eq_u64 s[24:25], 0
	v_mfma_f32_16x16x16_bf16 a[16:19], v[2:3], v[6:7], a[16:19]
	ds_read_b64 v[6:7], v25
	ds_read_b64 v[32:33], v26
	ds_read_b64 v[40:41], v27
	s_waitcnt lgkmcnt(3)
	v_mfma_f32_16x16x16_bf16 a[4:7], v[0:1], v[4:5], a[4:7]
	v_mfma_f32_16x16x16_bf16 a[0:3], v[2:3], v[4:5], a[0:3]
	s_waitcnt lgkmcnt(2)
	v_mfma_f32_16x16x16_bf16 a[20:23], v[0:1], v[6:7], a[20:23]
	ds_read_b64 v[0:1], v28
	v_mfma_f32_16x16x16_bf16 a[28:31], v[2:3], v[6:7], a[28:31]
	ds_read_b64 v[2:3], v29
	ds_read_b64 v[4:5], v30
	ds_read_b64 v[6:7], v31
	s_waitcnt lgkmcnt(3)
	v_mfma_f32_16x16x16_bf16 a[12:15], v[32:33], v[0:1], a[12:15]
	v_mfma_f32_16x16x16_bf16 a[8:11], v[40:41], v[0:1], a[8:11]
	s_waitcnt lgkmcnt(2)
	v_mfma_f32_16x16x16_bf16 a[24:27], v[32:33], v[2:3], a[24:27]
	v_mfma_f32_16x16x16_bf16 a[16:19], v[40:41], v[2:3], a[16:19]
	s_waitcnt lgkmcnt(1)
	v_mfma_f32_16x16x16_bf16 a[4:7], v[32:33], v[4:5], a[4:7]
	v_mfma_f32_16x16x16_bf16 a[0:3], v[40:41], v[4:5], a[0:3]
	s_waitcnt lgkmcnt(0)
	v_mfma_f32_16x16x16_bf16 a[20:23], v[32:33], v[6:7], a[20:23]
	v_mfma_f32_16x16x16_bf16 a[28:31], v[40:41], v[6:7], a[28:31]
	s_cbranch_scc1 .LBB3_21
.LBB3_16:
	s_waitcnt lgkmcnt(0)
	s_barrier
	s_waitcnt lgkmcnt(0)
	s_and_saveexec_b64 s[22:23], vcc
	s_cbranch_execz .LBB3_15
	ds_read_b32 v4, v16
	s_mov_b32 s9, s8
	v_cmp_gt_i64_e64 s[2:3], s[16:17], v[8:9]
	s_mov_b32 s10, s8
	s_mov_b32 s11, s8
	s_waitcnt lgkmcnt(0)
	v_cmp_lt_i32_e64 s[4:5], -1, v4
	v_mov_b64_e32 v[0:1], s[8:9]
	s_and_b64 s[26:27], s[4:5], s[2:3]
	v_mov_b64_e32 v[2:3], s[10:11]
	s_and_saveexec_b64 s[4:5], s[26:27]
	s_cbranch_execz .LBB3_19
	v_mad_u64_u32 v[0:1], s[26:27], s6, v4, v[10:11]
	v_mov_b32_e32 v2, v1
	v_mad_u64_u32 v[2:3], s[26:27], s7, v4, v[2:3]
	v_mov_b32_e32 v1, v2
	global_load_dwordx4 v[0:3], v[0:1], off
.LBB3_19:
	s_or_b64 exec, exec, s[4:5]
	s_waitcnt vmcnt(0)
	ds_write_b128 v17, v[0:3]
	v_mov_b64_e32 v[0:1], s[8:9]
	v_mov_b64_e32 v[2:3], s[10:11]
	v_mov_b64_e32 v[6:7], v[2:3]
	s_and_b64 s[4:5], s[0:1], s[2:3]
	v_mov_b64_e32 v[4:5], v[0:1]
	s_and_saveexec_b64 s[2:3], s[4:5]
	s_cbranch_execz .LBB3_14
	global_load_dwordx4 v[0:3], v[12:13], off
	global_load_dwordx4 v[4:7], v[14:15], off
	s_branch .LBB3_14
.LBB3_21:
	s_nop 5
	v_accvgpr_read_b32 v2, a28
	v_accvgpr_read_b32 v18, a20
	v_accvgpr_read_b32 v9, a3
	v_accvgpr_read_b32 v25, a7
	v_accvgpr_read_b32 v10, a16
	v_accvgpr_read_b32 v29, a27
	v_accvgpr_read_b32 v17, a11
	v_accvgpr_read_b32 v33, a15
	v_accvgpr_read_b32 v3, a29
	v_accvgpr_read_b32 v4, a30
	v_accvgpr_read_b32 v5, a31
	v_accvgpr_read_b32 v19, a21
	v_accvgpr_read_b32 v20, a22
	v_accvgpr_read_b32 v21, a23
	v_accvgpr_read_b32 v8, a2
	v_accvgpr_read_b32 v7, a1
	v_accvgpr_read_b32 v6, a0
	v_accvgpr_read_b32 v24, a6
	v_accvgpr_read_b32 v23, a5
	v_accvgpr_read_b32 v22, a4
	v_accvgpr_read_b32 v11, a17
	v_accvgpr_read_b32 v12, a18
	v_accvgpr_read_b32 v13, a19
	v_accvgpr_read_b32 v28, a26
	v_accvgpr_read_b32 v27, a25
	v_accvgpr_read_b32 v26, a24
	v_accvgpr_read_b32 v16, a10
	v_accvgpr_read_b32 v15, a9
	v_accvgpr_read_b32 v14, a8
	v_accvgpr_read_b32 v32, a14
	v_accvgpr_read_b32 v31, a13
	v_accvgpr_read_b32 v30, a12
	v_mov_b32_e32 v1, v36
.LBB3_22:
	v_or_b32_e32 v34, v37, v35
	v_or3_b32 v0, v1, v38, s14
	v_mov_b32_e32 v1, s15
	v_cmp_gt_i64_e64 s[0:1], s[18:19], v[0:1]
	v_cmp_gt_i32_e64 s[4:5], s20, v34
	v_add_u32_e32 v35, s21, v34
	s_and_b64 s[6:7], s[4:5], s[0:1]
	v_ashrrev_i32_e32 v37, 31, v35
	v_mul_lo_u32 v36, s19, v35
	s_and_saveexec_b64 s[2:3], s[6:7]
	s_cbranch_execz .LBB3_24
	v_bfe_u32 v38, v30, 16, 1
	s_movk_i32 s8, 0x7fff
	v_mov_b32_e32 v40, 64
	v_add3_u32 v38, v30, v38, s8
	v_or_b32_sdwa v39, v30, v40 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v30, 0x7fffffff, v30
	s_mov_b32 s9, 0x7f800000
	v_lshrrev_b32_e32 v38, 16, v38
	v_cmp_lt_u32_e32 vcc, s9, v30
	s_mov_b32 s6, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v30, v38, v39, vcc
	v_lshlrev_b32_e32 v30, 16, v30
	v_mul_f32_e32 v38, 0xbfb8aa3b, v30
	v_fma_f32 v39, v30, s6, -v38
	v_rndne_f32_e32 v41, v38
	v_fmac_f32_e32 v39, 0xb2a5705f, v30
	v_sub_f32_e32 v38, v38, v41
	v_add_f32_e32 v38, v39, v38
	v_exp_f32_e32 v38, v38
	v_cvt_i32_f32_e32 v39, v41
	s_mov_b32 s6, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s6, v30
	s_mov_b32 s6, 0xc2b17218
	v_ldexp_f32 v38, v38, v39
	v_add_f32_e32 v38, 1.0, v38
	v_cndmask_b32_e32 v38, 1.0, v38, vcc
	v_mov_b32_e32 v39, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s6, v30
	s_nop 1
	v_cndmask_b32_e32 v38, v39, v38, vcc
	v_div_scale_f32 v39, s[6:7], v38, v38, v30
	v_rcp_f32_e32 v41, v39
	s_nop 0
	v_fma_f32 v42, -v39, v41, 1.0
	v_fmac_f32_e32 v41, v42, v41
	v_div_scale_f32 v42, vcc, v30, v38, v30
	v_mul_f32_e32 v43, v42, v41
	v_fma_f32 v44, -v39, v43, v42
	v_fmac_f32_e32 v43, v44, v41
	v_fma_f32 v39, -v39, v43, v42
	v_div_fmas_f32 v39, v39, v41, v43
	v_div_fixup_f32 v30, v39, v38, v30
	v_bfe_u32 v38, v30, 16, 1
	v_bfe_u32 v39, v26, 16, 1
	v_add3_u32 v38, v30, v38, s8
	v_or_b32_sdwa v41, v30, v40 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v30, 0x7fffffff, v30
	v_add3_u32 v39, v26, v39, s8
	v_lshrrev_b32_e32 v38, 16, v38
	v_or_b32_sdwa v42, v26, v40 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v26, 0x7fffffff, v26
	v_cmp_lt_u32_e32 vcc, s9, v30
	v_lshrrev_b32_e32 v39, 16, v39
	s_nop 0
	v_cndmask_b32_e32 v30, v38, v41, vcc
	v_cmp_lt_u32_e32 vcc, s9, v26
	v_lshlrev_b32_e32 v26, 16, v30
	s_nop 0
	v_cndmask_b32_e32 v38, v39, v42, vcc
	v_lshlrev_b32_e32 v30, 16, v38
	v_pk_mul_f32 v[38:39], v[26:27], v[30:31] op_sel_hi:[0,1]
	v_bfe_u32 v26, v38, 16, 1
	v_add3_u32 v26, v38, v26, s8
	v_or_b32_sdwa v30, v38, v40 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v38, 0x7fffffff, v38
	v_lshrrev_b32_e32 v26, 16, v26
	v_cmp_lt_u32_e32 vcc, s9, v38
	v_mad_u64_u32 v[38:39], s[6:7], s18, v35, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v26, v26, v30, vcc
	v_mul_lo_u32 v30, s18, v37
	v_add3_u32 v39, v36, v39, v30
	v_lshl_add_u64 v[38:39], v[38:39], 1, s[12:13]
	global_store_short v[38:39], v26, off
.LBB3_24:
	s_or_b64 exec, exec, s[2:3]
	v_or_b32_e32 v26, 1, v34
	v_cmp_gt_i32_e64 s[6:7], s20, v26
	v_add_u32_e32 v26, s21, v26
	s_and_b64 s[8:9], s[6:7], s[0:1]
	v_ashrrev_i32_e32 v38, 31, v26
	v_mul_lo_u32 v30, s19, v26
	s_and_saveexec_b64 s[2:3], s[8:9]
	s_cbranch_execz .LBB3_26
	v_bfe_u32 v39, v31, 16, 1
	s_movk_i32 s10, 0x7fff
	v_mov_b32_e32 v43, 64
	v_add3_u32 v39, v31, v39, s10
	v_or_b32_sdwa v40, v31, v43 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v31, 0x7fffffff, v31
	s_mov_b32 s11, 0x7f800000
	v_lshrrev_b32_e32 v39, 16, v39
	v_cmp_lt_u32_e32 vcc, s11, v31
	s_mov_b32 s8, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v31, v39, v40, vcc
	v_lshlrev_b32_e32 v31, 16, v31
	v_mul_f32_e32 v39, 0xbfb8aa3b, v31
	v_fma_f32 v40, v31, s8, -v39
	v_rndne_f32_e32 v41, v39
	v_fmac_f32_e32 v40, 0xb2a5705f, v31
	v_sub_f32_e32 v39, v39, v41
	v_add_f32_e32 v39, v40, v39
	v_exp_f32_e32 v39, v39
	v_cvt_i32_f32_e32 v40, v41
	s_mov_b32 s8, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s8, v31
	s_mov_b32 s8, 0xc2b17218
	v_ldexp_f32 v39, v39, v40
	v_add_f32_e32 v39, 1.0, v39
	v_cndmask_b32_e32 v39, 1.0, v39, vcc
	v_mov_b32_e32 v40, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s8, v31
	s_nop 1
	v_cndmask_b32_e32 v39, v40, v39, vcc
	v_div_scale_f32 v40, s[8:9], v39, v39, v31
	v_rcp_f32_e32 v41, v40
	s_nop 0
	v_fma_f32 v42, -v40, v41, 1.0
	v_fmac_f32_e32 v41, v42, v41
	v_div_scale_f32 v42, vcc, v31, v39, v31
	v_mul_f32_e32 v44, v42, v41
	v_fma_f32 v45, -v40, v44, v42
	v_fmac_f32_e32 v44, v45, v41
	v_fma_f32 v40, -v40, v44, v42
	v_div_fmas_f32 v40, v40, v41, v44
	v_div_fixup_f32 v31, v40, v39, v31
	v_bfe_u32 v39, v31, 16, 1
	v_bfe_u32 v40, v27, 16, 1
	v_add3_u32 v39, v31, v39, s10
	v_or_b32_sdwa v41, v31, v43 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v31, 0x7fffffff, v31
	v_add3_u32 v40, v27, v40, s10
	v_lshrrev_b32_e32 v39, 16, v39
	v_or_b32_sdwa v42, v27, v43 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v27, 0x7fffffff, v27
	v_cmp_lt_u32_e32 vcc, s11, v31
	v_lshrrev_b32_e32 v40, 16, v40
	s_nop 0
	v_cndmask_b32_e32 v31, v39, v41, vcc
	v_cmp_lt_u32_e32 vcc, s11, v27
	s_nop 1
	v_cndmask_b32_e32 v27, v40, v42, vcc
	v_lshlrev_b32_e32 v40, 16, v31
	v_lshlrev_b32_e32 v42, 16, v27
	v_pk_mul_f32 v[40:41], v[40:41], v[42:43] op_sel_hi:[0,1]
	v_bfe_u32 v27, v40, 16, 1
	v_add3_u32 v27, v40, v27, s10
	v_and_b32_e32 v39, 0x7fffffff, v40
	v_lshrrev_b32_e32 v27, 16, v27
	v_or_b32_sdwa v31, v40, v43 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s11, v39
	v_mad_u64_u32 v[40:41], s[8:9], s18, v26, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v27, v27, v31, vcc
	v_mul_lo_u32 v31, s18, v38
	v_add3_u32 v41, v30, v41, v31
	v_lshl_add_u64 v[40:41], v[40:41], 1, s[12:13]
	global_store_short v[40:41], v27, off
.LBB3_26:
	s_or_b64 exec, exec, s[2:3]
	v_or_b32_e32 v27, 2, v34
	v_cmp_gt_i32_e64 s[8:9], s20, v27
	v_add_u32_e32 v27, s21, v27
	s_and_b64 s[10:11], s[8:9], s[0:1]
	v_ashrrev_i32_e32 v39, 31, v27
	v_mul_lo_u32 v31, s19, v27
	s_and_saveexec_b64 s[2:3], s[10:11]
	s_cbranch_execz .LBB3_28
	v_bfe_u32 v40, v32, 16, 1
	s_movk_i32 s14, 0x7fff
	v_mov_b32_e32 v42, 64
	v_add3_u32 v40, v32, v40, s14
	v_or_b32_sdwa v41, v32, v42 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v32, 0x7fffffff, v32
	s_mov_b32 s15, 0x7f800000
	v_lshrrev_b32_e32 v40, 16, v40
	v_cmp_lt_u32_e32 vcc, s15, v32
	s_mov_b32 s10, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v32, v40, v41, vcc
	v_lshlrev_b32_e32 v32, 16, v32
	v_mul_f32_e32 v40, 0xbfb8aa3b, v32
	v_fma_f32 v41, v32, s10, -v40
	v_rndne_f32_e32 v43, v40
	v_fmac_f32_e32 v41, 0xb2a5705f, v32
	v_sub_f32_e32 v40, v40, v43
	v_add_f32_e32 v40, v41, v40
	v_exp_f32_e32 v40, v40
	v_cvt_i32_f32_e32 v41, v43
	s_mov_b32 s10, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s10, v32
	s_mov_b32 s10, 0xc2b17218
	v_ldexp_f32 v40, v40, v41
	v_add_f32_e32 v40, 1.0, v40
	v_cndmask_b32_e32 v40, 1.0, v40, vcc
	v_mov_b32_e32 v41, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s10, v32
	s_nop 1
	v_cndmask_b32_e32 v40, v41, v40, vcc
	v_div_scale_f32 v41, s[10:11], v40, v40, v32
	v_rcp_f32_e32 v43, v41
	s_nop 0
	v_fma_f32 v44, -v41, v43, 1.0
	v_fmac_f32_e32 v43, v44, v43
	v_div_scale_f32 v44, vcc, v32, v40, v32
	v_mul_f32_e32 v45, v44, v43
	v_fma_f32 v46, -v41, v45, v44
	v_fmac_f32_e32 v45, v46, v43
	v_fma_f32 v41, -v41, v45, v44
	v_div_fmas_f32 v41, v41, v43, v45
	v_div_fixup_f32 v32, v41, v40, v32
	v_bfe_u32 v40, v32, 16, 1
	v_bfe_u32 v41, v28, 16, 1
	v_add3_u32 v40, v32, v40, s14
	v_or_b32_sdwa v43, v32, v42 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v32, 0x7fffffff, v32
	v_add3_u32 v41, v28, v41, s14
	v_lshrrev_b32_e32 v40, 16, v40
	v_or_b32_sdwa v44, v28, v42 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v28, 0x7fffffff, v28
	v_cmp_lt_u32_e32 vcc, s15, v32
	v_lshrrev_b32_e32 v41, 16, v41
	s_nop 0
	v_cndmask_b32_e32 v32, v40, v43, vcc
	v_cmp_lt_u32_e32 vcc, s15, v28
	v_lshlrev_b32_e32 v28, 16, v32
	s_nop 0
	v_cndmask_b32_e32 v40, v41, v44, vcc
	v_lshlrev_b32_e32 v32, 16, v40
	v_pk_mul_f32 v[40:41], v[28:29], v[32:33] op_sel_hi:[0,1]
	v_bfe_u32 v28, v40, 16, 1
	v_add3_u32 v28, v40, v28, s14
	v_or_b32_sdwa v32, v40, v42 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v40, 0x7fffffff, v40
	v_lshrrev_b32_e32 v28, 16, v28
	v_cmp_lt_u32_e32 vcc, s15, v40
	v_mad_u64_u32 v[40:41], s[10:11], s18, v27, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v28, v28, v32, vcc
	v_mul_lo_u32 v32, s18, v39
	v_add3_u32 v41, v31, v41, v32
	v_lshl_add_u64 v[40:41], v[40:41], 1, s[12:13]
	global_store_short v[40:41], v28, off
.LBB3_28:
	s_or_b64 exec, exec, s[2:3]
	v_or_b32_e32 v28, 3, v34
	v_cmp_gt_i32_e64 s[10:11], s20, v28
	v_add_u32_e32 v28, s21, v28
	s_and_b64 s[14:15], s[10:11], s[0:1]
	v_ashrrev_i32_e32 v40, 31, v28
	v_mul_lo_u32 v32, s19, v28
	s_and_saveexec_b64 s[2:3], s[14:15]
	s_cbranch_execz .LBB3_30
	v_bfe_u32 v41, v33, 16, 1
	s_movk_i32 s16, 0x7fff
	v_mov_b32_e32 v45, 64
	v_add3_u32 v41, v33, v41, s16
	v_or_b32_sdwa v42, v33, v45 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v33, 0x7fffffff, v33
	s_mov_b32 s17, 0x7f800000
	v_lshrrev_b32_e32 v41, 16, v41
	v_cmp_lt_u32_e32 vcc, s17, v33
	s_mov_b32 s14, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v33, v41, v42, vcc
	v_lshlrev_b32_e32 v33, 16, v33
	v_mul_f32_e32 v41, 0xbfb8aa3b, v33
	v_fma_f32 v42, v33, s14, -v41
	v_rndne_f32_e32 v43, v41
	v_fmac_f32_e32 v42, 0xb2a5705f, v33
	v_sub_f32_e32 v41, v41, v43
	v_add_f32_e32 v41, v42, v41
	v_exp_f32_e32 v41, v41
	v_cvt_i32_f32_e32 v42, v43
	s_mov_b32 s14, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s14, v33
	s_mov_b32 s14, 0xc2b17218
	v_ldexp_f32 v41, v41, v42
	v_add_f32_e32 v41, 1.0, v41
	v_cndmask_b32_e32 v41, 1.0, v41, vcc
	v_mov_b32_e32 v42, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s14, v33
	s_nop 1
	v_cndmask_b32_e32 v41, v42, v41, vcc
	v_div_scale_f32 v42, s[14:15], v41, v41, v33
	v_rcp_f32_e32 v43, v42
	s_nop 0
	v_fma_f32 v44, -v42, v43, 1.0
	v_fmac_f32_e32 v43, v44, v43
	v_div_scale_f32 v44, vcc, v33, v41, v33
	v_mul_f32_e32 v46, v44, v43
	v_fma_f32 v47, -v42, v46, v44
	v_fmac_f32_e32 v46, v47, v43
	v_fma_f32 v42, -v42, v46, v44
	v_div_fmas_f32 v42, v42, v43, v46
	v_div_fixup_f32 v33, v42, v41, v33
	v_bfe_u32 v41, v33, 16, 1
	v_bfe_u32 v42, v29, 16, 1
	v_add3_u32 v41, v33, v41, s16
	v_or_b32_sdwa v43, v33, v45 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v33, 0x7fffffff, v33
	v_add3_u32 v42, v29, v42, s16
	v_lshrrev_b32_e32 v41, 16, v41
	v_or_b32_sdwa v44, v29, v45 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v29, 0x7fffffff, v29
	v_cmp_lt_u32_e32 vcc, s17, v33
	v_lshrrev_b32_e32 v42, 16, v42
	s_nop 0
	v_cndmask_b32_e32 v33, v41, v43, vcc
	v_cmp_lt_u32_e32 vcc, s17, v29
	s_nop 1
	v_cndmask_b32_e32 v29, v42, v44, vcc
	v_lshlrev_b32_e32 v42, 16, v33
	v_lshlrev_b32_e32 v44, 16, v29
	v_pk_mul_f32 v[42:43], v[42:43], v[44:45] op_sel_hi:[0,1]
	v_bfe_u32 v29, v42, 16, 1
	v_add3_u32 v29, v42, v29, s16
	v_and_b32_e32 v41, 0x7fffffff, v42
	v_lshrrev_b32_e32 v29, 16, v29
	v_or_b32_sdwa v33, v42, v45 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s17, v41
	v_mad_u64_u32 v[42:43], s[14:15], s18, v28, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v29, v29, v33, vcc
	v_mul_lo_u32 v33, s18, v40
	v_add3_u32 v43, v32, v43, v33
	v_lshl_add_u64 v[42:43], v[42:43], 1, s[12:13]
	global_store_short v[42:43], v29, off
.LBB3_30:
	s_or_b64 exec, exec, s[2:3]
	v_or_b32_e32 v42, 16, v0
	v_mov_b32_e32 v43, v1
	v_cmp_gt_i64_e64 s[2:3], s[18:19], v[42:43]
	s_and_b64 s[14:15], s[4:5], s[2:3]
	s_and_saveexec_b64 s[4:5], s[14:15]
	s_cbranch_execnz .LBB3_48
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[6:7], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execnz .LBB3_49
.LBB3_32:
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[8:9], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execnz .LBB3_50
.LBB3_33:
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[10:11], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execz .LBB3_35
.LBB3_34:
	v_bfe_u32 v18, v25, 16, 1
	s_movk_i32 s8, 0x7fff
	v_add3_u32 v18, v25, v18, s8
	v_mov_b32_e32 v22, 64
	v_and_b32_e32 v20, 0x7fffffff, v25
	s_mov_b32 s9, 0x7f800000
	v_lshrrev_b32_e32 v18, 16, v18
	v_or_b32_sdwa v19, v25, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s9, v20
	s_mov_b32 s6, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v18, v18, v19, vcc
	v_lshlrev_b32_e32 v18, 16, v18
	v_mul_f32_e32 v19, 0xbfb8aa3b, v18
	v_fma_f32 v20, v18, s6, -v19
	v_rndne_f32_e32 v23, v19
	v_fmac_f32_e32 v20, 0xb2a5705f, v18
	v_sub_f32_e32 v19, v19, v23
	v_add_f32_e32 v19, v20, v19
	v_exp_f32_e32 v19, v19
	v_cvt_i32_f32_e32 v20, v23
	s_mov_b32 s6, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s6, v18
	s_mov_b32 s6, 0xc2b17218
	v_ldexp_f32 v19, v19, v20
	v_add_f32_e32 v19, 1.0, v19
	v_cndmask_b32_e32 v19, 1.0, v19, vcc
	v_mov_b32_e32 v20, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s6, v18
	s_nop 1
	v_cndmask_b32_e32 v19, v20, v19, vcc
	v_div_scale_f32 v20, s[6:7], v19, v19, v18
	v_rcp_f32_e32 v23, v20
	s_nop 0
	v_fma_f32 v24, -v20, v23, 1.0
	v_fmac_f32_e32 v23, v24, v23
	v_div_scale_f32 v24, vcc, v18, v19, v18
	v_mul_f32_e32 v25, v24, v23
	v_fma_f32 v26, -v20, v25, v24
	v_fmac_f32_e32 v25, v26, v23
	v_fma_f32 v20, -v20, v25, v24
	v_div_fmas_f32 v20, v20, v23, v25
	v_div_fixup_f32 v18, v20, v19, v18
	v_bfe_u32 v19, v18, 16, 1
	v_bfe_u32 v20, v21, 16, 1
	v_add3_u32 v19, v18, v19, s8
	v_or_b32_sdwa v23, v18, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_add3_u32 v20, v21, v20, s8
	v_lshrrev_b32_e32 v19, 16, v19
	v_or_b32_sdwa v24, v21, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v21, 0x7fffffff, v21
	v_cmp_lt_u32_e32 vcc, s9, v18
	v_lshrrev_b32_e32 v20, 16, v20
	s_nop 0
	v_cndmask_b32_e32 v18, v19, v23, vcc
	v_cmp_lt_u32_e32 vcc, s9, v21
	v_lshlrev_b32_e32 v18, 16, v18
	s_nop 0
	v_cndmask_b32_e32 v19, v20, v24, vcc
	v_lshlrev_b32_e32 v20, 16, v19
	v_pk_mul_f32 v[18:19], v[18:19], v[20:21] op_sel_hi:[0,1]
	v_bfe_u32 v19, v18, 16, 1
	v_add3_u32 v19, v18, v19, s8
	v_or_b32_sdwa v20, v18, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_lshrrev_b32_e32 v19, 16, v19
	v_cmp_lt_u32_e32 vcc, s9, v18
	v_mul_lo_u32 v21, s18, v40
	s_nop 0
	v_cndmask_b32_e32 v20, v19, v20, vcc
	v_mad_u64_u32 v[18:19], s[6:7], s18, v28, v[0:1]
	v_add3_u32 v19, v32, v19, v21
	v_lshl_add_u64 v[18:19], v[18:19], 1, s[12:13]
	global_store_short v[18:19], v20, off offset:32
.LBB3_35:
	s_or_b64 exec, exec, s[4:5]
	v_or_b32_e32 v18, 16, v34
	v_cmp_gt_i32_e64 s[4:5], s20, v18
	v_add_u32_e32 v18, s21, v18
	s_and_b64 s[8:9], s[4:5], s[0:1]
	v_ashrrev_i32_e32 v20, 31, v18
	v_mul_lo_u32 v19, s19, v18
	s_and_saveexec_b64 s[6:7], s[8:9]
	s_cbranch_execz .LBB3_37
	v_bfe_u32 v21, v14, 16, 1
	s_movk_i32 s10, 0x7fff
	v_mov_b32_e32 v24, 64
	v_add3_u32 v21, v14, v21, s10
	v_or_b32_sdwa v22, v14, v24 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v14, 0x7fffffff, v14
	s_mov_b32 s11, 0x7f800000
	v_lshrrev_b32_e32 v21, 16, v21
	v_cmp_lt_u32_e32 vcc, s11, v14
	s_mov_b32 s8, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v14, v21, v22, vcc
	v_lshlrev_b32_e32 v14, 16, v14
	v_mul_f32_e32 v21, 0xbfb8aa3b, v14
	v_fma_f32 v22, v14, s8, -v21
	v_rndne_f32_e32 v23, v21
	v_fmac_f32_e32 v22, 0xb2a5705f, v14
	v_sub_f32_e32 v21, v21, v23
	v_add_f32_e32 v21, v22, v21
	v_exp_f32_e32 v21, v21
	v_cvt_i32_f32_e32 v22, v23
	s_mov_b32 s8, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s8, v14
	s_mov_b32 s8, 0xc2b17218
	v_ldexp_f32 v21, v21, v22
	v_add_f32_e32 v21, 1.0, v21
	v_cndmask_b32_e32 v21, 1.0, v21, vcc
	v_mov_b32_e32 v22, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s8, v14
	s_nop 1
	v_cndmask_b32_e32 v21, v22, v21, vcc
	v_div_scale_f32 v22, s[8:9], v21, v21, v14
	v_rcp_f32_e32 v23, v22
	s_nop 0
	v_fma_f32 v25, -v22, v23, 1.0
	v_fmac_f32_e32 v23, v25, v23
	v_div_scale_f32 v25, vcc, v14, v21, v14
	v_mul_f32_e32 v26, v25, v23
	v_fma_f32 v27, -v22, v26, v25
	v_fmac_f32_e32 v26, v27, v23
	v_fma_f32 v22, -v22, v26, v25
	v_div_fmas_f32 v22, v22, v23, v26
	v_div_fixup_f32 v14, v22, v21, v14
	v_bfe_u32 v21, v14, 16, 1
	v_bfe_u32 v22, v10, 16, 1
	v_add3_u32 v21, v14, v21, s10
	v_or_b32_sdwa v23, v14, v24 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v14, 0x7fffffff, v14
	v_add3_u32 v22, v10, v22, s10
	v_lshrrev_b32_e32 v21, 16, v21
	v_or_b32_sdwa v25, v10, v24 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v10, 0x7fffffff, v10
	v_cmp_lt_u32_e32 vcc, s11, v14
	v_lshrrev_b32_e32 v22, 16, v22
	s_nop 0
	v_cndmask_b32_e32 v14, v21, v23, vcc
	v_cmp_lt_u32_e32 vcc, s11, v10
	v_lshlrev_b32_e32 v10, 16, v14
	s_nop 0
	v_cndmask_b32_e32 v21, v22, v25, vcc
	v_lshlrev_b32_e32 v14, 16, v21
	v_pk_mul_f32 v[22:23], v[10:11], v[14:15] op_sel_hi:[0,1]
	v_bfe_u32 v10, v22, 16, 1
	v_add3_u32 v10, v22, v10, s10
	v_and_b32_e32 v21, 0x7fffffff, v22
	v_lshrrev_b32_e32 v10, 16, v10
	v_or_b32_sdwa v14, v22, v24 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s11, v21
	v_mad_u64_u32 v[22:23], s[8:9], s18, v18, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v10, v10, v14, vcc
	v_mul_lo_u32 v14, s18, v20
	v_add3_u32 v23, v19, v23, v14
	v_lshl_add_u64 v[22:23], v[22:23], 1, s[12:13]
	global_store_short v[22:23], v10, off
.LBB3_37:
	s_or_b64 exec, exec, s[6:7]
	v_or_b32_e32 v10, 17, v34
	v_cmp_gt_i32_e64 s[6:7], s20, v10
	v_add_u32_e32 v10, s21, v10
	s_and_b64 s[10:11], s[6:7], s[0:1]
	v_ashrrev_i32_e32 v21, 31, v10
	v_mul_lo_u32 v14, s19, v10
	s_and_saveexec_b64 s[8:9], s[10:11]
	s_cbranch_execz .LBB3_39
	v_bfe_u32 v22, v15, 16, 1
	s_movk_i32 s14, 0x7fff
	v_mov_b32_e32 v25, 64
	v_add3_u32 v22, v15, v22, s14
	v_or_b32_sdwa v23, v15, v25 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v15, 0x7fffffff, v15
	s_mov_b32 s15, 0x7f800000
	v_lshrrev_b32_e32 v22, 16, v22
	v_cmp_lt_u32_e32 vcc, s15, v15
	s_mov_b32 s10, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v15, v22, v23, vcc
	v_lshlrev_b32_e32 v15, 16, v15
	v_mul_f32_e32 v22, 0xbfb8aa3b, v15
	v_fma_f32 v23, v15, s10, -v22
	v_rndne_f32_e32 v24, v22
	v_fmac_f32_e32 v23, 0xb2a5705f, v15
	v_sub_f32_e32 v22, v22, v24
	v_add_f32_e32 v22, v23, v22
	v_exp_f32_e32 v22, v22
	v_cvt_i32_f32_e32 v23, v24
	s_mov_b32 s10, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s10, v15
	s_mov_b32 s10, 0xc2b17218
	v_ldexp_f32 v22, v22, v23
	v_add_f32_e32 v22, 1.0, v22
	v_cndmask_b32_e32 v22, 1.0, v22, vcc
	v_mov_b32_e32 v23, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s10, v15
	s_nop 1
	v_cndmask_b32_e32 v22, v23, v22, vcc
	v_div_scale_f32 v23, s[10:11], v22, v22, v15
	v_rcp_f32_e32 v24, v23
	s_nop 0
	v_fma_f32 v26, -v23, v24, 1.0
	v_fmac_f32_e32 v24, v26, v24
	v_div_scale_f32 v26, vcc, v15, v22, v15
	v_mul_f32_e32 v27, v26, v24
	v_fma_f32 v28, -v23, v27, v26
	v_fmac_f32_e32 v27, v28, v24
	v_fma_f32 v23, -v23, v27, v26
	v_div_fmas_f32 v23, v23, v24, v27
	v_div_fixup_f32 v15, v23, v22, v15
	v_bfe_u32 v22, v15, 16, 1
	v_bfe_u32 v23, v11, 16, 1
	v_add3_u32 v22, v15, v22, s14
	v_or_b32_sdwa v24, v15, v25 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v15, 0x7fffffff, v15
	v_add3_u32 v23, v11, v23, s14
	v_lshrrev_b32_e32 v22, 16, v22
	v_or_b32_sdwa v26, v11, v25 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v11, 0x7fffffff, v11
	v_cmp_lt_u32_e32 vcc, s15, v15
	v_lshrrev_b32_e32 v23, 16, v23
	s_nop 0
	v_cndmask_b32_e32 v15, v22, v24, vcc
	v_cmp_lt_u32_e32 vcc, s15, v11
	v_lshlrev_b32_e32 v22, 16, v15
	s_nop 0
	v_cndmask_b32_e32 v11, v23, v26, vcc
	v_lshlrev_b32_e32 v24, 16, v11
	v_pk_mul_f32 v[22:23], v[22:23], v[24:25] op_sel_hi:[0,1]
	v_bfe_u32 v11, v22, 16, 1
	v_add3_u32 v11, v22, v11, s14
	v_or_b32_sdwa v15, v22, v25 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v22, 0x7fffffff, v22
	v_lshrrev_b32_e32 v11, 16, v11
	v_cmp_lt_u32_e32 vcc, s15, v22
	v_mad_u64_u32 v[22:23], s[10:11], s18, v10, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v11, v11, v15, vcc
	v_mul_lo_u32 v15, s18, v21
	v_add3_u32 v23, v14, v23, v15
	v_lshl_add_u64 v[22:23], v[22:23], 1, s[12:13]
	global_store_short v[22:23], v11, off
.LBB3_39:
	s_or_b64 exec, exec, s[8:9]
	v_or_b32_e32 v11, 18, v34
	v_cmp_gt_i32_e64 s[8:9], s20, v11
	v_add_u32_e32 v11, s21, v11
	s_and_b64 s[14:15], s[8:9], s[0:1]
	v_ashrrev_i32_e32 v22, 31, v11
	v_mul_lo_u32 v15, s19, v11
	s_and_saveexec_b64 s[10:11], s[14:15]
	s_cbranch_execz .LBB3_41
	v_bfe_u32 v23, v16, 16, 1
	s_movk_i32 s16, 0x7fff
	v_mov_b32_e32 v26, 64
	v_add3_u32 v23, v16, v23, s16
	v_or_b32_sdwa v24, v16, v26 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v16, 0x7fffffff, v16
	s_mov_b32 s17, 0x7f800000
	v_lshrrev_b32_e32 v23, 16, v23
	v_cmp_lt_u32_e32 vcc, s17, v16
	s_mov_b32 s14, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v16, v23, v24, vcc
	v_lshlrev_b32_e32 v16, 16, v16
	v_mul_f32_e32 v23, 0xbfb8aa3b, v16
	v_fma_f32 v24, v16, s14, -v23
	v_rndne_f32_e32 v25, v23
	v_fmac_f32_e32 v24, 0xb2a5705f, v16
	v_sub_f32_e32 v23, v23, v25
	v_add_f32_e32 v23, v24, v23
	v_exp_f32_e32 v23, v23
	v_cvt_i32_f32_e32 v24, v25
	s_mov_b32 s14, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s14, v16
	s_mov_b32 s14, 0xc2b17218
	v_ldexp_f32 v23, v23, v24
	v_add_f32_e32 v23, 1.0, v23
	v_cndmask_b32_e32 v23, 1.0, v23, vcc
	v_mov_b32_e32 v24, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s14, v16
	s_nop 1
	v_cndmask_b32_e32 v23, v24, v23, vcc
	v_div_scale_f32 v24, s[14:15], v23, v23, v16
	v_rcp_f32_e32 v25, v24
	s_nop 0
	v_fma_f32 v27, -v24, v25, 1.0
	v_fmac_f32_e32 v25, v27, v25
	v_div_scale_f32 v27, vcc, v16, v23, v16
	v_mul_f32_e32 v28, v27, v25
	v_fma_f32 v29, -v24, v28, v27
	v_fmac_f32_e32 v28, v29, v25
	v_fma_f32 v24, -v24, v28, v27
	v_div_fmas_f32 v24, v24, v25, v28
	v_div_fixup_f32 v16, v24, v23, v16
	v_bfe_u32 v23, v16, 16, 1
	v_bfe_u32 v24, v12, 16, 1
	v_add3_u32 v23, v16, v23, s16
	v_or_b32_sdwa v25, v16, v26 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v16, 0x7fffffff, v16
	v_add3_u32 v24, v12, v24, s16
	v_lshrrev_b32_e32 v23, 16, v23
	v_or_b32_sdwa v27, v12, v26 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v12, 0x7fffffff, v12
	v_cmp_lt_u32_e32 vcc, s17, v16
	v_lshrrev_b32_e32 v24, 16, v24
	s_nop 0
	v_cndmask_b32_e32 v16, v23, v25, vcc
	v_cmp_lt_u32_e32 vcc, s17, v12
	v_lshlrev_b32_e32 v12, 16, v16
	s_nop 0
	v_cndmask_b32_e32 v23, v24, v27, vcc
	v_lshlrev_b32_e32 v16, 16, v23
	v_pk_mul_f32 v[24:25], v[12:13], v[16:17] op_sel_hi:[0,1]
	v_bfe_u32 v12, v24, 16, 1
	v_add3_u32 v12, v24, v12, s16
	v_and_b32_e32 v23, 0x7fffffff, v24
	v_lshrrev_b32_e32 v12, 16, v12
	v_or_b32_sdwa v16, v24, v26 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s17, v23
	v_mad_u64_u32 v[24:25], s[14:15], s18, v11, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v12, v12, v16, vcc
	v_mul_lo_u32 v16, s18, v22
	v_add3_u32 v25, v15, v25, v16
	v_lshl_add_u64 v[24:25], v[24:25], 1, s[12:13]
	global_store_short v[24:25], v12, off
.LBB3_41:
	s_or_b64 exec, exec, s[10:11]
	v_or_b32_e32 v12, 19, v34
	v_cmp_gt_i32_e64 s[10:11], s20, v12
	v_add_u32_e32 v12, s21, v12
	s_and_b64 s[14:15], s[10:11], s[0:1]
	v_ashrrev_i32_e32 v23, 31, v12
	v_mul_lo_u32 v16, s19, v12
	s_and_saveexec_b64 s[0:1], s[14:15]
	s_cbranch_execnz .LBB3_51
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[4:5], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execnz .LBB3_52
.LBB3_43:
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[6:7], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execnz .LBB3_53
.LBB3_44:
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[8:9], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execnz .LBB3_54
.LBB3_45:
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[0:1], s[10:11], s[2:3]
	s_and_saveexec_b64 s[2:3], s[0:1]
	s_cbranch_execz .LBB3_47
.LBB3_46:
	v_bfe_u32 v2, v9, 16, 1
	s_movk_i32 s2, 0x7fff
	v_add3_u32 v2, v9, v2, s2
	v_mov_b32_e32 v6, 64
	v_and_b32_e32 v4, 0x7fffffff, v9
	s_mov_b32 s3, 0x7f800000
	v_lshrrev_b32_e32 v2, 16, v2
	v_or_b32_sdwa v3, v9, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s3, v4
	s_mov_b32 s0, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v2, v2, v3, vcc
	v_lshlrev_b32_e32 v2, 16, v2
	v_mul_f32_e32 v3, 0xbfb8aa3b, v2
	v_fma_f32 v4, v2, s0, -v3
	v_rndne_f32_e32 v7, v3
	v_fmac_f32_e32 v4, 0xb2a5705f, v2
	v_sub_f32_e32 v3, v3, v7
	v_add_f32_e32 v3, v4, v3
	v_exp_f32_e32 v3, v3
	v_cvt_i32_f32_e32 v4, v7
	s_mov_b32 s0, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s0, v2
	s_mov_b32 s0, 0xc2b17218
	v_ldexp_f32 v3, v3, v4
	v_add_f32_e32 v3, 1.0, v3
	v_cndmask_b32_e32 v3, 1.0, v3, vcc
	v_mov_b32_e32 v4, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s0, v2
	v_mad_u64_u32 v[0:1], s[0:1], s18, v12, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v3, v4, v3, vcc
	v_div_scale_f32 v4, s[0:1], v3, v3, v2
	v_rcp_f32_e32 v7, v4
	s_nop 0
	v_fma_f32 v8, -v4, v7, 1.0
	v_fmac_f32_e32 v7, v8, v7
	v_div_scale_f32 v8, vcc, v2, v3, v2
	v_mul_f32_e32 v9, v8, v7
	v_fma_f32 v10, -v4, v9, v8
	v_fmac_f32_e32 v9, v10, v7
	v_fma_f32 v4, -v4, v9, v8
	v_div_fmas_f32 v4, v4, v7, v9
	v_div_fixup_f32 v2, v4, v3, v2
	v_bfe_u32 v3, v2, 16, 1
	v_bfe_u32 v4, v5, 16, 1
	v_add3_u32 v3, v2, v3, s2
	v_or_b32_sdwa v7, v2, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_add3_u32 v4, v5, v4, s2
	v_lshrrev_b32_e32 v3, 16, v3
	v_or_b32_sdwa v8, v5, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v5, 0x7fffffff, v5
	v_cmp_lt_u32_e32 vcc, s3, v2
	v_lshrrev_b32_e32 v4, 16, v4
	s_nop 0
	v_cndmask_b32_e32 v2, v3, v7, vcc
	v_cmp_lt_u32_e32 vcc, s3, v5
	v_lshlrev_b32_e32 v2, 16, v2
	s_nop 0
	v_cndmask_b32_e32 v3, v4, v8, vcc
	v_lshlrev_b32_e32 v4, 16, v3
	v_pk_mul_f32 v[2:3], v[2:3], v[4:5] op_sel_hi:[0,1]
	v_bfe_u32 v3, v2, 16, 1
	v_add3_u32 v3, v2, v3, s2
	v_or_b32_sdwa v4, v2, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_lshrrev_b32_e32 v3, 16, v3
	v_cmp_lt_u32_e32 vcc, s3, v2
	s_nop 1
	v_cndmask_b32_e32 v2, v3, v4, vcc
	v_mul_lo_u32 v3, s18, v23
	v_add3_u32 v1, v16, v1, v3
	v_lshl_add_u64 v[0:1], v[0:1], 1, s[12:13]
	global_store_short v[0:1], v2, off offset:32
.LBB3_47:
	s_endpgm
.LBB3_48:
	v_bfe_u32 v29, v22, 16, 1
	s_movk_i32 s16, 0x7fff
	v_mov_b32_e32 v33, 64
	v_add3_u32 v29, v22, v29, s16
	v_or_b32_sdwa v41, v22, v33 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v22, 0x7fffffff, v22
	s_mov_b32 s17, 0x7f800000
	v_lshrrev_b32_e32 v29, 16, v29
	v_cmp_lt_u32_e32 vcc, s17, v22
	s_mov_b32 s14, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v22, v29, v41, vcc
	v_lshlrev_b32_e32 v22, 16, v22
	v_mul_f32_e32 v29, 0xbfb8aa3b, v22
	v_fma_f32 v41, v22, s14, -v29
	v_rndne_f32_e32 v42, v29
	v_fmac_f32_e32 v41, 0xb2a5705f, v22
	v_sub_f32_e32 v29, v29, v42
	v_add_f32_e32 v29, v41, v29
	v_exp_f32_e32 v29, v29
	v_cvt_i32_f32_e32 v41, v42
	s_mov_b32 s14, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s14, v22
	s_mov_b32 s14, 0xc2b17218
	v_ldexp_f32 v29, v29, v41
	v_add_f32_e32 v29, 1.0, v29
	v_cndmask_b32_e32 v29, 1.0, v29, vcc
	v_mov_b32_e32 v41, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s14, v22
	s_nop 1
	v_cndmask_b32_e32 v29, v41, v29, vcc
	v_div_scale_f32 v41, s[14:15], v29, v29, v22
	v_rcp_f32_e32 v42, v41
	s_nop 0
	v_fma_f32 v43, -v41, v42, 1.0
	v_fmac_f32_e32 v42, v43, v42
	v_div_scale_f32 v43, vcc, v22, v29, v22
	v_mul_f32_e32 v44, v43, v42
	v_fma_f32 v45, -v41, v44, v43
	v_fmac_f32_e32 v44, v45, v42
	v_fma_f32 v41, -v41, v44, v43
	v_div_fmas_f32 v41, v41, v42, v44
	v_div_fixup_f32 v22, v41, v29, v22
	v_bfe_u32 v29, v22, 16, 1
	v_bfe_u32 v41, v18, 16, 1
	v_add3_u32 v29, v22, v29, s16
	v_or_b32_sdwa v42, v22, v33 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v22, 0x7fffffff, v22
	v_add3_u32 v41, v18, v41, s16
	v_lshrrev_b32_e32 v29, 16, v29
	v_or_b32_sdwa v43, v18, v33 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_cmp_lt_u32_e32 vcc, s17, v22
	v_lshrrev_b32_e32 v41, 16, v41
	s_nop 0
	v_cndmask_b32_e32 v22, v29, v42, vcc
	v_cmp_lt_u32_e32 vcc, s17, v18
	v_lshlrev_b32_e32 v18, 16, v22
	s_nop 0
	v_cndmask_b32_e32 v29, v41, v43, vcc
	v_lshlrev_b32_e32 v22, 16, v29
	v_pk_mul_f32 v[42:43], v[18:19], v[22:23] op_sel_hi:[0,1]
	v_bfe_u32 v18, v42, 16, 1
	v_add3_u32 v18, v42, v18, s16
	v_and_b32_e32 v29, 0x7fffffff, v42
	v_lshrrev_b32_e32 v18, 16, v18
	v_or_b32_sdwa v22, v42, v33 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s17, v29
	v_mad_u64_u32 v[42:43], s[14:15], s18, v35, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v18, v18, v22, vcc
	v_mul_lo_u32 v22, s18, v37
	v_add3_u32 v43, v36, v43, v22
	v_lshl_add_u64 v[36:37], v[42:43], 1, s[12:13]
	global_store_short v[36:37], v18, off offset:32
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[6:7], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execz .LBB3_32
.LBB3_49:
	v_bfe_u32 v18, v23, 16, 1
	s_movk_i32 s14, 0x7fff
	v_mov_b32_e32 v29, 64
	v_add3_u32 v18, v23, v18, s14
	v_or_b32_sdwa v22, v23, v29 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v23, 0x7fffffff, v23
	s_mov_b32 s15, 0x7f800000
	v_lshrrev_b32_e32 v18, 16, v18
	v_cmp_lt_u32_e32 vcc, s15, v23
	s_mov_b32 s6, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v18, v18, v22, vcc
	v_lshlrev_b32_e32 v18, 16, v18
	v_mul_f32_e32 v22, 0xbfb8aa3b, v18
	v_fma_f32 v23, v18, s6, -v22
	v_rndne_f32_e32 v33, v22
	v_fmac_f32_e32 v23, 0xb2a5705f, v18
	v_sub_f32_e32 v22, v22, v33
	v_add_f32_e32 v22, v23, v22
	v_exp_f32_e32 v22, v22
	v_cvt_i32_f32_e32 v23, v33
	s_mov_b32 s6, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s6, v18
	s_mov_b32 s6, 0xc2b17218
	v_ldexp_f32 v22, v22, v23
	v_add_f32_e32 v22, 1.0, v22
	v_cndmask_b32_e32 v22, 1.0, v22, vcc
	v_mov_b32_e32 v23, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s6, v18
	s_nop 1
	v_cndmask_b32_e32 v22, v23, v22, vcc
	v_div_scale_f32 v23, s[6:7], v22, v22, v18
	v_rcp_f32_e32 v33, v23
	s_nop 0
	v_fma_f32 v35, -v23, v33, 1.0
	v_fmac_f32_e32 v33, v35, v33
	v_div_scale_f32 v35, vcc, v18, v22, v18
	v_mul_f32_e32 v36, v35, v33
	v_fma_f32 v37, -v23, v36, v35
	v_fmac_f32_e32 v36, v37, v33
	v_fma_f32 v23, -v23, v36, v35
	v_div_fmas_f32 v23, v23, v33, v36
	v_div_fixup_f32 v18, v23, v22, v18
	v_bfe_u32 v22, v18, 16, 1
	v_bfe_u32 v23, v19, 16, 1
	v_add3_u32 v22, v18, v22, s14
	v_or_b32_sdwa v33, v18, v29 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_add3_u32 v23, v19, v23, s14
	v_lshrrev_b32_e32 v22, 16, v22
	v_or_b32_sdwa v35, v19, v29 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v19, 0x7fffffff, v19
	v_cmp_lt_u32_e32 vcc, s15, v18
	v_lshrrev_b32_e32 v23, 16, v23
	s_nop 0
	v_cndmask_b32_e32 v18, v22, v33, vcc
	v_cmp_lt_u32_e32 vcc, s15, v19
	v_lshlrev_b32_e32 v18, 16, v18
	s_nop 0
	v_cndmask_b32_e32 v19, v23, v35, vcc
	v_lshlrev_b32_e32 v22, 16, v19
	v_pk_mul_f32 v[18:19], v[18:19], v[22:23] op_sel_hi:[0,1]
	v_bfe_u32 v19, v18, 16, 1
	v_add3_u32 v19, v18, v19, s14
	v_or_b32_sdwa v22, v18, v29 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_lshrrev_b32_e32 v19, 16, v19
	v_cmp_lt_u32_e32 vcc, s15, v18
	v_mul_lo_u32 v23, s18, v38
	s_nop 0
	v_cndmask_b32_e32 v22, v19, v22, vcc
	v_mad_u64_u32 v[18:19], s[6:7], s18, v26, v[0:1]
	v_add3_u32 v19, v30, v19, v23
	v_lshl_add_u64 v[18:19], v[18:19], 1, s[12:13]
	global_store_short v[18:19], v22, off offset:32
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[8:9], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execz .LBB3_33
.LBB3_50:
	v_bfe_u32 v18, v24, 16, 1
	s_movk_i32 s8, 0x7fff
	v_add3_u32 v18, v24, v18, s8
	v_mov_b32_e32 v22, 64
	v_and_b32_e32 v23, 0x7fffffff, v24
	s_mov_b32 s9, 0x7f800000
	v_lshrrev_b32_e32 v18, 16, v18
	v_or_b32_sdwa v19, v24, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s9, v23
	s_mov_b32 s6, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v18, v18, v19, vcc
	v_lshlrev_b32_e32 v18, 16, v18
	v_mul_f32_e32 v19, 0xbfb8aa3b, v18
	v_fma_f32 v23, v18, s6, -v19
	v_rndne_f32_e32 v24, v19
	v_fmac_f32_e32 v23, 0xb2a5705f, v18
	v_sub_f32_e32 v19, v19, v24
	v_add_f32_e32 v19, v23, v19
	v_exp_f32_e32 v19, v19
	v_cvt_i32_f32_e32 v23, v24
	s_mov_b32 s6, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s6, v18
	s_mov_b32 s6, 0xc2b17218
	v_ldexp_f32 v19, v19, v23
	v_add_f32_e32 v19, 1.0, v19
	v_cndmask_b32_e32 v19, 1.0, v19, vcc
	v_mov_b32_e32 v23, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s6, v18
	s_nop 1
	v_cndmask_b32_e32 v19, v23, v19, vcc
	v_div_scale_f32 v23, s[6:7], v19, v19, v18
	v_rcp_f32_e32 v24, v23
	s_nop 0
	v_fma_f32 v26, -v23, v24, 1.0
	v_fmac_f32_e32 v24, v26, v24
	v_div_scale_f32 v26, vcc, v18, v19, v18
	v_mul_f32_e32 v29, v26, v24
	v_fma_f32 v30, -v23, v29, v26
	v_fmac_f32_e32 v29, v30, v24
	v_fma_f32 v23, -v23, v29, v26
	v_div_fmas_f32 v23, v23, v24, v29
	v_div_fixup_f32 v18, v23, v19, v18
	v_bfe_u32 v19, v18, 16, 1
	v_bfe_u32 v23, v20, 16, 1
	v_add3_u32 v19, v18, v19, s8
	v_or_b32_sdwa v24, v18, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_add3_u32 v23, v20, v23, s8
	v_lshrrev_b32_e32 v19, 16, v19
	v_or_b32_sdwa v26, v20, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v20, 0x7fffffff, v20
	v_cmp_lt_u32_e32 vcc, s9, v18
	v_lshrrev_b32_e32 v23, 16, v23
	s_nop 0
	v_cndmask_b32_e32 v18, v19, v24, vcc
	v_cmp_lt_u32_e32 vcc, s9, v20
	v_lshlrev_b32_e32 v18, 16, v18
	s_nop 0
	v_cndmask_b32_e32 v19, v23, v26, vcc
	v_lshlrev_b32_e32 v20, 16, v19
	v_pk_mul_f32 v[18:19], v[18:19], v[20:21] op_sel_hi:[0,1]
	v_bfe_u32 v19, v18, 16, 1
	v_add3_u32 v19, v18, v19, s8
	v_or_b32_sdwa v20, v18, v22 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v18, 0x7fffffff, v18
	v_lshrrev_b32_e32 v19, 16, v19
	v_cmp_lt_u32_e32 vcc, s9, v18
	v_mul_lo_u32 v22, s18, v39
	s_nop 0
	v_cndmask_b32_e32 v20, v19, v20, vcc
	v_mad_u64_u32 v[18:19], s[6:7], s18, v27, v[0:1]
	v_add3_u32 v19, v31, v19, v22
	v_lshl_add_u64 v[18:19], v[18:19], 1, s[12:13]
	global_store_short v[18:19], v20, off offset:32
	s_or_b64 exec, exec, s[4:5]
	s_and_b64 s[6:7], s[10:11], s[2:3]
	s_and_saveexec_b64 s[4:5], s[6:7]
	s_cbranch_execnz .LBB3_34
	s_branch .LBB3_35
.LBB3_51:
	v_bfe_u32 v24, v17, 16, 1
	s_movk_i32 s16, 0x7fff
	v_mov_b32_e32 v27, 64
	v_add3_u32 v24, v17, v24, s16
	v_or_b32_sdwa v25, v17, v27 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v17, 0x7fffffff, v17
	s_mov_b32 s17, 0x7f800000
	v_lshrrev_b32_e32 v24, 16, v24
	v_cmp_lt_u32_e32 vcc, s17, v17
	s_mov_b32 s14, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v17, v24, v25, vcc
	v_lshlrev_b32_e32 v17, 16, v17
	v_mul_f32_e32 v24, 0xbfb8aa3b, v17
	v_fma_f32 v25, v17, s14, -v24
	v_rndne_f32_e32 v26, v24
	v_fmac_f32_e32 v25, 0xb2a5705f, v17
	v_sub_f32_e32 v24, v24, v26
	v_add_f32_e32 v24, v25, v24
	v_exp_f32_e32 v24, v24
	v_cvt_i32_f32_e32 v25, v26
	s_mov_b32 s14, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s14, v17
	s_mov_b32 s14, 0xc2b17218
	v_ldexp_f32 v24, v24, v25
	v_add_f32_e32 v24, 1.0, v24
	v_cndmask_b32_e32 v24, 1.0, v24, vcc
	v_mov_b32_e32 v25, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s14, v17
	s_nop 1
	v_cndmask_b32_e32 v24, v25, v24, vcc
	v_div_scale_f32 v25, s[14:15], v24, v24, v17
	v_rcp_f32_e32 v26, v25
	s_nop 0
	v_fma_f32 v28, -v25, v26, 1.0
	v_fmac_f32_e32 v26, v28, v26
	v_div_scale_f32 v28, vcc, v17, v24, v17
	v_mul_f32_e32 v29, v28, v26
	v_fma_f32 v30, -v25, v29, v28
	v_fmac_f32_e32 v29, v30, v26
	v_fma_f32 v25, -v25, v29, v28
	v_div_fmas_f32 v25, v25, v26, v29
	v_div_fixup_f32 v17, v25, v24, v17
	v_bfe_u32 v24, v17, 16, 1
	v_bfe_u32 v25, v13, 16, 1
	v_add3_u32 v24, v17, v24, s16
	v_or_b32_sdwa v26, v17, v27 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v17, 0x7fffffff, v17
	v_add3_u32 v25, v13, v25, s16
	v_lshrrev_b32_e32 v24, 16, v24
	v_or_b32_sdwa v28, v13, v27 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v13, 0x7fffffff, v13
	v_cmp_lt_u32_e32 vcc, s17, v17
	v_lshrrev_b32_e32 v25, 16, v25
	s_nop 0
	v_cndmask_b32_e32 v17, v24, v26, vcc
	v_cmp_lt_u32_e32 vcc, s17, v13
	v_lshlrev_b32_e32 v24, 16, v17
	s_nop 0
	v_cndmask_b32_e32 v13, v25, v28, vcc
	v_lshlrev_b32_e32 v26, 16, v13
	v_pk_mul_f32 v[24:25], v[24:25], v[26:27] op_sel_hi:[0,1]
	v_bfe_u32 v13, v24, 16, 1
	v_add3_u32 v13, v24, v13, s16
	v_or_b32_sdwa v17, v24, v27 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v24, 0x7fffffff, v24
	v_lshrrev_b32_e32 v13, 16, v13
	v_cmp_lt_u32_e32 vcc, s17, v24
	v_mad_u64_u32 v[24:25], s[14:15], s18, v12, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v13, v13, v17, vcc
	v_mul_lo_u32 v17, s18, v23
	v_add3_u32 v25, v16, v25, v17
	v_lshl_add_u64 v[24:25], v[24:25], 1, s[12:13]
	global_store_short v[24:25], v13, off
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[4:5], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execz .LBB3_43
.LBB3_52:
	v_bfe_u32 v13, v6, 16, 1
	s_movk_i32 s14, 0x7fff
	v_mov_b32_e32 v17, 64
	v_add3_u32 v13, v6, v13, s14
	v_or_b32_sdwa v24, v6, v17 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v6, 0x7fffffff, v6
	s_mov_b32 s15, 0x7f800000
	v_lshrrev_b32_e32 v13, 16, v13
	v_cmp_lt_u32_e32 vcc, s15, v6
	s_mov_b32 s4, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v6, v13, v24, vcc
	v_lshlrev_b32_e32 v6, 16, v6
	v_mul_f32_e32 v13, 0xbfb8aa3b, v6
	v_fma_f32 v24, v6, s4, -v13
	v_rndne_f32_e32 v25, v13
	v_fmac_f32_e32 v24, 0xb2a5705f, v6
	v_sub_f32_e32 v13, v13, v25
	v_add_f32_e32 v13, v24, v13
	v_exp_f32_e32 v13, v13
	v_cvt_i32_f32_e32 v24, v25
	s_mov_b32 s4, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s4, v6
	s_mov_b32 s4, 0xc2b17218
	v_ldexp_f32 v13, v13, v24
	v_add_f32_e32 v13, 1.0, v13
	v_cndmask_b32_e32 v13, 1.0, v13, vcc
	v_mov_b32_e32 v24, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s4, v6
	s_nop 1
	v_cndmask_b32_e32 v13, v24, v13, vcc
	v_div_scale_f32 v24, s[4:5], v13, v13, v6
	v_rcp_f32_e32 v25, v24
	s_nop 0
	v_fma_f32 v26, -v24, v25, 1.0
	v_fmac_f32_e32 v25, v26, v25
	v_div_scale_f32 v26, vcc, v6, v13, v6
	v_mul_f32_e32 v27, v26, v25
	v_fma_f32 v28, -v24, v27, v26
	v_fmac_f32_e32 v27, v28, v25
	v_fma_f32 v24, -v24, v27, v26
	v_div_fmas_f32 v24, v24, v25, v27
	v_div_fixup_f32 v6, v24, v13, v6
	v_bfe_u32 v13, v6, 16, 1
	v_bfe_u32 v24, v2, 16, 1
	v_add3_u32 v13, v6, v13, s14
	v_or_b32_sdwa v25, v6, v17 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v6, 0x7fffffff, v6
	v_add3_u32 v24, v2, v24, s14
	v_lshrrev_b32_e32 v13, 16, v13
	v_or_b32_sdwa v26, v2, v17 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_cmp_lt_u32_e32 vcc, s15, v6
	v_lshrrev_b32_e32 v24, 16, v24
	s_nop 0
	v_cndmask_b32_e32 v6, v13, v25, vcc
	v_cmp_lt_u32_e32 vcc, s15, v2
	v_lshlrev_b32_e32 v2, 16, v6
	s_nop 0
	v_cndmask_b32_e32 v13, v24, v26, vcc
	v_lshlrev_b32_e32 v6, 16, v13
	v_pk_mul_f32 v[24:25], v[2:3], v[6:7] op_sel_hi:[0,1]
	v_bfe_u32 v2, v24, 16, 1
	v_add3_u32 v2, v24, v2, s14
	v_and_b32_e32 v13, 0x7fffffff, v24
	v_lshrrev_b32_e32 v2, 16, v2
	v_or_b32_sdwa v6, v24, v17 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s15, v13
	v_mad_u64_u32 v[24:25], s[4:5], s18, v18, v[0:1]
	s_nop 0
	v_cndmask_b32_e32 v2, v2, v6, vcc
	v_mul_lo_u32 v6, s18, v20
	v_add3_u32 v25, v19, v25, v6
	v_lshl_add_u64 v[18:19], v[24:25], 1, s[12:13]
	global_store_short v[18:19], v2, off offset:32
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[6:7], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execz .LBB3_44
.LBB3_53:
	v_bfe_u32 v2, v7, 16, 1
	s_movk_i32 s6, 0x7fff
	v_mov_b32_e32 v13, 64
	v_add3_u32 v2, v7, v2, s6
	v_or_b32_sdwa v6, v7, v13 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v7, 0x7fffffff, v7
	s_mov_b32 s7, 0x7f800000
	v_lshrrev_b32_e32 v2, 16, v2
	v_cmp_lt_u32_e32 vcc, s7, v7
	s_mov_b32 s4, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v2, v2, v6, vcc
	v_lshlrev_b32_e32 v2, 16, v2
	v_mul_f32_e32 v6, 0xbfb8aa3b, v2
	v_fma_f32 v7, v2, s4, -v6
	v_rndne_f32_e32 v17, v6
	v_fmac_f32_e32 v7, 0xb2a5705f, v2
	v_sub_f32_e32 v6, v6, v17
	v_add_f32_e32 v6, v7, v6
	v_exp_f32_e32 v6, v6
	v_cvt_i32_f32_e32 v7, v17
	s_mov_b32 s4, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s4, v2
	s_mov_b32 s4, 0xc2b17218
	v_ldexp_f32 v6, v6, v7
	v_add_f32_e32 v6, 1.0, v6
	v_cndmask_b32_e32 v6, 1.0, v6, vcc
	v_mov_b32_e32 v7, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s4, v2
	s_nop 1
	v_cndmask_b32_e32 v6, v7, v6, vcc
	v_div_scale_f32 v7, s[4:5], v6, v6, v2
	v_rcp_f32_e32 v17, v7
	s_nop 0
	v_fma_f32 v18, -v7, v17, 1.0
	v_fmac_f32_e32 v17, v18, v17
	v_div_scale_f32 v18, vcc, v2, v6, v2
	v_mul_f32_e32 v19, v18, v17
	v_fma_f32 v20, -v7, v19, v18
	v_fmac_f32_e32 v19, v20, v17
	v_fma_f32 v7, -v7, v19, v18
	v_div_fmas_f32 v7, v7, v17, v19
	v_div_fixup_f32 v2, v7, v6, v2
	v_bfe_u32 v6, v2, 16, 1
	v_bfe_u32 v7, v3, 16, 1
	v_add3_u32 v6, v2, v6, s6
	v_or_b32_sdwa v17, v2, v13 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_add3_u32 v7, v3, v7, s6
	v_lshrrev_b32_e32 v6, 16, v6
	v_or_b32_sdwa v18, v3, v13 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v3, 0x7fffffff, v3
	v_cmp_lt_u32_e32 vcc, s7, v2
	v_lshrrev_b32_e32 v7, 16, v7
	s_nop 0
	v_cndmask_b32_e32 v2, v6, v17, vcc
	v_cmp_lt_u32_e32 vcc, s7, v3
	v_lshlrev_b32_e32 v2, 16, v2
	s_nop 0
	v_cndmask_b32_e32 v3, v7, v18, vcc
	v_lshlrev_b32_e32 v6, 16, v3
	v_pk_mul_f32 v[2:3], v[2:3], v[6:7] op_sel_hi:[0,1]
	v_bfe_u32 v3, v2, 16, 1
	v_add3_u32 v3, v2, v3, s6
	v_or_b32_sdwa v6, v2, v13 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_lshrrev_b32_e32 v3, 16, v3
	v_cmp_lt_u32_e32 vcc, s7, v2
	v_mul_lo_u32 v7, s18, v21
	s_nop 0
	v_cndmask_b32_e32 v6, v3, v6, vcc
	v_mad_u64_u32 v[2:3], s[4:5], s18, v10, v[0:1]
	v_add3_u32 v3, v14, v3, v7
	v_lshl_add_u64 v[2:3], v[2:3], 1, s[12:13]
	global_store_short v[2:3], v6, off offset:32
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[4:5], s[8:9], s[2:3]
	s_and_saveexec_b64 s[0:1], s[4:5]
	s_cbranch_execz .LBB3_45
.LBB3_54:
	v_bfe_u32 v2, v8, 16, 1
	s_movk_i32 s6, 0x7fff
	v_add3_u32 v2, v8, v2, s6
	v_mov_b32_e32 v6, 64
	v_and_b32_e32 v7, 0x7fffffff, v8
	s_mov_b32 s7, 0x7f800000
	v_lshrrev_b32_e32 v2, 16, v2
	v_or_b32_sdwa v3, v8, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_cmp_lt_u32_e32 vcc, s7, v7
	s_mov_b32 s4, 0xbfb8aa3b
	s_nop 0
	v_cndmask_b32_e32 v2, v2, v3, vcc
	v_lshlrev_b32_e32 v2, 16, v2
	v_mul_f32_e32 v3, 0xbfb8aa3b, v2
	v_fma_f32 v7, v2, s4, -v3
	v_rndne_f32_e32 v8, v3
	v_fmac_f32_e32 v7, 0xb2a5705f, v2
	v_sub_f32_e32 v3, v3, v8
	v_add_f32_e32 v3, v7, v3
	v_exp_f32_e32 v3, v3
	v_cvt_i32_f32_e32 v7, v8
	s_mov_b32 s4, 0x42ce8ed0
	v_cmp_nlt_f32_e32 vcc, s4, v2
	s_mov_b32 s4, 0xc2b17218
	v_ldexp_f32 v3, v3, v7
	v_add_f32_e32 v3, 1.0, v3
	v_cndmask_b32_e32 v3, 1.0, v3, vcc
	v_mov_b32_e32 v7, 0x7f800000
	v_cmp_ngt_f32_e32 vcc, s4, v2
	s_nop 1
	v_cndmask_b32_e32 v3, v7, v3, vcc
	v_div_scale_f32 v7, s[4:5], v3, v3, v2
	v_rcp_f32_e32 v8, v7
	s_nop 0
	v_fma_f32 v10, -v7, v8, 1.0
	v_fmac_f32_e32 v8, v10, v8
	v_div_scale_f32 v10, vcc, v2, v3, v2
	v_mul_f32_e32 v13, v10, v8
	v_fma_f32 v14, -v7, v13, v10
	v_fmac_f32_e32 v13, v14, v8
	v_fma_f32 v7, -v7, v13, v10
	v_div_fmas_f32 v7, v7, v8, v13
	v_div_fixup_f32 v2, v7, v3, v2
	v_bfe_u32 v3, v2, 16, 1
	v_bfe_u32 v7, v4, 16, 1
	v_add3_u32 v3, v2, v3, s6
	v_or_b32_sdwa v8, v2, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_add3_u32 v7, v4, v7, s6
	v_lshrrev_b32_e32 v3, 16, v3
	v_or_b32_sdwa v10, v4, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v4, 0x7fffffff, v4
	v_cmp_lt_u32_e32 vcc, s7, v2
	v_lshrrev_b32_e32 v7, 16, v7
	s_nop 0
	v_cndmask_b32_e32 v2, v3, v8, vcc
	v_cmp_lt_u32_e32 vcc, s7, v4
	v_lshlrev_b32_e32 v2, 16, v2
	s_nop 0
	v_cndmask_b32_e32 v3, v7, v10, vcc
	v_lshlrev_b32_e32 v4, 16, v3
	v_pk_mul_f32 v[2:3], v[2:3], v[4:5] op_sel_hi:[0,1]
	v_bfe_u32 v3, v2, 16, 1
	v_add3_u32 v3, v2, v3, s6
	v_or_b32_sdwa v4, v2, v6 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1 src1_sel:DWORD
	v_and_b32_e32 v2, 0x7fffffff, v2
	v_lshrrev_b32_e32 v3, 16, v3
	v_cmp_lt_u32_e32 vcc, s7, v2
	v_mul_lo_u32 v6, s18, v22
	s_nop 0
	v_cndmask_b32_e32 v4, v3, v4, vcc
	v_mad_u64_u32 v[2:3], s[4:5], s18, v11, v[0:1]
	v_add3_u32 v3, v15, v3, v6
	v_lshl_add_u64 v[2:3], v[2:3], 1, s[12:13]
	global_store_short v[2:3], v4, off offset:32
	s_or_b64 exec, exec, s[0:1]
	s_and_b64 s[0:1], s[10:11], s[2:3]
	s_and_saveexec_b64 s[2:3], s[0:1]
	s_cbranch_execnz .LBB3_46
	s_branch .LBB3_47
	.section	.rodata,#alloc
	.p2align	6, 0x0
	.amdhsa_kernel _ZN4zaya7kernels3moe11expert_gemmINS_5dtype4BF16ELb1EEEvNS0_11MoeTop1ArgsE
		.amdhsa_group_segment_fixed_size 15616
		.amdhsa_private_segment_fixed_size 0
		.amdhsa_kernarg_size 136
		.amdhsa_user_sgpr_count 2
		.amdhsa_user_sgpr_dispatch_ptr 0
		.amdhsa_user_sgpr_queue_ptr 0
		.amdhsa_user_sgpr_kernarg_segment_ptr 1
		.amdhsa_user_sgpr_dispatch_id 0
		.amdhsa_user_sgpr_private_segment_size 0
		.amdhsa_enable_private_segment 0
		.amdhsa_system_sgpr_workgroup_id_x 1
		.amdhsa_system_sgpr_workgroup_id_y 1
		.amdhsa_system_sgpr_workgroup_id_z 0
		.amdhsa_system_sgpr_workgroup_info 0
		.amdhsa_system_vgpr_workitem_id 0
		.amdhsa_next_free_vgpr 80
		.amdhsa_next_free_sgpr 28
		.amdhsa_accum_offset 48
		.amdhsa_reserve_xnack_mask 1
		.amdhsa_float_round_mode_32 0
		.amdhsa_float_round_mode_16_64 0
		.amdhsa_float_denorm_mode_32 3
		.amdhsa_float_denorm_mode_16_64 3
		.amdhsa_dx10_clamp 1
		.amdhsa_ieee_mode 1
		.amdhsa_fp16_overflow 0
		.amdhsa_tg_split 0
		.amdhsa_exception_fp_ieee_invalid_op 0
		.amdhsa_exception_fp_denorm_src 0
		.amdhsa_exception_fp_ieee_div_zero 0
		.amdhsa_exception_fp_ieee_overflow 0
		.amdhsa_exception_fp_ieee_underflow 0
		.amdhsa_exception_fp_ieee_inexact 0
		.amdhsa_exception_int_div_zero 0
	.end_amdhsa_kernel
	.section	.text._ZN4zaya7kernels3moe11expert_gemmINS_5dtype4BF16ELb1EEEvNS0_11MoeTop1ArgsE,#alloc,#execinstr
.Lfunc_end3:
