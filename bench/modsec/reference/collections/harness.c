/*
 * Reference harness: prints the variables libmodsecurity 3.0.9 resolves for one request.
 *   harness <vars> [extra-rules-file] < request
 * request: "METHOD\tURI\tVERSION\n", then "Name\tvalue\n" header lines, an empty line, then the body.
 * Each match of `SecRule <vars> @unconditionalMatch` (phase 2) is printed as NAME=VALUE, with
 * bytes outside 0x21..0x7e except space shown as \xHH (msg macro expansion is raw).
 */
#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void log_cb(void *data, const void *msg) {
    (void)data;
    const char *m = (const char *)msg;
    const char *s = strstr(m, "[msg \"");
    if (!s) { printf("LOG %s\n", m); return; }
    s += 6;
    const char *e = strstr(s, "\"] [data");
    if (!e) e = strstr(s, "\"] [");
    if (!e) e = s + strlen(s);
    printf("  ");
    for (const char *p = s; p < e; p++) {
        unsigned char c = *p;
        if (c == '@' && p[1] == '@' && p[2] == '|') { printf("\n  "); p += 2; } else if (c < 0x20 || c > 0x7e) printf("\\x%02x", c); else putchar(c);
    }
    putchar('\n');
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    char *p = buf, *nl = strchr(p, '\n');
    if (!nl) return 2;
    *nl = 0;
    char *method = p, *uri = strchr(p, '\t');
    if (!uri) return 2;
    *uri++ = 0;
    char *ver = strchr(uri, '\t');
    if (!ver) return 2;
    *ver++ = 0;
    p = nl + 1;
    ModSecurity *ms = msc_init();
    msc_set_log_cb(ms, log_cb);
    RulesSet *rules = msc_create_rules_set();
    const char *err = NULL;
    char rule[4096];
    snprintf(rule, sizeof rule,
             "SecRuleEngine DetectionOnly\nSecRequestBodyAccess On\n"
             "SecAction \"id:3,phase:1,nolog,pass,setvar:tx.out=S\"\n"
             "SecRule %s \"@unconditionalMatch\" \"id:1,phase:2,nolog,pass,"
             "setvar:'tx.out=%%{tx.out}@@|%%{MATCHED_VAR_NAME}~>%%{MATCHED_VAR}'\"\n"
             "SecAction \"id:2,phase:2,log,pass,msg:'%%{tx.out}'\"\n",
             argv[1]);
    if (argc > 2 && msc_rules_add_file(rules, argv[2], &err) < 0) {
        fprintf(stderr, "rules: %s\n", err);
        return 2;
    }
    if (msc_rules_add(rules, rule, &err) < 0) { fprintf(stderr, "rules: %s\n", err); return 2; }
    Transaction *t = msc_new_transaction(ms, rules, NULL);
    msc_process_connection(t, "10.0.0.1", 40000, "127.0.0.1", 80);
    msc_process_uri(t, uri, method, ver);
    while ((nl = strchr(p, '\n')) && nl != p) {
        *nl = 0;
        char *v = strchr(p, '\t');
        if (v) {
            *v++ = 0;
            msc_add_n_request_header(t, (unsigned char *)p, strlen(p), (unsigned char *)v, strlen(v));
        }
        p = nl + 1;
    }
    if (nl) p = nl + 1;
    msc_process_request_headers(t);
    size_t blen = n - (size_t)(p - buf);
    if (blen) msc_append_request_body(t, (unsigned char *)p, blen);
    msc_process_request_body(t);
    msc_process_logging(t);
    msc_transaction_cleanup(t);
    msc_rules_cleanup(rules);
    msc_cleanup(ms);
    return 0;
}
