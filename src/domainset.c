/* domainset: DNS-name sets for policy lists and patterns — an open-addressing hash table of
 * names stored in the table itself, and a lookup that walks a name's parents.
 *
 * A slot is 32 bytes, two to a cache line: hash tag, length, coverage kind, and the name inline
 * when it has at most 24 bytes (most names do); a longer name keeps its first 20 bytes inline
 * and the rest in an arena. Linear probing, load at most 1/2. A name is hashed right to left,
 * label suffix by label suffix, so one pass over a query gives the hash of every parent
 * ("a.b.c" → "a.b.c", "b.c", "c"): a lookup is one probe per plausible parent, the probes'
 * slots are prefetched together, and a short name is confirmed without leaving its slot — one
 * cache miss's worth of latency per lookup on a large set. A million names take 64 MB of table
 * plus the tails of long names. */
#include "domainset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DOMAINSET_LABEL_MAX 63
#define DOMAINSET_MIN_SLOTS 16u
#define DOMAINSET_FILE_MAX (1ull << 31) /* 2 GiB: far beyond any real list */
#define DOMAINSET_CHUNK (1u << 20)
#define DOMAINSET_RESERVE_MAX (1u << 21) /* names reserved ahead from a file's size */
#define DOMAINSET_INLINE 24              /* names up to this long live in their slot */
#define DOMAINSET_INLINE_HEAD 20 /* a longer name: this much inline, the rest in the arena */

struct domainset_slot {
    uint32_t tag; /* high half of the name's hash */
    uint8_t len;  /* 0: empty slot (names have at least one byte) */
    uint8_t kind; /* enum domainset_kind bits */
    uint8_t pad[2];
    char name[DOMAINSET_INLINE]; /* len > DOMAINSET_INLINE: head, then a uint32 arena offset */
};

struct domainset {
    char *arena; /* tails of names longer than DOMAINSET_INLINE */
    size_t arena_len, arena_cap;
    struct domainset_slot *slots; /* 64-byte aligned: a slot never straddles a cache line */
    size_t n_slots;               /* power of two */
    size_t count;
    size_t min_len, max_len; /* of the names held: shorter or longer suffixes are not probed */
    uint64_t label_counts;   /* bit k-1: a name of k labels is held (bit 63: 64 or more) */
};

/* One step of the right-to-left hash (FNV-1a 64) and its finaliser (murmur3 fmix64), so that
 * suffixes sharing their last bytes still spread over the whole table. */
#define DOMAINSET_FNV_OFFSET 0xcbf29ce484222325ull
#define DOMAINSET_FNV_PRIME 0x100000001b3ull

static inline uint64_t domainset_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * DOMAINSET_FNV_PRIME;
}

static inline uint64_t domainset_final(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t domainset_hash(const char *name, size_t len)
{
    uint64_t h = DOMAINSET_FNV_OFFSET;

    for (size_t i = len; i-- > 0;)
        h = domainset_step(h, (unsigned char)name[i]);
    return domainset_final(h);
}

static bool domainset_is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Checks an ASCII, lower-cased name without a trailing dot: labels 1..63 name characters. */
static int domainset_check_ascii(const char *s, size_t len, const char **why)
{
    size_t label = 0;

    if (len == 0) {
        *why = "empty name";
        return -1;
    }
    if (len > DOMAIN_MAX) {
        *why = "name longer than 253 characters";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0) {
                *why = "empty label (two dots in a row, or a leading dot)";
                return -1;
            }
            label = 0;
        } else if (!domainset_is_name_char(c)) {
            *why = c == '*' ? "'*' is allowed only as a leading '*.'"
                            : "character not allowed in a name (letters, digits, '-', '_', '.')";
            return -1;
        } else if (++label > DOMAINSET_LABEL_MAX) {
            *why = "label longer than 63 characters";
            return -1;
        }
    }
    if (label == 0) {
        *why = "empty label (two dots in a row, or a leading dot)";
        return -1;
    }
    return 0;
}

