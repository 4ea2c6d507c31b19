/*
 * Reference side of the CRS differential test: runs every request of a length-prefixed file (see
 * convert.py, same record layout as driver.c) through libmodsecurity3 with the OWASP CRS in
 * DetectionOnly mode and prints, per request, the CRS rule ids that logged and the inbound anomaly
 * score at the end of phase 2.
 *
 *   crs_driver [-p PL] [-t THRESHOLD] [-c CRS_RULES_DIR] [-s SETUP_CONF] [-5] requests.bin
 *       > verdicts.jsonl
 *
 * Defaults: -p 1, -t 5, -c /usr/share/modsecurity-crs/rules, -s /etc/modsecurity/crs/crs-setup.conf.
 * -5 also records rules that log in phase 5 (logging phase, e.g. 980130); by default only phases
 * 1-2 (everything logged before the score marker rule) count.
 *
 * Output, one JSON line per request:
 *   {"id": "...", "rules": [942100, 949110], "score": 10, "messages": 3}
 * rules: sorted unique ids from the `[id "NNN"]` field of the log callback text, without the
 * driver's own rules (200000-200099); score: inbound anomaly score logged by marker rule 200003
 * (-1 if the marker did not log); messages: number of CRS log lines (with repeats).
 * Timing goes to stderr. Exit status 2 on bad input or configuration.
 *
 * How the paranoia level and the score are set per CRS version (the driver looks for
 * "blocking_paranoia_level" in <rules>/REQUEST-901-INITIALIZATION.conf to tell them apart):
 *  - CRS 3.x: 901120 defaults tx.paranoia_level to 1 only when unset, and 901125 sets
 *    tx.executing_paranoia_level = tx.paranoia_level. Each rule adds to tx.anomaly_score_plN;
 *    949060-949063 (phase 2) add the pl1..plPL counters to tx.anomaly_score, which 949110 compares
 *    with the threshold. tx.inbound_anomaly_score is only copied from tx.anomaly_score when 949110
 *    matches (stays 0 below the threshold), so the marker logs tx.anomaly_score.
 *  - CRS 4.x: tx.blocking_paranoia_level (default 1) and tx.detection_paranoia_level (defaults to the
 *    blocking level); rules add to tx.inbound_anomaly_score_plN and 949060-949063 sum them into
 *    tx.blocking_inbound_anomaly_score, which 949110 compares; the marker logs that variable.
 * Debian's crs-setup.conf has id 900000 commented out, so the driver's SecAction 200002 (phase 1,
 * placed after the setup file and before the rules) is what sets the level.
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
#include <unistd.h>

#include "requests.h"

#define OWN_ID_MIN 200000L
#define OWN_ID_MAX 200099L
#define MARKER "palisade-score "

/* what the log callback collects for one transaction */
typedef struct {
    long *ids;
    size_t n, cap;
    long score;      /* -1 until the marker logged */
    int marker_seen; /* lines after the marker come from phase 5 */
    int with_phase5;
    unsigned long messages;
} verdict_t;

static void log_cb(void *data, const void *msg) {
    verdict_t *v = data;
    const char *m = msg;
    const char *p = strstr(m, "[id \"");
    long id = p ? strtol(p + 5, NULL, 10) : -1;
    if (id >= OWN_ID_MIN && id <= OWN_ID_MAX) {
        const char *s = strstr(m, MARKER);
        if (s && !v->marker_seen) {
            char *end;
            long score = strtol(s + strlen(MARKER), &end, 10);
            v->score = end == s + strlen(MARKER) ? 0 : score; /* empty expansion: unset = 0 */
            v->marker_seen = 1;
        }
        return;
    }
    if (v->marker_seen && !v->with_phase5) return;
    v->messages++;
    if (id < 0) return;
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 32;
        v->ids = realloc(v->ids, v->cap * sizeof *v->ids);
        if (!v->ids) { perror("realloc"); exit(2); }
    }
    v->ids[v->n++] = id;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static void run_one(ModSecurity *ms, RulesSet *rules, const request_t *r, verdict_t *v) {
    Transaction *t = msc_new_transaction(ms, rules, v);
    ModSecurityIntervention it;
    char *ip = cstr(r->ip), *uri = cstr(r->uri), *method = cstr(r->method);

    msc_process_connection(t, ip, 40000, "127.0.0.1", 80);
    msc_process_uri(t, uri, method, "1.1");
    for (uint32_t i = 0; i < r->nheaders; i++)
        msc_add_n_request_header(t, r->names[i].ptr, r->names[i].len, r->values[i].ptr,
                                 r->values[i].len);
    msc_process_request_headers(t);
    if (r->body.len) msc_append_request_body(t, r->body.ptr, r->body.len);
    msc_process_request_body(t);
    /* DetectionOnly: never disruptive, but drain the intervention like a connector would */
    memset(&it, 0, sizeof it);
    it.status = 200;
    msc_intervention(t, &it);
    free(it.url);
    free(it.log);
    msc_process_logging(t);
    msc_transaction_cleanup(t);
    free(ip);
    free(uri);
    free(method);
}

static void print_json_string(const unsigned char *s, size_t len) {
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c); /* ids are ASCII; keep it valid */
        else putchar(c);
    }
    putchar('"');
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [-p PL] [-t THRESHOLD] [-c CRS_RULES_DIR] [-s SETUP_CONF] [-5] "
            "requests.bin > verdicts.jsonl\n",
            argv0);
}

