/*
 * Reference harness: runs one operator on one value through the installed libmodsecurity 3.0.9.
 * stdin: one case per line, `OPERATOR<TAB>VALUE` (VALUE may use \xHH escapes). The value is sent
 * as request header X-T and checked by
 *   SecRule REQUEST_HEADERS:X-T "OPERATOR" "id:1,phase:1,pass,log,capture,t:none,msg:'...TX.0..9'"
 * stdout per case: `MATCH <msg>` (the log line's msg: TX.0..TX.2 separated by |) or `NOMATCH`.
 * Build: gcc harness.c -o harness $(pkg-config --cflags --libs modsecurity)
 */
#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char last[65536];
static int hit;

static void log_cb(void *data, const void *msg) {
    (void)data;
    const char *m = msg;
    const char *p = strstr(m, "[msg \"");
    hit = 1;
    if (p) {
        p += 6;
        const char *e = strstr(p, "\"] [");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n >= sizeof last) n = sizeof last - 1;
        memcpy(last, p, n);
        last[n] = 0;
    } else {
        snprintf(last, sizeof last, "%s", m);
    }
}

static size_t unescape(const char *in, unsigned char *out) {
    size_t n = 0;
    for (size_t i = 0; in[i];) {
        if (in[i] == '\\' && in[i + 1] == 'x' && in[i + 2] && in[i + 3]) {
            char h[3] = {in[i + 2], in[i + 3], 0};
            out[n++] = (unsigned char)strtol(h, NULL, 16);
            i += 4;
        } else {
            out[n++] = (unsigned char)in[i++];
        }
    }
    return n;
}

int main(void) {
    static char line[1 << 20];
    static unsigned char val[1 << 20];
    static char rule[1 << 21];
    ModSecurity *ms = msc_init();
    msc_set_log_cb(ms, log_cb);
    while (fgets(line, sizeof line, stdin)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        size_t vlen = unescape(tab + 1, val);
        snprintf(rule, sizeof rule,
                 "SecRuleEngine DetectionOnly\n%s\n"
                 "SecRule REQUEST_HEADERS:X-T \"%s\" \"id:1,phase:1,pass,log,capture,t:none,"
                 "msg:'%%{TX.0}|%%{TX.1}|%%{TX.2}'\"\n",
                 getenv("HARNESS_PREFIX") ? getenv("HARNESS_PREFIX") : "", line);
        RulesSet *rules = msc_create_rules_set();
        const char *err = NULL;
        if (msc_rules_add(rules, rule, &err) < 0) {
            printf("ERROR %s\n", err ? err : "?");
            msc_rules_cleanup(rules);
            fflush(stdout);
            continue;
        }
        Transaction *t = msc_new_transaction(ms, rules, NULL);
        hit = 0;
        last[0] = 0;
        msc_process_connection(t, "127.0.0.1", 40000, "127.0.0.1", 80);
        msc_process_uri(t, "/", "GET", "1.1");
        msc_add_n_request_header(t, (const unsigned char *)"X-T", 3, val, vlen);
        msc_process_request_headers(t);
        if (hit) printf("MATCH %s\n", last); else printf("NOMATCH\n");
        fflush(stdout);
        msc_process_logging(t);
        msc_transaction_cleanup(t);
        msc_rules_cleanup(rules);
    }
    return 0;
}
