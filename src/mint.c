/* mint: forging leaf certificates that mirror a verified upstream, and their LRU cache. */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY, on purpose: see mint_key_new */
#include "mint.h"

#include <arpa/inet.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MINT_NAME_MAX 253       /* longest DNS name */
#define MINT_CN_MAX 64          /* ub-common-name (RFC 5280) */
#define MINT_BACKDATE_SECS 3600 /* clients whose clock is a little behind */
#define MINT_MAX_DAYS 397       /* CA/Browser Forum limit that clients enforce */
#define MINT_NAME_ONLY_DAYS 1
#define MINT_DIGEST_LEN 32
#define MINT_TABLE_MAX ((size_t)1 << 24)

/* Extensions that are the same in every leaf a cache forges. */
enum { MINT_EXT_BC, MINT_EXT_KU, MINT_EXT_EKU, MINT_EXT_AKI, MINT_N_EXT };

/* A requested name, parsed once. */
struct mint_name {
    bool present;
    size_t len;                    /* of lower */
    char lower[MINT_NAME_MAX + 2]; /* lower-cased, no trailing dot; "" when absent */
    unsigned char ip[16];
    int ip_len; /* 4 or 16 for an IP literal, 0 for a DNS name */
};

/* A cache slot: the leaf (the cache's reference) under its key. */
struct mint_entry {
    struct mint_entry *chain;       /* next in the same hash bucket */
    struct mint_entry *prev, *next; /* LRU list, most recently used first */
    struct mint_leaf *leaf;
    uint64_t hash;
    unsigned char digest[MINT_DIGEST_LEN]; /* SHA-256 of the upstream DER; zero: name-only */
    size_t name_len;
    char name[]; /* struct mint_name.lower */
};

struct mint_cache {
    const struct ca *ca; /* borrowed */
    size_t capacity;
    size_t count;
    struct mint_entry **buckets; /* chained hash table, mask + 1 buckets */
    size_t mask;
    struct mint_entry *head, *tail;
    uint64_t seed;
    EC_GROUP *group;      /* P-256 leaves, else NULL */
    EVP_PKEY_CTX *keygen; /* RSA leaves: reused for every key, else NULL */
    EVP_MD *sha256;       /* fetched once: no implicit fetch per lookup */
    EVP_MD *sha1;
    EVP_MD_CTX *sign_tmpl; /* DigestSign set up with the CA key; NULL: use ca_cert_sign */
    X509_NAME *issuer;     /* this worker's copy of the CA subject */
    X509_EXTENSION *ext[MINT_N_EXT];
};

/* Fills the subject, SANs and notAfter of a leaf being forged. */
typedef int (*mint_fill_cb)(X509 *leaf, X509 *upstream, const struct mint_name *n, time_t now);

static bool mint_dns_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

/* Parses s (may be NULL) into n. Rejects what cannot be a host name or an IP literal: the
 * name lands in a certificate, and it may come from a client. Returns 0 or -1. */
static int mint_name_parse(const char *s, struct mint_name *n)
{
    size_t len;

    n->present = s != NULL;
    n->len = 0;
    n->lower[0] = '\0';
    n->ip_len = 0;
    if (s == NULL)
        return 0;
    len = strnlen(s, MINT_NAME_MAX + 2);
    if (len == 0 || len > MINT_NAME_MAX + 1)
        return -1;
    if (inet_pton(AF_INET, s, n->ip) == 1)
        n->ip_len = 4;
    else if (inet_pton(AF_INET6, s, n->ip) == 1)
        n->ip_len = 16;
    for (size_t i = 0; i < len; i++) {
        if (n->ip_len == 0 && !mint_dns_char(s[i]))
            return -1;
        n->lower[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    }
    if (n->ip_len == 0 && n->lower[len - 1] == '.')
        len--;
    if (len == 0 || len > MINT_NAME_MAX)
        return -1;
    n->lower[len] = '\0';
    n->len = len;
    return 0;
}

/* True when SAN entry gn covers n: same IP, the same DNS name ignoring case, or a "*."
 * wildcard standing for exactly n's first label. */
static bool mint_name_covered_by(const GENERAL_NAME *gn, const struct mint_name *n)
{
    const unsigned char *d;
    size_t len, skip = 0;

    if (gn->type != (n->ip_len != 0 ? GEN_IPADD : GEN_DNS))
        return false;
    d = gn->d.ia5->data; /* iPAddress and dNSName are both ASN1_STRINGs */
    len = (size_t)gn->d.ia5->length;
    if (n->ip_len != 0)
        return len == (size_t)n->ip_len && memcmp(d, n->ip, len) == 0;
    if (len > 2 && d[0] == '*' && d[1] == '.') {
        const char *dot = memchr(n->lower, '.', n->len);
        if (dot == NULL || dot == n->lower)
            return false;
        skip = (size_t)(dot - n->lower);
        d++;
        len--;
    }
    if (len != n->len - skip)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = d[i] >= 'A' && d[i] <= 'Z' ? (unsigned char)(d[i] - 'A' + 'a') : d[i];
        if (ch != (unsigned char)n->lower[skip + i])
            return false;
    }
    return true;
}

