/* plan_compute and plan_parse_bytes (model/plan.h) against independent references:
 *  - parameter counts against closed forms written here from DESIGN's tensor table, for every
 *    architecture, GQA, subln on/off, tied and untied embeddings;
 *  - the largest tensor-parallel rank's count against a closed form of the split (head and FFN
 *    shares divide exactly, replicated tensors stay whole, the vocab slice is ceil(V / tp));
 *  - ZeRO shards against the dealt-out partition (element k to part k % dp), the memory
 *    categories against the formulas of plan.h's header;
 *  - activations and the local layout against a real model_init on the CPU backend;
 *  - FLOPs/token against 6 x (matmul parameters) + the attention products in closed form;
 *  - the paper's sizes (SPEC section 6);
 *  - the refusals (tp, world and batch that do not divide) and the size parser.
 * All counts are integers: they must match exactly unless a tolerance is stated. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "launch/config.h"
#include "model/backend.h"
#include "model/model.h"
#include "model/plan.h"

/* A small config: vocab 101 (odd: the vocab slices differ by a row at tp 2 and 4), D 64,
 * 3 layers, 4 heads (diff head dim 8, transformer head dim 16), ffn 96, seq 32. */
static void small_config(dt_config *c, dt_arch arch, int kv_heads, int tie, int subln) {
    config_defaults(c);
    c->model.arch = arch;
    c->model.vocab_size = 101;
    c->model.d_model = 64;
    c->model.n_layers = 3;
    c->model.n_heads = 4;
    c->model.n_kv_heads = kv_heads;
    c->model.ffn_dim = 96;
    c->model.max_seq_len = 64;
    c->model.tie_embeddings = tie;
    c->model.subln = subln;
    c->train.seq_len = 32;
    c->train.micro_batch = 2;
    c->train.global_batch = 24;
    c->parallel.tp = 1;
    c->parallel.dp = 1;
    c->parallel.zero = 0;
}

/* Closed forms from DESIGN's tensor table. */
typedef struct counts {
    uint64_t total, embedding;
    uint64_t split_per_layer; /* per layer, split over tp (heads, FFN) */
    uint64_t replicated;      /* whole model, replicated over tp (norms, lambdas, subln) */
    uint64_t matmul;          /* parameters used in a matrix product (LM head included) */
} counts;

static counts closed_form(const dt_model_config *m) {
    uint64_t D = m->d_model, F = m->ffn_dim, V = m->vocab_size, L = m->n_layers;
    uint64_t H = m->n_heads, Hkv = m->n_kv_heads;
    uint64_t attn = 0, small = 2 * D; /* attention_norm + ffn_norm */
    if (m->arch == DT_ARCH_DIFF) {
        uint64_t d = D / (2 * H);
        attn = 2 * H * d * D + 2 * Hkv * d * D + 2 * Hkv * d * D + D * 2 * H * d;
        small += 4 * d + (m->subln ? 2 * d : 0);
    } else if (m->arch == DT_ARCH_DIFF_V2) {
        uint64_t d = D / (2 * H);
        attn = 2 * H * d * D + Hkv * d * D + Hkv * d * D + D * H * d + H * D; /* + lambda_proj */
    } else {
        uint64_t d = D / H;
        attn = H * d * D + Hkv * d * D + Hkv * d * D + D * H * d;
    }
    counts c;
    c.split_per_layer = attn + 3 * D * F;
    c.replicated = L * small + D; /* + the final norm */
    c.embedding = V * D * (m->tie_embeddings ? 1 : 2);
    c.total = L * (c.split_per_layer + small) + D + c.embedding;
    c.matmul = L * c.split_per_layer + V * D; /* the LM head; the input lookup is free */
    return c;
}

typedef struct arch_case {
    const char *label;
    dt_arch arch;
    int kv_heads, subln;
} arch_case;

