/* Reference harness through the ModSecurity operator path: every record of an input file
 * (4-byte LE length + bytes) is sent as the value of request header "x" in its own
 * transaction, against
 *   SecRule REQUEST_HEADERS:x "@detectSQLi" "id:1,phase:1,t:none,log,pass,capture,msg:'%{TX.0}'"
 *   SecRule REQUEST_HEADERS:x "@detectXSS"  "id:2,phase:1,t:none,log,pass,msg:'xss'"
 * and one line is printed per record: "<sqli 0|1> <TX.0 fingerprint or -> <xss 0|1>",
 * the same format as harness.c so the outputs can be compared byte for byte.
 * Build: gcc -O2 ref/modsec_rule.c -o ref/modsec_rule $(pkg-config --cflags --libs modsecurity) */
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int sqli, xss; char fp[64]; } result_t;

static void log_cb(void *data, const void *msg) {
    result_t *r = data;
    const char *m = msg;
    if (strstr(m, "[id \"1\"]")) {
        r->sqli = 1;
        const char *p = strstr(m, "[msg \"");
        if (p) {
            p += 6;
            size_t i = 0;
            while (p[i] && p[i] != '"' && i < sizeof r->fp - 1) { r->fp[i] = p[i]; i++; }
            r->fp[i] = 0;
        }
    }
    if (strstr(m, "[id \"2\"]")) r->xss = 1;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: modsec_rule FILE\n"); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("open"); return 2; }
    ModSecurity *ms = msc_init();
    msc_set_log_cb(ms, log_cb);
    RulesSet *rules = msc_create_rules_set();
    const char *err = NULL;
    const char *conf =
        "SecRuleEngine DetectionOnly\n"
        "SecRule REQUEST_HEADERS:x \"@detectSQLi\" "
        "\"id:1,phase:1,t:none,log,pass,capture,msg:'%{TX.0}'\"\n"
        "SecRule REQUEST_HEADERS:x \"@detectXSS\" \"id:2,phase:1,t:none,log,pass,msg:'xss'\"\n";
    if (msc_rules_add(rules, conf, &err) < 0) { fprintf(stderr, "rules: %s\n", err); return 2; }
    uint32_t len;
    while (fread(&len, 4, 1, f) == 1) {
        unsigned char *buf = malloc(len + 1);
        if (len && fread(buf, 1, len, f) != len) { fprintf(stderr, "short read\n"); return 2; }
        result_t r;
        memset(&r, 0, sizeof r);
        Transaction *t = msc_new_transaction(ms, rules, &r);
        msc_process_connection(t, "127.0.0.1", 40000, "127.0.0.1", 80);
        msc_process_uri(t, "/", "GET", "1.1");
        msc_add_n_request_header(t, (const unsigned char *)"x", 1, buf, len);
        msc_process_request_headers(t);
        msc_process_logging(t);
        msc_transaction_cleanup(t);
        printf("%d %s %d\n", r.sqli, r.sqli ? r.fp : "-", r.xss);
        free(buf);
    }
    return 0;
}