/* Appends n to sans as an IP or DNS entry. Returns 0 or -1. */
static int mint_sans_push_name(GENERAL_NAMES *sans, const struct mint_name *n)
{
    bool ip = n->ip_len != 0;
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_STRING *s = ASN1_STRING_type_new(ip ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);

    if (gn == NULL || s == NULL ||
        !ASN1_STRING_set(s, ip ? (const void *)n->ip : n->lower, ip ? n->ip_len : (int)n->len))
        goto fail;
    GENERAL_NAME_set0_value(gn, ip ? GEN_IPADD : GEN_DNS, s);
    s = NULL;
    if (!sk_GENERAL_NAME_push(sans, gn))
        goto fail;
    return 0;
fail:
    ASN1_STRING_free(s);
    GENERAL_NAME_free(gn);
    return -1;
}

/* Adds the SAN extension, critical when the subject is empty (RFC 5280 4.2.1.6). */
static int mint_sans_add(X509 *x, GENERAL_NAMES *sans)
{
    int crit = X509_NAME_entry_count(X509_get_subject_name(x)) == 0;

    if (sk_GENERAL_NAME_num(sans) <= 0)
        return 0;
    return X509_add1_ext_i2d(x, NID_subject_alt_name, sans, crit, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
}

/* Subject CN = the requested name, when there is one that fits in a CN. */
static int mint_subject_name(X509 *x, const struct mint_name *n)
{
    if (!n->present || n->len > MINT_CN_MAX)
        return 0;
    return X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC,
                                      (const unsigned char *)n->lower, (int)n->len, -1, 0)
               ? 0
               : -1;
}

/* Subject = upstream's CN only (the last, most specific one), else the requested name. */
static int mint_subject_mirror(X509 *x, X509 *upstream, const struct mint_name *n)
{
    const X509_NAME *up = X509_get_subject_name(upstream);
    int last = -1;

    for (int i = -1; (i = X509_NAME_get_index_by_NID(up, NID_commonName, i)) >= 0;)
        last = i;
    if (last < 0)
        return mint_subject_name(x, n);
    return X509_NAME_add_entry(X509_get_subject_name(x), X509_NAME_get_entry(up, last), -1, 0) ? 0
                                                                                               : -1;
}