static const arch_case arch_cases[] = {
    {"diff", DT_ARCH_DIFF, 4, 1},
    {"diff no subln", DT_ARCH_DIFF, 4, 0},
    {"diff gqa", DT_ARCH_DIFF, 2, 1},
    {"diff_v2", DT_ARCH_DIFF_V2, 4, 1},
    {"diff_v2 gqa", DT_ARCH_DIFF_V2, 2, 1},
    {"transformer", DT_ARCH_TRANSFORMER, 4, 1},
    {"transformer gqa", DT_ARCH_TRANSFORMER, 2, 1},
};
#define N_ARCH_CASES ((int)(sizeof arch_cases / sizeof arch_cases[0]))

static void test_params_closed_form(void **state) {
    (void)state;
    for (int i = 0; i < N_ARCH_CASES; i++) {
        for (int tie = 0; tie <= 1; tie++) {
            dt_config c;
            small_config(&c, arch_cases[i].arch, arch_cases[i].kv_heads, tie,
                         arch_cases[i].subln);
            dt_plan p;
            assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
            counts ref = closed_form(&c.model);
            print_message("%s tied=%d: %llu parameters\n", arch_cases[i].label, tie,
                          (unsigned long long)p.params_total);
            assert_int_equal(p.params_total, ref.total);
            assert_int_equal(p.params_embedding, ref.embedding);
            assert_int_equal(p.params_non_embedding, ref.total - ref.embedding);
            assert_int_equal(p.params_per_rank, ref.total); /* tp 1 */
            assert_int_equal(p.mem.weights, 4 * ref.total);
        }
    }
}

static void test_per_rank_split(void **state) {
    (void)state;
    static const int tps[] = {1, 2, 4};
    for (int i = 0; i < N_ARCH_CASES; i++) {
        for (int tie = 0; tie <= 1; tie++) {
            for (size_t k = 0; k < sizeof tps / sizeof tps[0]; k++) {
                int tp = tps[k];
                dt_config c;
                /* kv heads must split over tp: GQA cases use 4 kv heads at tp 4 */
                small_config(&c, arch_cases[i].arch, tp == 4 ? 4 : arch_cases[i].kv_heads, tie,
                             arch_cases[i].subln);
                c.parallel.tp = tp;
                dt_plan p;
                assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
                counts ref = closed_form(&c.model);
                uint64_t V = c.model.vocab_size, D = c.model.d_model, L = c.model.n_layers;
                uint64_t vocab_rows = (V + tp - 1) / tp; /* the largest slice */
                uint64_t want = L * ref.split_per_layer / tp + ref.replicated +
                                vocab_rows * D * (tie ? 1 : 2);
                assert_int_equal(p.params_per_rank, want);
                assert_int_equal(p.mem.weights, 4 * want);
                /* weights x tp = the whole model + the replicated copies + vocab rounding */
                uint64_t slack = 4 * ((uint64_t)(tp - 1) * ref.replicated +
                                      (vocab_rows * tp - V) * D * (tie ? 1 : 2));
                assert_true(p.mem.weights * tp >= 4 * ref.total);
                assert_true(p.mem.weights * tp - 4 * ref.total <= slack);
            }
        }
    }
}

/* The largest part when P elements are dealt out one by one to dp parts. */
static uint64_t dealt_largest(uint64_t P, int dp) {
    uint64_t first = 0;
    for (uint64_t k = 0; k < P; k++) first += (k % (uint64_t)dp) == 0;
    return first;
}

