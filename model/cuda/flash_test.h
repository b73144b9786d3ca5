/* A test-only switch of the fused attention ops (flash.h), not for the backend. */
#ifndef DT_CUDA_FLASH_TEST_H
#define DT_CUDA_FLASH_TEST_H

#ifdef __cplusplus
extern "C" {
#endif

/* on != 0: the ops run their kernels on the fp32 inputs themselves, rounding each tile to bf16
 * as it is staged (synchronous loads; the kernels' only path before the bf16 copies), instead of
 * on the bf16 copies of their workspace; 0 (the default): the copies. The two must give the
 * same bits (test_cuda_flash). Not thread safe; set it between ops. */
void cuda_flash_test_f32_staging(int on);

#ifdef __cplusplus
}
#endif

#endif
