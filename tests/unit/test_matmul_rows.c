/* matmul_rows, the kernel of batch-invariant decoding: a row's results are
 * the same bits whatever other rows share the call (every row count 1..64,
 * and k with and without a remainder of 8), and equal the exact dot products
 * to fp32 accuracy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "backend.h"
#include "rng.h"

int main(void)
{
    int N = 203, M = 64;                 /* N: full 8- and 4-column blocks and a ragged end */
    struct rng r;
    rng_seed(&r, 5);
    for (int k = 61; k <= 64; k += 3) {
        float *a = malloc((size_t)M * k * 4), *w = malloc((size_t)N * k * 4);
        float *c = malloc((size_t)M * N * 4), *c1 = malloc((size_t)M * N * 4);
        for (int i = 0; i < M * k; i++) a[i] = rng_normal(&r);
        for (int i = 0; i < N * k; i++) w[i] = rng_normal(&r);
        backend_cpu.matmul_rows(c, a, w, M, N, k);
        int differ = 0;
        for (int m = 1; m <= M; m++) {
            int first = M - m;         /* the last m rows, alone in the call */
            backend_cpu.matmul_rows(c1, a + (size_t)first * k, w, m, N, k);
            differ += memcmp(c1, c + (size_t)first * N, (size_t)m * N * 4) != 0;
        }
        double worst = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0, mag = 0;
                for (int t = 0; t < k; t++) {
                    s += (double)a[i * k + t] * w[j * k + t];
                    mag += fabs((double)a[i * k + t] * w[j * k + t]);
                }
                worst = harness_max(worst, fabs(s - c[(size_t)i * N + j]) / mag);
            }
        char name[128];
        snprintf(name, sizeof name, "k=%d: every row count 1..64 gives the same bits for a row", k);
        CHECKF(name, differ == 0, "%d row counts differ", differ);
        snprintf(name, sizeof name, "k=%d: results equal the exact dot products (relative to sum |a*b|)", k);
        CHECKF(name, worst < 1e-6, "worst %.3g", worst);
        free(a); free(w); free(c); free(c1);
    }
    return harness_exit();
}
