/* bench_policy: load time, memory and lookup latency of a large domain list in a policy.
 *
 *   bench_policy LIST [QUERIES]
 *
 * Loads LIST through the real path (a config whose one rule has `sni_list: LIST`, read by
 * policy_load), reporting the wall time and the growth of the resident set; then times
 * QUERIES lookups (default 1,000,000): a third names of the list, a third subdomains of them,
 * a third names not in it, in random order. Each lookup is one policy_decide() with the name as
 * SNI (normalisation, hashing and the parent walk included), timed alone with
 * CLOCK_MONOTONIC; the clock's own cost is measured and reported apart. The batch mean also
 * holds the copy of each query string out of a cold 1M-string array. bench/policy/run
 * generates the list and runs this. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "domainset.h"
#include "policy.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* VmRSS or VmHWM from /proc/self/status, in KiB. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reads the names of the list file (one per line, plain format) for the queries. */
static char **read_names(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    char line[512], **v = NULL;
    size_t n = 0, cap = 0;

    if (!f)
        return NULL;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            v = realloc(v, cap * sizeof(*v));
            if (!v)
                exit(1);
        }
        v[n++] = strdup(line);
    }
    fclose(f);
    *count = n;
    return v;
}

static void random_name(char *buf, size_t size)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t len = 6 + rng() % 10, i = 0;

    for (; i < len && i + 1 < size; i++)
        buf[i] = alphabet[rng() % 36];
    snprintf(buf + i, size - i, ".miss.test");
}

int main(int argc, char **argv)
{
    char yaml[4096], err[1024];
    size_t n_queries = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_policy LIST [QUERIES]\n");
        return 2;
    }
    snprintf(yaml, sizeof(yaml),
             "policy:\n  default: passthrough\n  rules:\n"
             "    - {name: listed, sni_list: \"%s\", action: block}\n",
             argv[1]);

    long rss0 = status_kib("VmRSS");
    double t0 = now_ns();
    struct policy *p = policy_load_buffer("bench.yaml", yaml, strlen(yaml), err, sizeof(err));
    double load_ms = (now_ns() - t0) / 1e6;
    long rss1 = status_kib("VmRSS"), hwm = status_kib("VmHWM");
    if (!p) {
        fprintf(stderr, "bench_policy: %s\n", err);
        return 1;
    }

    size_t n_names;
    char **names = read_names(argv[1], &n_names);
    if (!names || n_names == 0) {
        fprintf(stderr, "bench_policy: no names in %s\n", argv[1]);
        return 1;
    }
    char **queries = malloc(n_queries * sizeof(*queries));
    for (size_t i = 0; i < n_queries; i++) {
        char buf[300];
        const char *name = names[rng() % n_names];
        switch (i % 3) {
        case 0:
            snprintf(buf, sizeof(buf), "%s", name);
            break;
        case 1:
            snprintf(buf, sizeof(buf), "www.%s", name);
            break;
        default:
            random_name(buf, sizeof(buf));
        }
        queries[i] = strdup(buf);
    }
    for (size_t i = n_queries; i > 1; i--) { /* shuffle: no pattern for the caches to learn */
        size_t j = rng() % i;
        char *t = queries[i - 1];
        queries[i - 1] = queries[j];
        queries[j] = t;
    }

    double *ns = malloc(n_queries * sizeof(*ns)), clock_cost = 0;
    size_t hits = 0;
    for (int i = 0; i < 1000; i++) {
        double a = now_ns(), b = now_ns();
        clock_cost += b - a;
    }
    clock_cost /= 1000;
    double batch0 = now_ns();
    for (size_t i = 0; i < n_queries; i++) {
        /* The connection path decides on an SNI it has just parsed, in cache; the string is
         * copied first so that the timing holds the policy's memory accesses, not the
         * benchmark's. The set itself is as cold as a million names make it. */
        char sni[300];
        snprintf(sni, sizeof(sni), "%s", queries[i]);
        struct policy_flow f = {.sni = sni};
        struct policy_decision d;
        double a = now_ns();
        policy_decide(p, &f, &d);
        ns[i] = now_ns() - a;
        hits += d.rule != NULL;
    }
    double batch = (now_ns() - batch0) / (double)n_queries;
    qsort(ns, n_queries, sizeof(*ns), cmp_double);

    printf("names in list:       %zu\n", n_names);
    printf("load time:           %.0f ms\n", load_ms);
    printf("RSS after load:      +%.1f MB (peak %.1f MB, process)\n", (rss1 - rss0) / 1024.0,
           hwm / 1024.0);
    printf("lookups:             %zu (%zu matched: names and their subdomains; the rest "
           "misses)\n",
           n_queries, hits);
    printf("lookup median:       %.0f ns\n", ns[n_queries / 2]);
    printf("lookup p99:          %.0f ns\n", ns[n_queries * 99 / 100]);
    printf("lookup mean (batch): %.0f ns (includes one clock read, ~%.0f ns)\n", batch, clock_cost);
    printf("RESULT load_ms=%.0f rss_mb=%.1f median_ns=%.0f p99_ns=%.0f\n", load_ms,
           (rss1 - rss0) / 1024.0, ns[n_queries / 2], ns[n_queries * 99 / 100]);

    for (size_t i = 0; i < n_queries; i++)
        free(queries[i]);
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(queries);
    free(names);
    free(ns);
    policy_unref(p);
    return 0;
}