/* Non-ASCII names: IDNA (UTS #46 non-transitional, NFC) to A-labels, then the ASCII checks. */
static int domainset_to_ascii(const char *in, size_t len, char *out, size_t *out_len,
                              const char **why)
{
    char copy[4 * DOMAIN_MAX + 1];
    char *ascii = NULL;
    int rc = -1;

    if (len >= sizeof(copy)) {
        *why = "name longer than 253 characters";
        return -1;
    }
    if (memchr(in, '\0', len)) {
        *why = "NUL byte in name";
        return -1;
    }
    memcpy(copy, in, len);
    copy[len] = '\0';
    if (idn2_to_ascii_8z(copy, &ascii, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT) != IDN2_OK) {
        *why = "not a valid internationalised name (IDNA)";
        goto out;
    }
    size_t n = strlen(ascii);
    if (n > 0 && ascii[n - 1] == '.')
        n--;
    for (size_t i = 0; i < n; i++)
        if (ascii[i] >= 'A' && ascii[i] <= 'Z')
            ascii[i] = (char)(ascii[i] - 'A' + 'a');
    if (domainset_check_ascii(ascii, n, why) != 0)
        goto out;
    memcpy(out, ascii, n);
    out[n] = '\0';
    *out_len = n;
    rc = 0;
out:
    idn2_free(ascii);
    return rc;
}

int domain_normalize(const char *in, size_t len, char *out, size_t *out_len, const char **why)
{
    bool ascii = true;

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len > DOMAIN_MAX) {
        for (size_t i = 0; i < len && ascii; i++)
            ascii = (unsigned char)in[i] < 0x80;
        if (ascii) {
            *why = "name longer than 253 characters";
            return -1;
        }
        return domainset_to_ascii(in, len, out, out_len, why);
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x80) {
            ascii = false;
            break;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (!ascii)
        return domainset_to_ascii(in, len, out, out_len, why);
    if (domainset_check_ascii(out, len, why) != 0)
        return -1;
    out[len] = '\0';
    *out_len = len;
    return 0;
}

int domain_query_init(struct domain_query *q, const char *name)
{
    const char *why;
    uint64_t h = DOMAINSET_FNV_OFFSET;
    size_t n = 0;

    q->len = 0;
    q->n_suffixes = 0;
    if (!name || domain_normalize(name, strlen(name), q->name, &q->len, &why) != 0)
        return -1;
    /* Right to left; a suffix ends (on the left) at a dot or at the start of the name. The
     * suffixes are recorded longest first, the order in which a lookup wants them. */
    struct {
        uint16_t off;
        uint64_t hash;
    } rev[DOMAIN_LABELS_MAX];
    for (size_t i = q->len; i-- > 0;) {
        if (q->name[i] == '.') {
            rev[n].off = (uint16_t)(i + 1);
            rev[n++].hash = domainset_final(h);
        }
        h = domainset_step(h, (unsigned char)q->name[i]);
    }
    rev[n].off = 0;
    rev[n++].hash = domainset_final(h);
    for (size_t i = 0; i < n; i++) {
        q->suffix[i].off = rev[n - 1 - i].off;
        q->suffix[i].hash = rev[n - 1 - i].hash;
    }
    q->n_suffixes = n;
    return 0;
}

static struct domainset_slot *domainset_alloc_slots(size_t n)
{
    void *p = NULL;

    if (n > SIZE_MAX / sizeof(struct domainset_slot) ||
        posix_memalign(&p, 64, n * sizeof(struct domainset_slot)) != 0)
        return NULL;
    memset(p, 0, n * sizeof(struct domainset_slot));
    return p;
}

struct domainset *domainset_new(void)
{
    struct domainset *set = calloc(1, sizeof(*set));

    if (!set)
        return NULL;
    set->slots = domainset_alloc_slots(DOMAINSET_MIN_SLOTS);
    if (!set->slots) {
        free(set);
        return NULL;
    }
    set->n_slots = DOMAINSET_MIN_SLOTS;
    return set;
}

void domainset_free(struct domainset *set)
{
    if (!set)
        return;
    free(set->arena);
    free(set->slots);
    free(set);
}

size_t domainset_size(const struct domainset *set)
{
    return set->count;
}

size_t domainset_memory(const struct domainset *set)
{
    return sizeof(*set) + set->arena_cap + set->n_slots * sizeof(*set->slots);
}