static void test_zero_memory(void **state) {
    (void)state;
    static const int dps[] = {1, 2, 3, 7};
    for (size_t k = 0; k < sizeof dps / sizeof dps[0]; k++) {
        int dp = dps[k];
        dt_plan z[3], zb[3];
        for (int stage = 0; stage <= 2; stage++) {
            dt_config c;
            small_config(&c, DT_ARCH_DIFF, 4, 0, 1);
            c.parallel.dp = dp;
            c.parallel.zero = stage;
            c.train.global_batch = c.train.micro_batch * dp * 3;
            assert_int_equal(plan_compute(&z[stage], &c, 0), DT_OK);
            assert_int_equal(z[stage].grad_accum, 3);
            c.train.precision = DT_PRECISION_BF16;
            assert_int_equal(plan_compute(&zb[stage], &c, 0), DT_OK);
        }
        uint64_t P = z[0].params_per_rank, S = dealt_largest(P, dp);
        /* zero 0: everything whole; fp32 4 + 4 + 8 bytes per parameter */
        assert_int_equal(z[0].shard_per_rank, P);
        assert_int_equal(z[0].mem.gradients, 4 * P);
        assert_int_equal(z[0].mem.optimizer, 8 * P);
        for (int stage = 1; stage <= 2; stage++) {
            assert_int_equal(z[stage].shard_per_rank, S);
            assert_int_equal(z[stage].mem.optimizer, 8 * S);
            /* 1/dp of zero 0 within one element (8 bytes) per rank */
            assert_true(z[stage].mem.optimizer * dp >= z[0].mem.optimizer);
            assert_true(z[stage].mem.optimizer * dp - z[0].mem.optimizer <= 8 * (uint64_t)dp);
            assert_int_equal(z[stage].mem.weights, 4 * P); /* ZeRO 1/2 keep whole parameters */
        }
        assert_int_equal(z[1].mem.gradients, 4 * P);
        assert_int_equal(z[2].mem.gradients, 4 * P + 4 * S); /* + the fp32 shard accumulator */
        /* bf16: weights, gradients and optimizer state stay fp32; the weights add the products'
         * bf16 copies of the matrices, the operand activations shrink
         * (test_matches_real_allocation counts them) */
        for (int stage = 0; stage <= 2; stage++) {
            assert_int_equal(zb[stage].mem.weights, z[stage].mem.weights + zb[0].weight_copy_bytes);
            assert_int_equal(zb[stage].mem.gradients, z[stage].mem.gradients);
            assert_int_equal(zb[stage].mem.optimizer, z[stage].mem.optimizer);
            assert_true(zb[stage].mem.activations < z[stage].mem.activations);
            const dt_plan_memory *m = &zb[stage].mem;
            assert_int_equal(m->total, m->weights + m->gradients + m->optimizer + m->activations);
        }
    }
}

/* Elements of the operand activations (model/backend.h: dt_operand) of a whole model without
 * recompute at N rows, counted from the architecture: per layer the attention norm's output (D),
 * q (D), k and v (D Hkv/H each; V2's single-width kv heads: half that), the attention output (D;
 * V2 D/2), V2's 2H heads of width D/2H before the combine (D), a scalar subln's input (D), the
 * FFN norm's output (D), gate, up and the SwiGLU output (F each); then, once for the model, the
 * final norm's output (D), the gradient scratch of gate and up (2F, or q's and k's widths
 * together where wider: the rotated gradients of q and k share it) and of v (as v). */
static uint64_t operand_elements(const dt_model_config *m, uint64_t N) {
    uint64_t D = m->d_model, F = m->ffn_dim, H = m->n_heads, Hkv = m->n_kv_heads;
    int v2 = m->arch == DT_ARCH_DIFF_V2;
    uint64_t kv = (v2 ? D / 2 : D) * Hkv / H;
    uint64_t layer = D + D + 2 * kv + (v2 ? D / 2 + D : D) + D + 3 * F;
    if (m->arch == DT_ARCH_DIFF && m->subln == DT_SUBLN_SCALAR) layer += D;
    /* final_norm, dgate_up | (dq_rot, dk_rot), dv */
    uint64_t once = D + (2 * F > D + kv ? 2 * F : D + kv) + kv;
    return N * (m->n_layers * layer + once);
}