/* SANs = upstream's DNS and IP entries, plus n when none of them covers it. */
static int mint_sans_mirror(X509 *x, X509 *upstream, const struct mint_name *n)
{
    GENERAL_NAMES *in = X509_get_ext_d2i(upstream, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAMES *out = sk_GENERAL_NAME_new_null();
    bool covered = !n->present;
    int ret = -1;

    if (out == NULL)
        goto out;
    for (int i = 0; i < sk_GENERAL_NAME_num(in); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(in, i);
        if (gn->type != GEN_DNS && gn->type != GEN_IPADD)
            continue;
        if (!sk_GENERAL_NAME_push(out, gn))
            goto out;
        sk_GENERAL_NAME_set(in, i, NULL); /* moved into out, no copy */
        covered = covered || mint_name_covered_by(gn, n);
    }
    if (!covered && mint_sans_push_name(out, n) < 0)
        goto out;
    ret = mint_sans_add(x, out);
out:
    sk_GENERAL_NAME_pop_free(in, GENERAL_NAME_free);
    sk_GENERAL_NAME_pop_free(out, GENERAL_NAME_free);
    return ret;
}

static int mint_fill_mirror(X509 *x, X509 *upstream, const struct mint_name *n, time_t now)
{
    const ASN1_TIME *up_end = X509_get0_notAfter(upstream);

    if (mint_subject_mirror(x, upstream, n) < 0 || mint_sans_mirror(x, upstream, n) < 0 ||
        !X509_time_adj_ex(X509_getm_notAfter(x), MINT_MAX_DAYS, 0, &now))
        return -1;
    if (ASN1_TIME_compare(up_end, X509_get0_notAfter(x)) == -1 && !X509_set1_notAfter(x, up_end))
        return -1;
    return 0;
}

static int mint_fill_name(X509 *x, X509 *upstream, const struct mint_name *n, time_t now)
{
    GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
    int ret = -1;

    if (sans != NULL && mint_subject_name(x, n) == 0 && mint_sans_push_name(sans, n) == 0 &&
        mint_sans_add(x, sans) == 0 &&
        X509_time_adj_ex(X509_getm_notAfter(x), MINT_NAME_ONLY_DAYS, 0, &now) != NULL)
        ret = 0;
    sk_GENERAL_NAME_pop_free(sans, GENERAL_NAME_free);
    return ret;
}

/* SKI by RFC 5280 method 1: SHA-1 of the subjectPublicKey bits. */
static int mint_cert_add_ski(const struct mint_cache *c, X509 *x)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    int ret = -1;

    if (ski != NULL && X509_pubkey_digest(x, c->sha1, md, &len) &&
        ASN1_OCTET_STRING_set(ski, md, (int)len) &&
        X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT) == 1)
        ret = 0;
    ASN1_OCTET_STRING_free(ski);
    return ret;
}

/* Everything but subject, SANs and notAfter, which the fill callback sets. */
static int mint_cert_common(const struct mint_cache *c, X509 *x, EVP_PKEY *key, time_t now)
{
    if (!X509_set_version(x, X509_VERSION_3) || ca_serial_randomize(x) < 0 ||
        !X509_set_issuer_name(x, c->issuer) || !X509_set_pubkey(x, key) ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, -MINT_BACKDATE_SECS, &now))
        return -1;
    for (int i = 0; i < MINT_N_EXT; i++) {
        if (!X509_add_ext(x, c->ext[i], -1))
            return -1;
    }
    return mint_cert_add_ski(c, x);
}

/* A fresh leaf key (caller owns) or NULL. P-256 keys are made with the deprecated EC_KEY API
 * on purpose: OpenSSL 3.0's X509_set_pubkey encodes a provider key and decodes it back through
 * the generic decoder, about 250 us of a 400 us leaf, while a legacy key is encoded directly
 * (keygen + X509_set_pubkey measured 264 us vs 18 us). Such a key works wherever an EVP_PKEY
 * does. RSA keys come from the provider: their generation costs milliseconds anyway. */
static EVP_PKEY *mint_key_new(const struct mint_cache *c)
{
    EVP_PKEY *key = NULL;
    EC_KEY *ec = NULL;

    if (c->group == NULL)
        return EVP_PKEY_generate(c->keygen, &key) > 0 ? key : NULL;
    if ((ec = EC_KEY_new()) == NULL || !EC_KEY_set_group(ec, c->group) ||
        !EC_KEY_generate_key(ec) || (key = EVP_PKEY_new()) == NULL)
        goto fail;
    if (EVP_PKEY_assign_EC_KEY(key, ec)) /* key owns ec now */
        return key;
fail:
    EC_KEY_free(ec);
    EVP_PKEY_free(key);
    return NULL;
}

/* Signs x with the CA key through a copy of the cache's prepared context, which skips the
 * algorithm fetch and key set-up X509_sign repeats per call (P-256: 44 us down to 29 us). */
