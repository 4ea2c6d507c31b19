/*
 * Runs every request of a length-prefixed file (see convert.py) through libmodsecurity3 with the
 * rules of a main configuration file, single threaded, and reports per class how many requests
 * ModSecurity intervened on (CRS in blocking mode: anomaly score >= threshold -> deny), plus the
 * time spent in the transactions (reading the input is not timed).
 *
 *   driver <rules.conf> <requests.bin> [passes] [verdicts.tsv]
 *
 * With passes > 1 the whole set is run that many times after one unmeasured warm-up pass; the
 * detection counts come from the first measured pass, the throughput from all measured passes.
 * Output: one JSON object on stdout. Exit status 2 on bad input or configuration.
 */
#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "requests.h"

static void log_cb(void *data, const void *msg) {
    (void)msg;
    ++*(unsigned long *)data; /* rule-match log lines: counted, not printed */
}

/* returns 1 if ModSecurity intervened (disruptive action), 0 otherwise */
static int run_one(ModSecurity *ms, RulesSet *rules, const request_t *r, unsigned long *logs) {
    Transaction *t = msc_new_transaction(ms, rules, logs);
    ModSecurityIntervention it;
    int hit = 0;
    char *ip = cstr(r->ip), *uri = cstr(r->uri), *method = cstr(r->method);

    msc_process_connection(t, ip, 40000, "127.0.0.1", 80);
    msc_process_uri(t, uri, method, "1.1");
    for (uint32_t i = 0; i < r->nheaders; i++)
        msc_add_n_request_header(t, r->names[i].ptr, r->names[i].len, r->values[i].ptr,
                                 r->values[i].len);
    msc_process_request_headers(t);
    memset(&it, 0, sizeof it);
    it.status = 200;
    if (msc_intervention(t, &it) && it.disruptive) hit = 1;
    free(it.url);
    free(it.log);
    if (!hit) {
        if (r->body.len) msc_append_request_body(t, r->body.ptr, r->body.len);
        msc_process_request_body(t);
        memset(&it, 0, sizeof it);
        it.status = 200;
        if (msc_intervention(t, &it) && it.disruptive) hit = 1;
        free(it.url);
        free(it.log);
    }
    msc_process_logging(t);
    msc_transaction_cleanup(t);
    free(ip);
    free(uri);
    free(method);
    return hit;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s rules.conf requests.bin [passes] [verdicts.tsv]\n", argv[0]);
        return 2;
    }
    int passes = argc > 3 ? atoi(argv[3]) : 1;
    if (passes < 1) passes = 1;

    size_t n = 0;
    request_t *reqs = load_requests(argv[2], &n);

    ModSecurity *ms = msc_init();
    msc_set_connector_info(ms, "palisade-bench-driver/1.0");
    unsigned long logs = 0;
    msc_set_log_cb(ms, log_cb);
    RulesSet *rules = msc_create_rules_set();
    const char *err = NULL;
    double t_load = now();
    if (msc_rules_add_file(rules, argv[1], &err) < 0) {
        fprintf(stderr, "rules: %s\n", err ? err : "?");
        return 2;
    }
    t_load = now() - t_load;

    unsigned long atk = 0, atk_hit = 0, ben = 0, ben_hit = 0;
    FILE *verdicts = argc > 4 ? fopen(argv[4], "w") : NULL;

    /* warm-up pass (not measured) when several passes are asked */
    if (passes > 1)
        for (size_t i = 0; i < n; i++) run_one(ms, rules, &reqs[i], &logs);

    double elapsed = 0, cpu = 0;
    size_t bytes = 0;
    for (int p = 0; p < passes; p++) {
        double t0 = now(), c0 = cpu_now();
        for (size_t i = 0; i < n; i++) {
            int hit = run_one(ms, rules, &reqs[i], &logs);
            if (p == 0) {
                int is_attack = reqs[i].cls.len == 6 && !memcmp(reqs[i].cls.ptr, "attack", 6);
                if (is_attack) { atk++; atk_hit += hit; } else { ben++; ben_hit += hit; }
                if (verdicts)
                    fprintf(verdicts, "%.*s\t%d\n", (int)reqs[i].id.len, (const char *)reqs[i].id.ptr, hit);
                bytes += reqs[i].uri.len + reqs[i].body.len;
            }
        }
        elapsed += now() - t0;
        cpu += cpu_now() - c0;
    }
    if (verdicts) fclose(verdicts);

    double total = (double)n * passes;
    printf("{\"requests\":%zu,\"passes\":%d,\"rules_load_s\":%.3f,"
           "\"attacks\":{\"total\":%lu,\"detected\":%lu,\"tpr\":%.6f},"
           "\"benign\":{\"total\":%lu,\"false_positives\":%lu,\"fpr\":%.6f},"
           "\"elapsed_s\":%.6f,\"cpu_s\":%.6f,\"requests_per_s\":%.1f,"
           "\"requests_per_cpu_s\":%.1f,\"bytes_uri_body\":%zu,\"log_lines\":%lu,"
           "\"modsecurity\":\"%s\"}\n",
           n, passes, t_load, atk, atk_hit, atk ? (double)atk_hit / atk : 0.0, ben, ben_hit,
           ben ? (double)ben_hit / ben : 0.0, elapsed, cpu, total / elapsed, total / cpu, bytes, logs,
           MODSECURITY_VERSION);
    msc_rules_cleanup(rules);
    msc_cleanup(ms);
    return 0;
}