/* True when slot s holds name[0..len). */
static inline bool domainset_slot_is(const struct domainset *set, const struct domainset_slot *s,
                                     const char *name, size_t len)
{
    uint32_t off;

    if (s->len != len)
        return false;
    if (len <= DOMAINSET_INLINE)
        return memcmp(s->name, name, len) == 0;
    if (memcmp(s->name, name, DOMAINSET_INLINE_HEAD) != 0)
        return false;
    memcpy(&off, s->name + DOMAINSET_INLINE_HEAD, sizeof(off));
    return memcmp(set->arena + off, name + DOMAINSET_INLINE_HEAD, len - DOMAINSET_INLINE_HEAD) == 0;
}

/* The whole name of slot s into buf (DOMAIN_MAX + 1 bytes); returns its length. */
static size_t domainset_slot_name(const struct domainset *set, const struct domainset_slot *s,
                                  char *buf)
{
    uint32_t off;

    if (s->len <= DOMAINSET_INLINE) {
        memcpy(buf, s->name, s->len);
    } else {
        memcpy(buf, s->name, DOMAINSET_INLINE_HEAD);
        memcpy(&off, s->name + DOMAINSET_INLINE_HEAD, sizeof(off));
        memcpy(buf + DOMAINSET_INLINE_HEAD, set->arena + off, s->len - DOMAINSET_INLINE_HEAD);
    }
    return s->len;
}

/* The slot holding name, or the empty slot where it would go. */
static struct domainset_slot *domainset_find(const struct domainset *set, const char *name,
                                             size_t len, uint64_t hash)
{
    size_t mask = set->n_slots - 1;
    uint32_t tag = (uint32_t)(hash >> 32);

    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        struct domainset_slot *s = &set->slots[i];
        if (s->len == 0 || (s->tag == tag && domainset_slot_is(set, s, name, len)))
            return s;
    }
}

/* Rehashes into a table of n slots (a power of two, more than twice the count). */
static int domainset_resize(struct domainset *set, size_t n)
{
    struct domainset_slot *slots = domainset_alloc_slots(n);
    char name[DOMAIN_MAX + 1];

    if (!slots)
        return -1;
    for (size_t i = 0; i < set->n_slots; i++) {
        const struct domainset_slot *s = &set->slots[i];
        if (s->len == 0)
            continue;
        uint64_t h = domainset_hash(name, domainset_slot_name(set, s, name));
        size_t j = (size_t)h & (n - 1);
        while (slots[j].len != 0)
            j = (j + 1) & (n - 1);
        slots[j] = *s;
    }
    free(set->slots);
    set->slots = slots;
    set->n_slots = n;
    return 0;
}

