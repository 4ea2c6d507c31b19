/*
 * Cross-check of ref/direct.cc through the real rule engine: loads one rule per
 * transformation, `SecRule REQUEST_HEADERS:x "@unconditionalMatch" "...,t:none,t:<name>,
 * t:hexEncode,...,logdata:'%{MATCHED_VAR}'"`, sends each input (hex, one per stdin line) as the
 * raw value of request header `x`, and prints "<rule id> <hex result>" for every match.
 * With UNICODE_MAP=<file> in the environment, `SecUnicodeMapFile <file> 20127` is loaded too.
 * Also reports which spellings of transformation names the rule parser accepts.
 *   gcc ref/rules.c -o target/rules -lmodsecurity && target/rules < inputs.hex
 */
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *names[] = {
    "lowercase", "uppercase", "urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode",
    "cssDecode", "cmdLine", "compressWhitespace", "removeWhitespace", "removeNulls",
    "replaceNulls", "replaceComments", "removeComments", "removeCommentsChar", "normalizePath",
    "normalizePathWin", "base64Decode", "base64DecodeExt", "base64Encode", "hexDecode",
    "hexEncode", "sqlHexDecode", "utf8toUnicode", "length", "trim", "trimLeft", "trimRight",
    "escapeSeqDecode", "parityEven7bit", "parityOdd7bit", "parityZero7bit", "md5", "sha1",
    "urlEncode", NULL};

/* spellings probed for acceptance by the parser */
static const char *spellings[] = {"normalisePath", "normalisePathWin", "URLDECODEUNI",
                                  "UrlDecode", "lowerCase", "LOWERCASE", "utf8ToUnicode",
                                  "cmdline", "none", "urlEncode", "sqlhexdecode", "bogus", NULL};

static void log_cb(void *data, const void *msg) {
    (void)data;
    const char *m = msg, *id = strstr(m, "[id \""), *d = strstr(m, "[data \"");
    if (!id || !d) return;
    printf("%d %.*s\n", atoi(id + 5), (int)strcspn(d + 7, "\""), d + 7);
}

int main(void) {
    ModSecurity *ms = msc_init();
    msc_set_log_cb(ms, log_cb);
    char rule[512];
    const char *err = NULL;
    for (int i = 0; spellings[i]; i++) {
        RulesSet *probe = msc_create_rules_set();
        snprintf(rule, sizeof rule,
                 "SecRule ARGS \"@unconditionalMatch\" \"id:1,phase:2,t:none,t:%s,pass\"",
                 spellings[i]);
        err = NULL;
        int r = msc_rules_add(probe, rule, &err);
        fprintf(stderr, "spelling t:%s -> %s\n", spellings[i], r < 0 ? "rejected" : "accepted");
        msc_rules_cleanup(probe);
    }
    RulesSet *rules = msc_create_rules_set();
    if (msc_rules_add(rules, "SecRuleEngine DetectionOnly", &err) < 0) return 2;
    /* UNICODE_MAP=<file>: also load `SecUnicodeMapFile <file> 20127` (nginx's default conf) */
    if (getenv("UNICODE_MAP")) {
        snprintf(rule, sizeof rule, "SecUnicodeMapFile %s 20127", getenv("UNICODE_MAP"));
        if (msc_rules_add(rules, rule, &err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
    }
    for (int i = 0; names[i]; i++) {
        snprintf(rule, sizeof rule,
                 "SecRule REQUEST_HEADERS:x \"@unconditionalMatch\" \"id:%d,phase:1,t:none,"
                 "t:%s,t:hexEncode,log,pass,logdata:'%%{MATCHED_VAR}'\"",
                 100 + i, names[i]);
        if (msc_rules_add(rules, rule, &err) < 0) {
            fprintf(stderr, "%s: %s\n", names[i], err);
            return 2;
        }
    }
    char line[65536];
    unsigned char val[32768];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = 0;
        for (char *p = line; p[0] && p[1] && p[0] != '\n'; p += 2) {
            unsigned int b;
            sscanf(p, "%2x", &b);
            val[n++] = (unsigned char)b;
        }
        Transaction *t = msc_new_transaction(ms, rules, NULL);
        msc_process_connection(t, "127.0.0.1", 40000, "127.0.0.1", 80);
        msc_process_uri(t, "/", "GET", "1.1");
        msc_add_n_request_header(t, (const unsigned char *)"x", 1, val, n);
        msc_process_request_headers(t);
        msc_process_logging(t);
        msc_transaction_cleanup(t);
        printf("--\n");
    }
    return 0;
}