int main(int argc, char **argv) {
    int pl = 1, threshold = 5, with_phase5 = 0, opt;
    const char *rules_dir = "/usr/share/modsecurity-crs/rules";
    const char *setup = "/etc/modsecurity/crs/crs-setup.conf";
    while ((opt = getopt(argc, argv, "p:t:c:s:5")) != -1) {
        switch (opt) {
        case 'p': pl = atoi(optarg); break;
        case 't': threshold = atoi(optarg); break;
        case 'c': rules_dir = optarg; break;
        case 's': setup = optarg; break;
        case '5': with_phase5 = 1; break;
        default: usage(argv[0]); return 2;
        }
    }
    if (optind != argc - 1 || pl < 1 || pl > 4 || threshold < 1) {
        usage(argv[0]);
        return 2;
    }
    const char *input = argv[optind];

    size_t n = 0;
    request_t *reqs = load_requests(input, &n);

    /* CRS 4 is recognised by its paranoia variables in the initialization file */
    int crs4 = 0;
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/REQUEST-901-INITIALIZATION.conf", rules_dir);
        FILE *init = fopen(path, "rb");
        if (!init) { perror(path); return 2; }
        char line[8192];
        while (fgets(line, sizeof line, init))
            if (strstr(line, "blocking_paranoia_level")) { crs4 = 1; break; }
        fclose(init);
    }

    char *conf = NULL;
    size_t conf_len = 0;
    FILE *c = open_memstream(&conf, &conf_len);
    fprintf(c,
            "SecRuleEngine DetectionOnly\n"
            "SecRequestBodyAccess On\n"
            "SecRequestBodyLimit 13107200\n"
            "SecRequestBodyNoFilesLimit 131072\n"
            "SecRequestBodyLimitAction Reject\n"
            "SecRule REQUEST_HEADERS:Content-Type \"^(?:application(?:/soap\\+|/)|text/)xml\" "
            "\"id:'200000',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML\"\n"
            "SecRule REQUEST_HEADERS:Content-Type \"^application/json\" "
            "\"id:'200001',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON\"\n"
            "SecPcreMatchLimit 1000\n"
            "SecPcreMatchLimitRecursion 1000\n"
            "SecResponseBodyAccess Off\n"
            "SecAuditEngine Off\n"
            "SecDebugLogLevel 0\n"
            "SecArgumentSeparator &\n"
            "SecCookieFormat 0\n"
            "SecStatusEngine Off\n"
            "Include %s\n",
            setup);
    if (crs4)
        fprintf(c,
                "SecAction \"id:200002,phase:1,pass,nolog,t:none,"
                "setvar:tx.blocking_paranoia_level=%d,setvar:tx.detection_paranoia_level=%d,"
                "setvar:tx.inbound_anomaly_score_threshold=%d\"\n",
                pl, pl, threshold);
    else
        fprintf(c,
                "SecAction \"id:200002,phase:1,pass,nolog,t:none,"
                "setvar:tx.paranoia_level=%d,setvar:tx.inbound_anomaly_score_threshold=%d\"\n",
                pl, threshold);
    fprintf(c,
            "Include %s/*.conf\n"
            "SecAction \"id:200003,phase:2,pass,log,t:none,msg:'" MARKER "%%{tx.%s}'\"\n",
            rules_dir, crs4 ? "blocking_inbound_anomaly_score" : "anomaly_score");
    fclose(c);

    ModSecurity *ms = msc_init();
    msc_set_connector_info(ms, "palisade-crs-driver/1.0");
    msc_set_log_cb(ms, log_cb);
    RulesSet *rules = msc_create_rules_set();
    const char *err = NULL;
    double t_load = now();
    if (msc_rules_add(rules, conf, &err) < 0) {
        fprintf(stderr, "rules: %s\n", err ? err : "?");
        return 2;
    }
    t_load = now() - t_load;
    free(conf);

    double t0 = now(), c0 = cpu_now();
    verdict_t v = {0};
    unsigned long matched = 0, missing_marker = 0;
    for (size_t i = 0; i < n; i++) {
        v.n = 0;
        v.score = -1;
        v.marker_seen = 0;
        v.with_phase5 = with_phase5;
        v.messages = 0;
        run_one(ms, rules, &reqs[i], &v);
        qsort(v.ids, v.n, sizeof *v.ids, cmp_long);
        if (v.n) matched++;
        if (!v.marker_seen) missing_marker++;
        fputs("{\"id\": ", stdout);
        print_json_string(reqs[i].id.ptr, reqs[i].id.len);
        fputs(", \"rules\": [", stdout);
        for (size_t k = 0, out = 0; k < v.n; k++) {
            if (k && v.ids[k] == v.ids[k - 1]) continue;
            printf(out++ ? ", %ld" : "%ld", v.ids[k]);
        }
        printf("], \"score\": %ld, \"messages\": %lu}\n", v.score, v.messages);
    }
    double elapsed = now() - t0, cpu = cpu_now() - c0;
    fprintf(stderr,
            "{\"requests\":%zu,\"matched\":%lu,\"missing_marker\":%lu,\"crs\":%d,\"pl\":%d,"
            "\"threshold\":%d,\"rules_load_s\":%.3f,\"elapsed_s\":%.3f,\"cpu_s\":%.3f,"
            "\"requests_per_cpu_s\":%.1f,\"modsecurity\":\"%s\"}\n",
            n, matched, missing_marker, crs4 ? 4 : 3, pl, threshold, t_load, elapsed, cpu,
            cpu > 0 ? n / cpu : 0.0, MODSECURITY_VERSION);
    free(v.ids);
    msc_rules_cleanup(rules);
    msc_cleanup(ms);
    return 0;
}
