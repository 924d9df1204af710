/*
 * bench_acl — policy decisions per second on one core with 10, 1,000 and
 * 10,000 rules, worst cases: the matching rule is the last one (per-account
 * rules, what the account index is for), and no rule matches (default deny);
 * plus 10,000 rules that all name any account (`*`, one CIDR each), where
 * the index cannot help and every rule is checked.
 */
#include "access_ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sr_acl_policy_t *make_policy(int n, int wildcard)
{
    size_t cap = (size_t)n * 80 + 64;
    char *text = malloc(cap);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, wildcard ? "allow * * 10.%d.%d.0/24 pg\n"
                                                                : "allow * user%d 10.%d.%d.0/24 pg\n",
                                wildcard ? i / 256 : i, wildcard ? i % 256 : i / 256, i % 256);
    sr_acl_policy_t *p = NULL;
    if (sr_acl_compile_text("bench.conf", text, &p) != SR_OK) {
        fprintf(stderr, "%s\n", sr_err_detail());
        exit(1);
    }
    free(text);
    return p;
}

static double rate(const sr_acl_policy_t *p, const sr_acl_request_t *r, int expect_allow, double seconds)
{
    uint64_t t0 = sr_time_mono_ns(), n = 0;
    sr_acl_decision_t d;
    while (sr_time_mono_ns() - t0 < (uint64_t)(seconds * 1e9)) {
        for (int i = 0; i < 1000; i++) sr_acl_decide(p, r, &d);
        if (d.allow != expect_allow) {
            fprintf(stderr, "unexpected decision: %s\n", d.why);
            exit(1);
        }
        n += 1000;
    }
    return (double)n / ((double)(sr_time_mono_ns() - t0) / 1e9);
}

int main(void)
{
    double seconds = getenv("SR_BENCH_QUICK") ? 0.2 : 1.0;
    static const int sizes[] = {10, 1000, 10000};
    printf("Access policy decisions per second, one thread (sr_acl_decide)\n\n"
           "| rules | match is the last rule | no rule matches | all rules for any account, last matches |\n"
           "|---:|---:|---:|---:|\n");
    for (int k = 0; k < 3; k++) {
        int n = sizes[k];
        char user[32], addr[32], waddr[32];
        snprintf(user, sizeof user, "user%d", n - 1);
        snprintf(addr, sizeof addr, "10.%d.%d.7", (n - 1) / 256, (n - 1) % 256);
        snprintf(waddr, sizeof waddr, "10.%d.%d.7", (n - 1) / 256, (n - 1) % 256);
        sr_acl_policy_t *p = make_policy(n, 0), *w = make_policy(n, 1);
        sr_acl_request_t last = {.server = "db1", .account = user, .source = addr, .service = "pg"};
        sr_acl_request_t none = {.server = "db1", .account = "nobody", .source = addr, .service = "pg"};
        sr_acl_request_t wild = {.server = "db1", .account = "anyone", .source = waddr, .service = "pg"};
        printf("| %d | %.0f | %.0f | %.0f |\n", n, rate(p, &last, 1, seconds), rate(p, &none, 0, seconds),
               rate(w, &wild, 1, seconds));
        sr_acl_policy_free(p), sr_acl_policy_free(w);
    }
    printf("\nTarget: >= 1,000,000 decisions/s at 10,000 rules.\n");
    return 0;
}
