/*
 * The length-prefixed request file of convert.py (and of the CRS differential test), read
 * whole into memory, shared by driver.c and crs_driver.c.
 *
 * Record layout (integers u32 little-endian, strings as length + bytes):
 *   id, class, client_ip, method, uri, header count, (name, value) * count, body
 */
#ifndef PALISADE_BENCH_REQUESTS_H
#define PALISADE_BENCH_REQUESTS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const unsigned char *ptr;
    size_t len;
} str_t;

typedef struct {
    str_t id, cls, ip, method, uri, body;
    uint32_t nheaders;
    str_t *names, *values;
} request_t;

static unsigned char *buf;
static size_t buf_len, pos;

static int take(str_t *out) {
    uint32_t n;
    if (buf_len - pos < 4) return -1;
    memcpy(&n, buf + pos, 4); /* little-endian host (x86_64, aarch64) */
    pos += 4;
    if (buf_len - pos < n) return -1;
    out->ptr = buf + pos;
    out->len = n;
    pos += n;
    return 0;
}

/* NUL-terminated copy for the APIs that take C strings */
static char *cstr(str_t s) {
    char *c = malloc(s.len + 1);
    if (!c) { perror("malloc"); exit(2); }
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU time of this thread: on a shared, loaded machine it measures the work, not the waiting */
static double cpu_now(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

/* Reads every record of `path`; exits with status 2 (and a message) on a bad file. */
static request_t *load_requests(const char *path, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) { perror("read"); exit(2); }
    fclose(f);
    buf_len = (size_t)sz;

    size_t cap = 1024, n = 0;
    request_t *reqs = malloc(cap * sizeof *reqs);
    while (reqs && pos < buf_len) {
        request_t r;
        if (n == cap) reqs = realloc(reqs, (cap *= 2) * sizeof *reqs);
        if (!reqs) break;
        if (take(&r.id) || take(&r.cls) || take(&r.ip) || take(&r.method) || take(&r.uri)) goto bad;
        if (buf_len - pos < 4) goto bad;
        memcpy(&r.nheaders, buf + pos, 4);
        pos += 4;
        if (r.nheaders > 1000) goto bad;
        r.names = malloc((r.nheaders + 1) * sizeof(str_t));
        r.values = malloc((r.nheaders + 1) * sizeof(str_t));
        if (!r.names || !r.values) { perror("malloc"); exit(2); }
        for (uint32_t i = 0; i < r.nheaders; i++)
            if (take(&r.names[i]) || take(&r.values[i])) goto bad;
        if (take(&r.body)) goto bad;
        reqs[n++] = r;
    }
    if (!reqs) { perror("realloc"); exit(2); }
    *count = n;
    return reqs;
bad:
    fprintf(stderr, "%s: malformed record %zu at byte %zu\n", path, n + 1, pos);
    exit(2);
}

#endif
