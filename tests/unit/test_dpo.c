/* DPO-family losses against torch autograd (tests/ref/dpo_loss_ref.py, golden
 * in tests/data/golden/dpo_losses.json), and the data rules. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "../harness.h"
#include "dpo.h"

static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static void test_losses(void)
{
    const char *root = getenv("RL_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/golden/dpo_losses.json", root ? root : ".");
    json_error_t e;
    json_t *cases = json_load_file(path, 0, &e);
    if (!cases) {
        harness_report(0, "dpo golden cases load", "%s: %s", path, e.text);
        return;
    }
    size_t i, bad = 0;
    json_t *c;
    double worst = 0;
    json_array_foreach(cases, i, c) {
        struct dpo_params p = {.beta = num(c, "beta"), .label_smoothing = num(c, "label_smoothing"),
                               .nll_coef = num(c, "nll_coef")};
        dpo_loss_parse(json_string_value(json_object_get(c, "loss")), &p.loss);
        struct dpo_terms t;
        dpo_pair_loss(&p, num(c, "pc"), num(c, "pr"), num(c, "rc"), num(c, "rr"),
                      (int)num(c, "len_c"), (int)num(c, "len_r"), &t);
        double errs[3] = {fabs(t.loss - num(c, "L")) / fmax(1, fabs(num(c, "L"))),
                          fabs(t.dpc - num(c, "dpc")) / fmax(1, fabs(num(c, "dpc"))),
                          fabs(t.dpr - num(c, "dpr")) / fmax(1, fabs(num(c, "dpr")))};
        for (int k = 0; k < 3; k++) {
            if (errs[k] > worst) worst = errs[k];
            if (!(errs[k] < 1e-12)) bad++;
        }
    }
    CHECKF("sigmoid, label-smoothed, hinge, IPO and RPO losses and gradients equal torch autograd (1e-12)",
           bad == 0 && json_array_size(cases) >= 30, "%zu values differ; worst relative error %g", bad, worst);
    json_decref(cases);
}

static void test_truncation(void)
{
    struct dpo_data d = {0};
    int32_t prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, c[6] = {11, 12, 13, 14, 15, 16}, r[2] = {21, 22};
    dpo_data_add(&d, prompt, 10, c, 6, r, 2, -1, -2, 12, 4);
    const struct dpo_pair *p = &d.pair[0];
    CHECK("the prompt keeps its end", p->plen == 4 && d.ids[p->prompt] == 7 && d.ids[p->prompt + 3] == 10);
    CHECK("responses keep their start within max_length", p->clen == 6 && p->rlen == 2);
    dpo_data_add(&d, prompt, 3, c, 6, r, 2, -1, -2, 5, 2);
    p = &d.pair[1];
    CHECK("a response longer than the room left is cut", p->plen == 2 && p->clen == 3 && d.ids[p->chosen + 2] == 13);
    CHECK("truncations counted", d.truncated == 2);
    dpo_data_add(&d, prompt, 3, c, 2, r, 2, -1, -2, 100, 50);
    CHECK("short pairs untouched", d.pair[2].plen == 3 && d.truncated == 2);
    uint64_t h = dpo_data_hash(&d);
    d.pair[2].ref_chosen = -1.5;
    CHECK("the data hash covers the reference log-probs", dpo_data_hash(&d) != h);
    dpo_data_free(&d);
}

int main(void)
{
    test_losses();
    test_truncation();
    return harness_exit();
}