static void test_matches_real_allocation(void **state) {
    (void)state;
    for (int i = 0; i < 2 * N_ARCH_CASES; i++) {
        dt_config c; /* every arch, with untied and with tied embeddings */
        small_config(&c, arch_cases[i / 2].arch, arch_cases[i / 2].kv_heads, i % 2,
                     arch_cases[i / 2].subln);
        dt_plan p;
        assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
        dt_model m;
        assert_int_equal(model_init(&m, &c.model, dt_backend_cpu(), 1, c.train.micro_batch,
                                    c.train.seq_len), DT_OK);
        assert_int_equal(p.params_per_rank, m.layout.total);
        assert_int_equal(p.activation_bytes, m.acts_bytes);
        assert_int_equal(p.mem.activations, m.acts_bytes);
        assert_int_equal(p.recompute, 0);
        /* the matrices the model hands weights_prepare: every 2-D tensor but an untied
         * embedding table (read by row lookups, not products); bf16 plans their copies at 2
         * bytes an element, each rounded up to 256 bytes */
        uint64_t matrices = 0, copies = 0;
        for (int t = 0; t < m.layout.n_tensors; t++) {
            const dt_tensor_spec *ts = &m.layout.tensors[t];
            if (ts->ndim != 2 ||
                (strcmp(ts->name, "tok_embeddings.weight") == 0 && !c.model.tie_embeddings))
                continue;
            uint64_t numel = ts->numel;
            if (strstr(ts->name, "ffn.w_gate.weight")) /* and w_up, next: one (2F, D) matrix */
                numel += m.layout.tensors[++t].numel;
            matrices++, copies += (2 * numel + 255) / 256 * 256;
        }
        assert_int_equal(m.n_product_weights, matrices);
        for (int l = 0; l < c.model.n_layers; l++) { /* each layer's gate and up: one matrix */
            int found = 0;
            for (int k = 0; k < m.n_product_weights; k++)
                found += m.product_w[k] == m.params.layers[l].w_gate &&
                         m.product_n[k] == 2 * (size_t)c.model.ffn_dim * c.model.d_model &&
                         m.params.layers[l].w_up ==
                             m.params.layers[l].w_gate + (size_t)c.model.ffn_dim * c.model.d_model;
            assert_int_equal(found, 1);
        }
        for (int k = 0; k < m.n_product_weights; k++)
            assert_true(m.product_w[k] >= m.params_mem &&
                        m.product_w[k] + m.product_n[k] <= m.params_mem + m.layout.total);
        assert_int_equal(p.weight_copy_bytes, copies);
        assert_int_equal(p.mem.weights, 4 * p.params_per_rank); /* fp32: no copies */
        model_free(&m);
        /* bf16 stores those operands in 2 bytes instead of 4, and adds one: the bf16 copy of
         * the residual stream's gradient (N, D), which fp32 reads as dres itself. Here every
         * buffer is a multiple of 64 bytes either way, so the difference is exact */
        dt_config cb = c;
        cb.train.precision = DT_PRECISION_BF16;
        dt_plan pb;
        assert_int_equal(plan_compute(&pb, &cb, 0), DT_OK);
        uint64_t N = (uint64_t)c.train.micro_batch * c.train.seq_len;
        assert_int_equal(p.mem.activations - pb.mem.activations,
                         2 * operand_elements(&c.model, N) - 2 * N * c.model.d_model);
        assert_int_equal(pb.mem.weights, p.mem.weights + copies);
        assert_int_equal(pb.mem.total,
                         p.mem.total - p.mem.activations + pb.mem.activations + copies);
        /* train.recompute: the plan sizes the allocation model_init_opts makes with it */
        c.train.recompute = 1;
        dt_plan pr;
        assert_int_equal(plan_compute(&pr, &c, 0), DT_OK);
        assert_int_equal(pr.recompute, 1);
        assert_int_equal(model_init_opts(&m, &c.model, dt_backend_cpu(), 1, c.train.micro_batch,
                                         c.train.seq_len, NULL, 1), DT_OK);
        assert_int_equal(pr.activation_bytes, m.acts_bytes);
        assert_int_equal(pr.mem.activations, m.acts_bytes);
        assert_true(pr.activation_bytes < p.activation_bytes);
        assert_int_equal(pr.mem.total, p.mem.total - p.mem.activations + pr.mem.activations);
        model_free(&m);
    }
}

