/* Reference harness: runs every record of an input file (4-byte LE length + bytes) through the
 * libinjection bundled in libmodsecurity 3.0.9 (symbols exported by libmodsecurity.so.3) and
 * prints one line per record: "<sqli 0|1> <fingerprint or -> <xss 0|1>".
 * Build: gcc -O2 ref/harness.c -o ref/harness -lmodsecurity */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int libinjection_sqli(const char *s, size_t slen, char fingerprint[]);
int libinjection_xss(const char *s, size_t slen);
const char *libinjection_version(void);

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: harness FILE\n"); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("open"); return 2; }
    fprintf(stderr, "libinjection %s\n", libinjection_version());
    uint32_t len;
    while (fread(&len, 4, 1, f) == 1) {
        char *buf = malloc(len + 1);
        if (len && fread(buf, 1, len, f) != len) { fprintf(stderr, "short read\n"); return 2; }
        buf[len] = 0;
        char fp[8];
        memset(fp, 0, sizeof fp);
        int s = libinjection_sqli(buf, len, fp);
        int x = libinjection_xss(buf, len);
        printf("%d %s %d\n", s ? 1 : 0, s ? fp : "-", x ? 1 : 0);
        free(buf);
    }
    return 0;
}