/* Stores the tail of a long name in the arena; its offset into *off. */
static int domainset_arena_put(struct domainset *set, const char *tail, size_t n, uint32_t *off)
{
    if (set->arena_cap - set->arena_len < n) {
        size_t cap = set->arena_cap ? set->arena_cap : 4096;
        while (cap - set->arena_len < n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1; /* offsets are 32-bit: 4 GiB of tails */
        char *a = realloc(set->arena, cap);
        if (!a)
            return -1;
        set->arena = a;
        set->arena_cap = cap;
    }
    memcpy(set->arena + set->arena_len, tail, n);
    *off = (uint32_t)set->arena_len;
    set->arena_len += n;
    return 0;
}

/* Makes room for n more names at once, so a large list is not rehashed as it grows. A
 * failure is not an error: the table then grows one doubling at a time. */
static void domainset_reserve(struct domainset *set, size_t n)
{
    size_t slots = set->n_slots;

    while (slots / 2 < set->count + n && slots < ((size_t)1 << 40))
        slots *= 2;
    if (slots != set->n_slots)
        (void)domainset_resize(set, slots);
}

static uint64_t domainset_label_bit(const char *name, size_t len)
{
    size_t labels = 1;

    for (size_t i = 0; i < len; i++)
        labels += name[i] == '.';
    return 1ull << (labels > 64 ? 63 : labels - 1);
}

int domainset_add(struct domainset *set, const char *name, size_t len, enum domainset_kind kind)
{
    uint64_t h;
    struct domainset_slot *s;

    if (len == 0 || len > DOMAIN_MAX)
        return -1;
    h = domainset_hash(name, len);
    s = domainset_find(set, name, len, h);
    if (s->len != 0) {
        s->kind |= (uint8_t)kind;
        return 0;
    }
    if ((set->count + 1) * 2 > set->n_slots) {
        if (domainset_resize(set, set->n_slots * 2) != 0)
            return -1;
        s = domainset_find(set, name, len, h);
    }
    if (len <= DOMAINSET_INLINE) {
        memcpy(s->name, name, len);
    } else {
        uint32_t off;
        if (domainset_arena_put(set, name + DOMAINSET_INLINE_HEAD, len - DOMAINSET_INLINE_HEAD,
                                &off) != 0)
            return -1;
        memcpy(s->name, name, DOMAINSET_INLINE_HEAD);
        memcpy(s->name + DOMAINSET_INLINE_HEAD, &off, sizeof(off));
    }
    s->tag = (uint32_t)(h >> 32);
    s->len = (uint8_t)len;
    s->kind = (uint8_t)kind;
    if (set->count == 0 || len < set->min_len)
        set->min_len = len;
    if (len > set->max_len)
        set->max_len = len;
    set->label_counts |= domainset_label_bit(name, len);
    set->count++;
    return 0;
}

int domainset_add_pattern(struct domainset *set, const char *pattern, const char **why)
{
    char name[DOMAIN_MAX + 1];
    size_t len, plen = strlen(pattern);
    enum domainset_kind kind = DOMAINSET_EXACT;

    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        pattern += 2;
        plen -= 2;
        kind = DOMAINSET_SUBDOMAINS;
    }
    if (domain_normalize(pattern, plen, name, &len, why) != 0)
        return -1;
    return domainset_add(set, name, len, kind) == 0 ? 0 : -2;
}

/* A lookup probes the slot of each suffix of q that could be in the set (its length and label
 * count are those of some entry). The probes are independent, so their slots are prefetched
 * first: the cache misses of a large set overlap instead of adding up. */
bool domainset_match(const struct domainset *set, const struct domain_query *q, size_t *matched)
{
    size_t mask = set->n_slots - 1, cand[DOMAIN_LABELS_MAX], n = 0;
    size_t labels = q->n_suffixes;

    if (set->count == 0)
        return false;
    for (size_t k = 0; k < q->n_suffixes; k++, labels--) {
        size_t len = q->len - q->suffix[k].off;
        if (len < set->min_len || len > set->max_len ||
            !(set->label_counts & (1ull << (labels > 64 ? 63 : labels - 1))))
            continue;
        cand[n++] = k;
        __builtin_prefetch(&set->slots[(size_t)q->suffix[k].hash & mask]);
    }
    for (size_t c = 0; c < n; c++) {
        size_t k = cand[c], off = q->suffix[k].off, len = q->len - off;
        uint64_t h = q->suffix[k].hash;
        uint32_t tag = (uint32_t)(h >> 32);
        unsigned want = k == 0 ? DOMAINSET_EXACT : DOMAINSET_SUBDOMAINS;
        for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
            const struct domainset_slot *s = &set->slots[i];
            if (s->len == 0)
                break;
            if (s->tag != tag || !domainset_slot_is(set, s, q->name + off, len))
                continue;
            if (!(s->kind & want))
                break;
            if (matched)
                *matched = off;
            return true;
        }
    }
    return false;
}

/* ---- list files ---- */

/* Hosts-file names that are boilerplate, not entries (StevenBlack and similar lists). */
static bool domainset_hosts_boilerplate(const char *s, size_t n)
{
    static const char *const names[] = {
        "localhost",     "localhost.localdomain", "local",        "broadcasthost",
        "ip6-localhost", "ip6-loopback",          "ip6-localnet", "ip6-mcastprefix",
        "ip6-allnodes",  "ip6-allrouters",        "ip6-allhosts", "0.0.0.0",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && strncasecmp(names[i], s, n) == 0)
            return true;
    return false;
}