static int mint_cert_sign(const struct mint_cache *c, X509 *x)
{
    EVP_MD_CTX *ctx;
    int ok;

    if (c->sign_tmpl == NULL)
        return ca_cert_sign(x, c->ca->key);
    if ((ctx = EVP_MD_CTX_new()) == NULL)
        return -1;
    ok = EVP_MD_CTX_copy_ex(ctx, c->sign_tmpl) && X509_sign_ctx(x, ctx) > 0;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* Forges a new leaf (one reference, the caller's) or returns NULL, the reason left in the
 * OpenSSL error queue. */
static struct mint_leaf *mint_forge(struct mint_cache *c, X509 *upstream, const struct mint_name *n,
                                    mint_fill_cb fill)
{
    struct mint_leaf *leaf = NULL;
    EVP_PKEY *key = NULL;
    X509 *x = X509_new();
    time_t now = time(NULL);

    if (x == NULL || (key = mint_key_new(c)) == NULL)
        goto out;
    if (mint_cert_common(c, x, key, now) < 0 || fill(x, upstream, n, now) < 0 ||
        mint_cert_sign(c, x) < 0)
        goto out;
    if ((leaf = malloc(sizeof(*leaf))) == NULL)
        goto out;
    leaf->cert = x;
    leaf->key = key;
    leaf->refs = 1;
    x = NULL;
    key = NULL;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return leaf;
}

/* FNV-1a over digest and name, seeded per cache so bucket collisions cannot be precomputed. A
 * chain is at most capacity long and each insert costs the attacker a signature. */
static uint64_t mint_hash(const struct mint_cache *c, const unsigned char *digest,
                          const struct mint_name *n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;

    for (size_t i = 0; i < MINT_DIGEST_LEN; i++)
        h = (h ^ digest[i]) * 0x100000001b3ULL;
    for (size_t i = 0; i < n->len; i++)
        h = (h ^ (unsigned char)n->lower[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

static struct mint_entry *mint_table_find(const struct mint_cache *c, uint64_t h,
                                          const unsigned char *digest, const struct mint_name *n)
{
    for (struct mint_entry *e = c->buckets[h & c->mask]; e != NULL; e = e->chain) {
        if (e->hash == h && e->name_len == n->len &&
            memcmp(e->digest, digest, MINT_DIGEST_LEN) == 0 &&
            memcmp(e->name, n->lower, n->len) == 0)
            return e;
    }
    return NULL;
}

static void mint_lru_unlink(struct mint_cache *c, struct mint_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void mint_lru_push_front(struct mint_cache *c, struct mint_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

/* Drops the least recently used entry; its leaf lives on while others hold references. */
static void mint_cache_evict(struct mint_cache *c)
{
    struct mint_entry *e = c->tail;
    struct mint_entry **pp = &c->buckets[e->hash & c->mask];

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    mint_lru_unlink(c, e);
    mint_leaf_release(e->leaf);
    free(e);
    c->count--;
}

/* Caches leaf (adding the cache's reference). Out of memory just leaves it uncached. */
static void mint_cache_insert(struct mint_cache *c, uint64_t h, const unsigned char *digest,
                              const struct mint_name *n, struct mint_leaf *leaf)
{
    struct mint_entry *e;

    if (c->capacity == 0)
        return;
    if (c->count >= c->capacity)
        mint_cache_evict(c);
    if ((e = malloc(sizeof(*e) + n->len + 1)) == NULL)
        return;
    memcpy(e->digest, digest, MINT_DIGEST_LEN);
    memcpy(e->name, n->lower, n->len + 1);
    e->name_len = n->len;
    e->hash = h;
    e->leaf = leaf;
    leaf->refs++;
    e->chain = c->buckets[h & c->mask];
    c->buckets[h & c->mask] = e;
    mint_lru_push_front(c, e);
    c->count++;
}

/* The cached leaf for (digest, n), or a new one forged with fill. New reference or NULL. */
static struct mint_leaf *mint_get(struct mint_cache *c, const unsigned char *digest, X509 *upstream,
                                  const struct mint_name *n, mint_fill_cb fill)
{
    uint64_t h = mint_hash(c, digest, n);
    struct mint_entry *e = mint_table_find(c, h, digest, n);
    struct mint_leaf *leaf;

    if (e != NULL) {
        mint_lru_unlink(c, e);
        mint_lru_push_front(c, e);
        e->leaf->refs++;
        return e->leaf;
    }
    if ((leaf = mint_forge(c, upstream, n, fill)) != NULL)
        mint_cache_insert(c, h, digest, n, leaf);
    return leaf;
}

struct mint_leaf *mint_leaf_for(struct mint_cache *c, X509 *upstream, const char *name)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    struct mint_name n;

    if (upstream == NULL || mint_name_parse(name, &n) < 0)
        return NULL;
    if (!X509_digest(upstream, c->sha256, digest, &len) || len != MINT_DIGEST_LEN)
        return NULL;
    return mint_get(c, digest, upstream, &n, mint_fill_mirror);
}

struct mint_leaf *mint_leaf_for_name(struct mint_cache *c, const char *name)
{
    static const unsigned char zero[MINT_DIGEST_LEN]; /* no upstream: a key of its own */
    struct mint_name n;

    if (name == NULL || mint_name_parse(name, &n) < 0)
        return NULL;
    return mint_get(c, zero, NULL, &n, mint_fill_name);
}

void mint_leaf_release(struct mint_leaf *leaf)
{
    if (leaf == NULL || --leaf->refs > 0)
        return;
    X509_free(leaf->cert);
    EVP_PKEY_free(leaf->key);
    free(leaf);
}

size_t mint_cache_size(const struct mint_cache *c)
{
    return c->count;
}

static X509_EXTENSION *mint_ext_conf(int nid, const char *value)
{
    X509V3_CTX ctx;

    X509V3_set_ctx(&ctx, NULL, NULL, NULL, NULL, 0);
    return X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
}

static X509_EXTENSION *mint_ext_aki(const struct ca *ca)
{
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    X509_EXTENSION *ext = NULL;

    if (akid != NULL && (akid->keyid = ASN1_OCTET_STRING_new()) != NULL &&
        ASN1_OCTET_STRING_set(akid->keyid, ca->ski, (int)ca->ski_len))
        ext = X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid);
    AUTHORITY_KEYID_free(akid);
    return ext;
}

/* Builds the extensions every leaf of this cache shares, once. */
static int mint_exts_build(struct mint_cache *c, enum ca_key_type leaf_key)
{
    bool rsa = leaf_key != CA_KEY_EC_P256;

    c->ext[MINT_EXT_BC] = mint_ext_conf(NID_basic_constraints, "critical,CA:FALSE");
    c->ext[MINT_EXT_KU] = mint_ext_conf(NID_key_usage, rsa ? "critical,digitalSignature,"
                                                             "keyEncipherment"
                                                           : "critical,digitalSignature");
    c->ext[MINT_EXT_EKU] = mint_ext_conf(NID_ext_key_usage, "serverAuth");
    c->ext[MINT_EXT_AKI] = mint_ext_aki(c->ca);
    for (int i = 0; i < MINT_N_EXT; i++) {
        if (c->ext[i] == NULL)
            return -1;
    }
    return 0;
}

/* A DigestSign context with the CA key and SHA-256, or NULL for keys that take no digest
 * (EdDSA), which mint_cert_sign then hands to ca_cert_sign. */
static EVP_MD_CTX *mint_sign_tmpl_new(const struct ca *ca)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ca->key) == 1)
        return ctx;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

/* A power of two at least capacity (load factor <= 1), bounded. */
static size_t mint_table_size(size_t capacity)
{
    size_t n = 16;

    while (n < capacity && n < MINT_TABLE_MAX)
        n <<= 1;
    return n;
}

struct mint_cache *mint_cache_new(const struct ca *ca, enum ca_key_type leaf_key, size_t capacity)
{
    struct mint_cache *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->ca = ca;
    c->capacity = capacity;
    c->mask = mint_table_size(capacity) - 1;
    c->buckets = calloc(c->mask + 1, sizeof(*c->buckets));
    if (leaf_key == CA_KEY_EC_P256)
        c->group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    else
        c->keygen = ca_keygen_ctx_new(leaf_key);
    c->sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    c->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    c->issuer = X509_NAME_dup(X509_get_subject_name(ca->cert));
    c->sign_tmpl = mint_sign_tmpl_new(ca);
    if (c->buckets == NULL || (c->group == NULL && c->keygen == NULL) || c->sha256 == NULL ||
        c->sha1 == NULL || c->issuer == NULL || ca->ski_len == 0 ||
        mint_exts_build(c, leaf_key) < 0 ||
        RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1) {
        mint_cache_free(c);
        return NULL;
    }
    return c;
}

void mint_cache_free(struct mint_cache *c)
{
    if (c == NULL)
        return;
    while (c->tail != NULL)
        mint_cache_evict(c);
    for (int i = 0; i < MINT_N_EXT; i++)
        X509_EXTENSION_free(c->ext[i]);
    X509_NAME_free(c->issuer);
    EVP_MD_CTX_free(c->sign_tmpl);
    EVP_MD_free(c->sha1);
    EVP_MD_free(c->sha256);
    EVP_PKEY_CTX_free(c->keygen);
    EC_GROUP_free(c->group);
    free(c->buckets);
    free(c);
}