static void test_flops(void **state) {
    (void)state;
    for (int i = 0; i < N_ARCH_CASES; i++) {
        for (int tie = 0; tie <= 1; tie++) {
            dt_config c;
            small_config(&c, arch_cases[i].arch, arch_cases[i].kv_heads, tie,
                         arch_cases[i].subln);
            dt_plan p;
            assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
            counts ref = closed_form(&c.model);
            double D = c.model.d_model, L = c.model.n_layers;
            double T = c.train.seq_len;
            /* per key and layer: scores over all query heads' widths, then the value products;
             * the query width is D for every arch here (2H heads of D/2H, or H of D/H), the
             * values' width per query head is 2d (diff), d (diff_v2) or d (transformer) */
            double values = c.model.arch == DT_ARCH_DIFF ? 2 * D : D;
            double attn = L * 2 * T * (D + values);
            double want = 6.0 * (double)ref.matmul + 3.0 * attn;
            /* exact integers in double well below 2^53: 1e-12 relative is rounding only */
            assert_true(fabs(p.flops_per_token - want) <= 1e-12 * want);
            assert_true(fabs(p.flops_per_step - want * c.train.global_batch * T) <=
                        1e-12 * want * c.train.global_batch * T);
        }
    }
}

/* SPEC section 6: the scaling-study models, FFN = 8/3 D rounded to an integer, vocab 100288,
 * tied embeddings. Stated sizes are given to 4 significant digits: 0.5% is their rounding plus
 * the FFN rounding and the small tensors (norms, lambdas) SPEC's figures leave out. */
static void test_paper_sizes(void **state) {
    (void)state;
    static const struct {
        int d_model, n_layers, n_heads, ffn;
        double stated;
    } sizes[] = {
        {1536, 24, 8, 4096, 0.834e9},  {2048, 24, 8, 5461, 1.413e9},
        {2560, 32, 10, 6827, 2.773e9}, {4096, 32, 16, 10923, 6.853e9},
        {5120, 40, 20, 13653, 13.097e9},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        dt_config c;
        config_defaults(&c);
        c.model.arch = DT_ARCH_DIFF;
        c.model.vocab_size = 100288;
        c.model.d_model = sizes[i].d_model;
        c.model.n_layers = sizes[i].n_layers;
        c.model.n_heads = sizes[i].n_heads;
        c.model.n_kv_heads = sizes[i].n_heads;
        c.model.ffn_dim = sizes[i].ffn;
        c.model.tie_embeddings = 1;
        c.model.max_seq_len = 2048;
        c.train.seq_len = 2048;
        c.train.micro_batch = 1;
        c.train.global_batch = 1;
        dt_plan p;
        assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
        print_message("d_model %d: %.4fB parameters (stated %.3fB)\n", sizes[i].d_model,
                      p.params_total / 1e9, sizes[i].stated / 1e9);
        assert_true(fabs((double)p.params_total - sizes[i].stated) <= 0.005 * sizes[i].stated);
        assert_int_equal(p.params_total, closed_form(&c.model).total);
    }

    /* The main 3B model: SPEC "the stated shape gives ~3.2B without embeddings" (two
     * significant digits: within 0.05B), plus one 100288 x 3072 embedding. */
    dt_config c;
    config_defaults(&c);
    c.model.arch = DT_ARCH_DIFF;
    c.model.vocab_size = 100288;
    c.model.d_model = 3072;
    c.model.n_layers = 28;
    c.model.n_heads = 12;
    c.model.n_kv_heads = 12;
    c.model.ffn_dim = 8192;
    c.model.tie_embeddings = 1;
    c.model.max_seq_len = 4096;
    c.train.seq_len = 4096;
    c.train.micro_batch = 1;
    c.train.global_batch = 8;
    c.parallel.tp = 4;
    c.parallel.dp = 8;
    c.parallel.zero = 1;
    c.train.precision = DT_PRECISION_BF16;
    dt_plan p;
    assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
    print_message("3B: %.4fB non-embedding + %.4fB embedding\n", p.params_non_embedding / 1e9,
                  p.params_embedding / 1e9);
    assert_true(fabs((double)p.params_non_embedding - 3.2e9) <= 0.05e9);
    assert_int_equal(p.params_embedding, 100288ull * 3072);
    assert_int_equal(p.params_total, closed_form(&c.model).total);
    /* 100288 rows split evenly over 4 ranks: every rank holds the same count */
    counts ref = closed_form(&c.model);
    assert_int_equal(p.params_per_rank,
                     28 * ref.split_per_layer / 4 + ref.replicated + 100288 / 4 * 3072);
}