static bool domainset_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* The next whitespace-separated token of line[*pos..len), or 0 at the end or at a comment. */
static size_t domainset_token(const char *line, size_t len, size_t *pos, const char **tok)
{
    size_t i = *pos;

    while (i < len && domainset_is_space(line[i]))
        i++;
    if (i == len || line[i] == '#') {
        *pos = len;
        return 0;
    }
    *tok = line + i;
    size_t start = i;
    while (i < len && !domainset_is_space(line[i]))
        i++;
    *pos = i;
    return i - start;
}

static bool domainset_is_ip(const char *s, size_t n)
{
    char buf[64];
    unsigned char a[16];

    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *pct = strchr(buf, '%'); /* fe80::1%lo0 */
    if (pct)
        *pct = '\0';
    return inet_pton(AF_INET, buf, a) == 1 || inet_pton(AF_INET6, buf, a) == 1;
}

/* Adds one list token: "name" or "*.name". 0 added, 1 invalid (*why set), -1 out of memory. */
static int domainset_add_token(struct domainset *set, const char *tok, size_t n,
                               struct domainset_list_stats *st, const char **why)
{
    char name[DOMAIN_MAX + 1];
    size_t len;
    enum domainset_kind kind = DOMAINSET_TREE;

    if (n >= 2 && tok[0] == '*' && tok[1] == '.') {
        tok += 2;
        n -= 2;
        kind = DOMAINSET_SUBDOMAINS;
    }
    if (domain_normalize(tok, n, name, &len, why) != 0)
        return 1;
    if (domainset_add(set, name, len, kind) != 0)
        return -1;
    st->names++;
    return 0;
}

/* One adblock line "||name^" (the only form that names a domain with nothing more). */
static int domainset_adblock(struct domainset *set, const char *line, size_t len,
                             struct domainset_list_stats *st, const char **why)
{
    const char *tok, *rest;
    size_t pos = 0, n = domainset_token(line, len, &pos, &tok);

    if (domainset_token(line, len, &pos, &rest) != 0 || n < 4 || tok[n - 1] != '^') {
        *why = "adblock rule other than ||name^ (options, paths, exceptions are not supported)";
        return 1;
    }
    return domainset_add_token(set, tok + 2, n - 3, st, why);
}

/* Hosts-file line after its address: name [name...]. Skipped when no name is valid. */
static int domainset_hosts(struct domainset *set, const char *line, size_t len, size_t pos,
                           struct domainset_list_stats *st, const char **why)
{
    const char *tok;
    size_t n;
    int rc = 0, kept = 0;

    while ((n = domainset_token(line, len, &pos, &tok)) != 0) {
        if (domainset_hosts_boilerplate(tok, n)) {
            kept++;
            continue;
        }
        int r = domainset_add_token(set, tok, n, st, why);
        if (r < 0)
            return -1;
        if (r > 0)
            rc = 1;
        else
            kept++;
    }
    return rc == 1 && kept == 0 ? 1 : 0;
}

/* Parses one line (without its newline). 0 entry or nothing, 1 skipped (*why), -1 no memory. */
static int domainset_list_line(struct domainset *set, const char *line, size_t len,
                               struct domainset_list_stats *st, const char **why)
{
    const char *tok, *next;
    size_t pos = 0, n, after;

    if (st->lines == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
        line += 3; /* UTF-8 byte-order mark */
        len -= 3;
    }
    n = domainset_token(line, len, &pos, &tok);
    if (n == 0)
        return 0; /* blank or comment */
    if (tok[0] == '!' || (tok[0] == '[' && line[len - 1] == ']'))
        return 0; /* adblock comment, or a header such as "[Adblock Plus 2.0]" */
    if (n >= 2 && tok[0] == '|' && tok[1] == '|')
        return domainset_adblock(set, line, len, st, why);
    after = pos;
    bool more = domainset_token(line, len, &after, &next) != 0;
    if (domainset_is_ip(tok, n)) {
        if (!more) {
            *why = "an IP address without a name";
            return 1;
        }
        return domainset_hosts(set, line, len, pos, st, why);
    }
    if (more) {
        *why = "more than one name on a line (hosts-file lines start with an IP address)";
        return 1;
    }
    return domainset_add_token(set, tok, n, st, why);
}

