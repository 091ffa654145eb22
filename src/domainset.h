/* domainset: sets of DNS names (exact names, names with their subdomains, subdomains only)
 * built once and then queried read-only from any thread; the list-file parser that fills them;
 * and the one name normalisation used by both sides (lower case, no trailing dot, IDNA
 * A-labels through libidn2). */
#ifndef SLUICE_DOMAINSET_H
#define SLUICE_DOMAINSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOMAIN_MAX 253        /* longest normalised name, without a trailing dot */
#define DOMAIN_LABELS_MAX 127 /* most labels a DOMAIN_MAX name can have */

/* What an entry covers. A list line covers DOMAINSET_TREE (the name and everything under
 * it); a rule pattern "example.com" is DOMAINSET_EXACT and "*.example.com" is
 * DOMAINSET_SUBDOMAINS (names under example.com, not example.com itself). */
enum domainset_kind {
    DOMAINSET_EXACT = 1,
    DOMAINSET_SUBDOMAINS = 2,
    DOMAINSET_TREE = DOMAINSET_EXACT | DOMAINSET_SUBDOMAINS,
};

/* A query name prepared once and matched against any number of sets: the normalised name and
 * the hash of each of its suffixes that starts at a label (the whole name first, then each
 * parent: "a.b.c", "b.c", "c"). Lives on the caller's stack (about 2 KiB); no allocation for
 * ASCII names. */
struct domain_query {
    char name[DOMAIN_MAX + 1];
    size_t len;
    size_t n_suffixes;
    struct {
        uint16_t off; /* suffix is name[off..len) */
        uint64_t hash;
    } suffix[DOMAIN_LABELS_MAX];
};

struct domainset;

/* Counts from parsing one list. first_bad_* describes the first skipped line. */
struct domainset_list_stats {
    size_t lines;           /* lines read */
    size_t names;           /* names accepted (a name listed twice counts twice) */
    size_t skipped;         /* lines that were neither a name, a comment nor blank */
    size_t first_bad_line;  /* 1-based; 0 when nothing was skipped */
    char first_bad_why[96]; /* why that line was skipped */
};

/* Normalises a name as written by an operator or sent by a client: in[0..len) (need not be
 * NUL-terminated), ASCII letters lowered, one trailing dot dropped, and a name holding
 * non-ASCII bytes converted to its IDNA A-label (punycode) form with libidn2 (UTS #46,
 * non-transitional). The result, NUL-terminated in out (DOMAIN_MAX + 1 bytes), has labels of
 * 1..63 characters from [a-z0-9-_] and at most DOMAIN_MAX characters. Returns 0, or -1 with
 * *why (static text) saying what is wrong. Allocates only for non-ASCII input (libidn2). */
int domain_normalize(const char *in, size_t len, char *out, size_t *out_len, const char **why);

/* Prepares q from a client's name (NUL-terminated, borrowed). Returns 0, or -1 when name is
 * not a valid DNS name (such a name matches nothing). */
int domain_query_init(struct domain_query *q, const char *name);

/* An empty set. Returns NULL when out of memory. */
struct domainset *domainset_new(void);
void domainset_free(struct domainset *set);

/* Adds name (already normalised by domain_normalize, borrowed; copied into the set) with the
 * coverage kind; adding a name again widens its coverage. Returns 0, or -1 out of memory. */
int domainset_add(struct domainset *set, const char *name, size_t len, enum domainset_kind kind);

/* Parses one rule pattern: "name" (DOMAINSET_EXACT) or "*.name" (DOMAINSET_SUBDOMAINS), and
 * adds it. Returns 0, -1 with *why when the pattern is invalid, -2 out of memory. */
int domainset_add_pattern(struct domainset *set, const char *pattern, const char **why);

/* Distinct names held. */
size_t domainset_size(const struct domainset *set);
/* Bytes allocated by the set (arena and table capacity). */
size_t domainset_memory(const struct domainset *set);

/* True when q is covered by an entry of set: equal to an EXACT entry, or a proper subdomain of
 * a SUBDOMAINS entry. *matched (may be NULL) receives the offset in q->name of the entry that
 * matched. Pure: no allocation, safe from any number of threads. */
bool domainset_match(const struct domainset *set, const struct domain_query *q, size_t *matched);

/* Parses a list: data[0..len) (borrowed), one entry per line, into set as DOMAINSET_TREE
 * entries ("*.name" lines as DOMAINSET_SUBDOMAINS). Accepted lines:
 *   name                       plain; an inline "# comment" may follow
 *   0.0.0.0 name [name...]     hosts file (any IP literal); localhost-style names ignored
 *   ||name^                    adblock; lines starting '!' and "[Adblock ...]" are comments
 *   # comment, blank lines
 * Any other line is skipped and counted in stats (filled from zero). CRLF endings and a UTF-8
 * byte-order mark are accepted. Returns 0, or -1 out of memory. */
int domainset_add_list(struct domainset *set, const char *data, size_t len,
                       struct domainset_list_stats *stats);

/* Reads the regular file at path and parses it with domainset_add_list. Returns 0, or -1 with
 * err = "cannot read PATH: reason" (missing, not a regular file, too large, out of memory). */
int domainset_add_list_file(struct domainset *set, const char *path,
                            struct domainset_list_stats *stats, char *err, size_t errlen);

#endif