static void test_refusals(void **state) {
    (void)state;
    dt_config c;
    dt_plan p;
    /* tp does not divide the heads */
    small_config(&c, DT_ARCH_DIFF, 4, 0, 1);
    c.parallel.tp = 3;
    assert_int_equal(plan_compute(&p, &c, 0), DT_ERR_INPUT);
    /* dp auto resolved from the world: 4 ranks at tp 1 = dp 4; 24 % (2 x 4) = 0 is fine,
     * 20 % 8 is not */
    small_config(&c, DT_ARCH_DIFF, 4, 0, 1);
    c.parallel.dp = 0;
    assert_int_equal(plan_compute(&p, &c, 4), DT_OK);
    assert_int_equal(p.dp, 4);
    assert_int_equal(p.grad_accum, 3);
    c.train.global_batch = 20;
    assert_int_equal(plan_compute(&p, &c, 4), DT_ERR_INPUT);
    /* without a world size an auto dp is 1 */
    assert_int_equal(plan_compute(&p, &c, 0), DT_OK);
    assert_int_equal(p.dp, 1);
    assert_int_equal(p.grad_accum, 10);
    /* the world does not split into tp x dp */
    small_config(&c, DT_ARCH_DIFF, 4, 0, 1);
    c.parallel.tp = 4;
    c.parallel.dp = 0;
    assert_int_equal(plan_compute(&p, &c, 6), DT_ERR_INPUT);
    c.parallel.dp = 2;
    assert_int_equal(plan_compute(&p, &c, 4), DT_ERR_INPUT);
    assert_int_equal(plan_compute(&p, &c, 8), DT_OK);
    /* an explicit dp that does not divide the batch (config_validate's check) */
    small_config(&c, DT_ARCH_DIFF, 4, 0, 1);
    c.parallel.dp = 5;
    assert_int_equal(plan_compute(&p, &c, 0), DT_ERR_INPUT);
}

static void test_parse_bytes(void **state) {
    (void)state;
    static const struct {
        const char *s;
        uint64_t want;
    } good[] = {
        {"80GiB", 85899345920ull},
        {"80GB", 80000000000ull},
        {"141GiB", 141ull << 30},
        {"24G", 24ull << 30},
        {"24g", 24ull << 30},
        {"80gib", 85899345920ull},
        {"1.5TiB", 1649267441664ull},
        {"2TB", 2000000000000ull},
        {"1KiB", 1024},
        {"1K", 1024},
        {"3KB", 3000},
        {"512MiB", 512ull << 20},
        {"0.5M", 524288},
        {"1024", 1024},
        {"1024B", 1024},
        {"8e10", 80000000000ull},
        {"1.25e3", 1250},
        {"18446744073709551615", UINT64_MAX},
        {"8388608T", 1ull << 63},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t b = 0;
        if (plan_parse_bytes(&b, good[i].s) != DT_OK) fail_msg("'%s' was refused", good[i].s);
        if (b != good[i].want)
            fail_msg("'%s' gave %llu, expected %llu", good[i].s, (unsigned long long)b,
                     (unsigned long long)good[i].want);
    }
    static const char *const bad[] = {
        "",      "GiB",    "-1GiB", "+1G",     " 80GiB", "80 GiB", "80GiB ", "80XB",
        "80GiBx", "80Gi",  "0",     "0GiB",    "1.5",    "0.0001KB", "0x10",   "inf",
        "nan",   "1e",     "1e+",   "1..5G",   ".",      "e5",     "1,5G",   "1e20",
        "18446744073709551616", "16777216T", "1PiB",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t b = 0;
        if (plan_parse_bytes(&b, bad[i]) != DT_ERR_INPUT) fail_msg("'%s' was accepted", bad[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_closed_form),
        cmocka_unit_test(test_per_rank_split),
        cmocka_unit_test(test_zero_memory),
        cmocka_unit_test(test_matches_real_allocation),
        cmocka_unit_test(test_flops),
        cmocka_unit_test(test_paper_sizes),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_parse_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
