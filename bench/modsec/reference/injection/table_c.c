/* Dumps libinjection 3.9.2's SQLi keyword table as libmodsecurity 3.0.9 holds it, through the
 * exported libinjection_sqli_lookup_word(state, LOOKUP_WORD, word, len):
 *  - every fingerprint "0"+FP (FP = 1..5 token-type chars, upper case) whose type is 'F';
 *  - for each word read from stdin (one per line), "word<TAB>type" when the type is non-zero.
 * Build: gcc -O2 ref/table_c.c -o ref/table_c -lmodsecurity */
#include <stdio.h>
#include <string.h>
char libinjection_sqli_lookup_word(void *state, int lookup_type, const char *s, size_t len);
static char dummy[65536];
static const char AL[] = "KUBETFN1VSO&CA(){}.,:;?X\\";
static void rec(char *buf, int n) {
    if (n > 1) {
        char t = libinjection_sqli_lookup_word(dummy, 1, buf, (size_t)n);
        if (t == 'F') printf("F\t%.*s\n", n, buf);
    }
    if (n == 6) return;
    for (const char *a = AL; *a; a++) { buf[n] = *a; rec(buf, n + 1); }
}
int main(void) {
    char buf[8] = "0";
    rec(buf, 1);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strcspn(line, "\n");
        char t = libinjection_sqli_lookup_word(dummy, 1, line, n);
        if (t) printf("W\t%.*s\t%c\n", (int)n, line, t);
    }
    return 0;
}