static int domainset_feed_line(struct domainset *set, const char *line, size_t len,
                               struct domainset_list_stats *st)
{
    const char *why = "invalid line";

    while (len > 0 && line[len - 1] == '\r')
        len--;
    st->lines++;
    int r = domainset_list_line(set, line, len, st, &why);
    if (r < 0)
        return -1;
    if (r > 0 && st->skipped++ == 0) {
        st->first_bad_line = st->lines;
        snprintf(st->first_bad_why, sizeof(st->first_bad_why), "%s", why);
    }
    return 0;
}

/* Parses the complete lines of data[0..len); when final, a last line without '\n' too.
 * Returns the bytes consumed, or -1 out of memory. */
static long long domainset_feed(struct domainset *set, const char *data, size_t len, bool final,
                                struct domainset_list_stats *st)
{
    size_t start = 0;

    while (start < len) {
        const char *nl = memchr(data + start, '\n', len - start);
        if (!nl && !final)
            break;
        size_t end = nl ? (size_t)(nl - data) : len;
        if (domainset_feed_line(set, data + start, end - start, st) != 0)
            return -1;
        start = nl ? end + 1 : len;
    }
    return (long long)start;
}

int domainset_add_list(struct domainset *set, const char *data, size_t len,
                       struct domainset_list_stats *stats)
{
    memset(stats, 0, sizeof(*stats));
    return domainset_feed(set, data, len, true, stats) < 0 ? -1 : 0;
}

/* Reads fd in chunks of DOMAINSET_CHUNK, so a list costs its set and one chunk, never a copy
 * of the whole file. A line longer than a chunk is one invalid line. */
static int domainset_read_list(struct domainset *set, int fd, char *buf,
                               struct domainset_list_stats *st)
{
    size_t used = 0;
    unsigned long long total = 0;
    bool skipping = false; /* inside an over-long line: drop bytes up to its newline */

    for (;;) {
        ssize_t n = read(fd, buf + used, DOMAINSET_CHUNK - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        total += (unsigned long long)n;
        if (total > DOMAINSET_FILE_MAX) { /* st_size lies for /proc-like files */
            errno = EFBIG;
            return -1;
        }
        used += (size_t)n;
        if (skipping) {
            char *nl = memchr(buf, '\n', used);
            if (!nl) {
                used = 0;
                if (n == 0)
                    return 0;
                continue;
            }
            used -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, used);
            skipping = false;
        }
        long long done = domainset_feed(set, buf, used, n == 0, st);
        if (done < 0) {
            errno = ENOMEM;
            return -1;
        }
        used -= (size_t)done;
        memmove(buf, buf + done, used);
        if (n == 0)
            return 0;
        if (used == DOMAINSET_CHUNK) {
            if (domainset_feed_line(set, buf, used, st) != 0) {
                errno = ENOMEM;
                return -1;
            }
            used = 0;
            skipping = true;
        }
    }
}

int domainset_add_list_file(struct domainset *set, const char *path,
                            struct domainset_list_stats *stats, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    char *buf = NULL;
    int rc = -1;

    memset(stats, 0, sizeof(*stats));
    if (fd < 0 || fstat(fd, &st) != 0)
        goto fail;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot read %s: not a regular file", path);
        goto out;
    }
    if ((unsigned long long)st.st_size > DOMAINSET_FILE_MAX) {
        errno = EFBIG;
        goto fail;
    }
    /* Lists average 15-25 bytes a line: reserving size/24 names spares most rehashing and
     * wastes little when the guess is high (comments, long names). Capped, so that a huge
     * file of junk cannot make the guess cost more than the biggest real lists do. */
    unsigned long long guess = (unsigned long long)st.st_size / 24;
    domainset_reserve(set, (size_t)(guess < DOMAINSET_RESERVE_MAX ? guess : DOMAINSET_RESERVE_MAX));
    buf = malloc(DOMAINSET_CHUNK);
    if (!buf) {
        errno = ENOMEM;
        goto fail;
    }
    if (domainset_read_list(set, fd, buf, stats) != 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}
