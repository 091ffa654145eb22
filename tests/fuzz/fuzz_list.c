/* libFuzzer driver for the list parser and name normalisation: the input is a list file given
 * to domainset_add_list; then each of its lines is also a query name and a rule pattern. Must
 * never crash or leak; the counts must add up; a normalised name must normalise to itself and
 * be found once added. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domainset.h"

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static size_t fuzz_count_lines(const uint8_t *data, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < size; i++)
        n += data[i] == '\n';
    return n + (size > 0 && data[size - 1] != '\n');
}

/* Normalising is idempotent, and a normalised name is found exactly and under a parent. */
static void fuzz_name(const char *line, size_t len, struct domainset *set)
{
    char out[DOMAIN_MAX + 1], again[DOMAIN_MAX + 1];
    size_t n, m;
    const char *why = NULL;
    struct domain_query q;

    if (domain_normalize(line, len, out, &n, &why) != 0) {
        fuzz_check(why != NULL);
        return;
    }
    fuzz_check(n == strlen(out) && n > 0 && n <= DOMAIN_MAX && out[n - 1] != '.');
    fuzz_check(domain_normalize(out, n, again, &m, &why) == 0);
    fuzz_check(m == n && memcmp(out, again, n) == 0);
    fuzz_check(domain_query_init(&q, out) == 0 && q.len == n && q.n_suffixes >= 1);
    fuzz_check(domainset_add(set, out, n, DOMAINSET_EXACT) == 0);
    fuzz_check(domainset_match(set, &q, NULL));
    if (n + 2 <= DOMAIN_MAX) {
        char child[DOMAIN_MAX + 1];
        struct domainset *sub = domainset_new();
        fuzz_check(sub != NULL);
        child[0] = 'x';
        child[1] = '.';
        memcpy(child + 2, out, n + 1);
        fuzz_check(domainset_add(sub, out, n, DOMAINSET_SUBDOMAINS) == 0);
        fuzz_check(domain_query_init(&q, child) == 0 && domainset_match(sub, &q, NULL));
        fuzz_check(domain_query_init(&q, out) == 0 && !domainset_match(sub, &q, NULL));
        domainset_free(sub);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct domainset *set = domainset_new(), *names = domainset_new();
    struct domainset_list_stats st;
    struct domain_query q;

    fuzz_check(set && names);
    fuzz_check(domainset_add_list(set, (const char *)data, size, &st) == 0);
    fuzz_check(st.lines == fuzz_count_lines(data, size));
    fuzz_check(st.skipped <= st.lines);
    fuzz_check((st.skipped == 0) == (st.first_bad_line == 0));
    fuzz_check(st.first_bad_line <= st.lines);
    fuzz_check(domainset_size(set) <= st.names);

    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char *line = malloc(len + 1);
        fuzz_check(line != NULL);
        memcpy(line, p, len);
        line[len] = '\0';
        if (domain_query_init(&q, line) == 0) /* whatever it is, a lookup must be safe */
            (void)domainset_match(set, &q, NULL);
        fuzz_name(line, len, names);
        const char *why;
        (void)domainset_add_pattern(names, line, &why);
        free(line);
        p += len + 1;
    }
    domainset_free(set);
    domainset_free(names);
    return 0;
}
