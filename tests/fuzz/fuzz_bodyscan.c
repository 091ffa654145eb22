/* libFuzzer harness: bodyscan, the streaming body scanner, fed the way the HTTP layers feed it.
 * Input: byte 0 picks the mode, byte 1 the limits and the seed of the piece sizes, the rest is
 * the body.
 *   mode % 8: 0 identity, 1 gzip, 2 x-gzip, 3 deflate, 4 br, 5 "gzip, br", 6 "deflate, gzip"
 *             (zstd when mode & 0x80),
 *             7 the body is plain text that the harness itself encodes (gzip, deflate, raw
 *             deflate or br, by mode / 8 % 4) and feeds under that coding.
 * Invariants, besides the sanitizers: a scan never decodes past max_decoded or feeds past
 * max_encoded; MATCH names a set, DONE and MORE none; the capture is a prefix of the decoded
 * bytes (checked against identity input) and never longer than asked; and, for keyword-only
 * sets, the verdict is the same whatever the piece sizes — and equals a naive search of the
 * decoded text — for identity bodies and for the harness's own encodings (the window carries
 * every match across pieces and codings). */
#include <brotli/encode.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bodyscan.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static const char *const codings[] = {"",   "gzip",     "x-gzip",       "deflate",
                                      "br", "gzip, br", "deflate, gzip"};

static const char *const keywords[] = {"secret", "EXFIL-", "token"};
static const char *const regexes[] = {"a[bc]+d$", "(?i)tok[e3]n\\b", "x(?=y)", "^<html",
                                      "[0-9]{4}-[0-9]{4}"};

static struct bodyscan_patterns *kw_set, *re_set;

static void setup(void)
{
    char err[256];
    if (kw_set)
        return;
    kw_set = bodyscan_patterns_new();
    re_set = bodyscan_patterns_new();
    CHECK(kw_set && re_set);
    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++)
        CHECK(bodyscan_patterns_add_keyword(kw_set, keywords[i], strlen(keywords[i]), err,
                                            sizeof(err)) == 0);
    for (size_t i = 0; i < sizeof(regexes) / sizeof(regexes[0]); i++)
        CHECK(bodyscan_patterns_add_regex(re_set, regexes[i], err, sizeof(err)) == 0);
}

struct run {
    enum bodyscan_status st;
    int match;
    uint64_t decoded;
};

/* Scans data[0..n) fed in pieces from the seed (0: at once). */
static struct run scan(const char *coding, const struct bodyscan_patterns *const *sets,
                       size_t n_sets, const struct bodyscan_limits *lim, const uint8_t *data,
                       size_t n, unsigned seed, const uint8_t *plain, size_t plain_len)
{
    struct bodyscan *s = bodyscan_new(coding, sets, n_sets, lim);
    CHECK(s);
    size_t off = 0;
    while (off < n && bodyscan_status(s) == BODYSCAN_MORE) {
        seed = seed * 1103515245u + 12345u;
        size_t k = seed ? 1 + (seed >> 16) % 700 : n - off;
        k = k < n - off ? k : n - off;
        bodyscan_feed(s, data + off, k);
        off += k;
        CHECK(bodyscan_decoded(s) <= lim->max_decoded);
        CHECK(!lim->max_encoded || bodyscan_encoded(s) <= lim->max_encoded);
    }
    struct run r = {bodyscan_end(s), bodyscan_match(s), bodyscan_decoded(s)};
    CHECK(r.st != BODYSCAN_MORE);
    CHECK((r.st == BODYSCAN_MATCH) == (r.match >= 0 && (size_t)r.match < n_sets));
    size_t cap_len;
    const uint8_t *cap = bodyscan_captured(s, &cap_len);
    CHECK(cap_len <= lim->capture && cap_len <= r.decoded);
    if (plain)
        CHECK(cap_len <= plain_len && (cap_len == 0 || memcmp(cap, plain, cap_len) == 0));
    bodyscan_free(s);
    return r;
}

static uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* A naive ASCII-case-insensitive search of the keywords over p[0..n). */
static bool naive_keywords(const uint8_t *p, size_t n)
{
    for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]); k++) {
        size_t kl = strlen(keywords[k]);
        for (size_t i = 0; i + kl <= n; i++) {
            size_t j = 0;
            while (j < kl && lower(p[i + j]) == lower((uint8_t)keywords[k][j]))
                j++;
            if (j == kl)
                return true;
        }
    }
    return false;
}

/* The harness's own encodings, so that what was encoded is known. NULL when it fails. */
static uint8_t *encode(int how, const uint8_t *in, size_t n, size_t *out_len)
{
    if (how == 3) {
        size_t cap = BrotliEncoderMaxCompressedSize(n) + 16;
        uint8_t *out = malloc(cap);
        *out_len = cap;
        if (out && BrotliEncoderCompress(1, 16, BROTLI_MODE_GENERIC, n, in, out_len, out))
            return out;
        free(out);
        return NULL;
    }
    int bits = how == 0 ? 16 + 15 : how == 1 ? 15 : -15;
    z_stream z = {0};
    if (deflateInit2(&z, 1, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, n) + 16;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = out ? deflate(&z, Z_FINISH) : Z_MEM_ERROR;
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static void self_encoded(unsigned how, const struct bodyscan_limits *lim, const uint8_t *plain,
                         size_t n, unsigned seed)
{
    static const char *const names[] = {"gzip", "deflate", "deflate", "br"};
    const struct bodyscan_patterns *kw[] = {kw_set};
    size_t zlen;
    uint8_t *z = encode((int)how, plain, n, &zlen);
    if (!z)
        return;
    struct bodyscan_limits l = *lim;
    l.max_encoded = 0; /* the encoded size differs from the text's */
    struct run a = scan(names[how], kw, 1, &l, z, zlen, seed, plain, n);
    struct run b = scan(names[how], kw, 1, &l, z, zlen, 0, plain, n);
    size_t upto = n < l.max_decoded ? n : (size_t)l.max_decoded;
    CHECK(a.st == b.st);
    CHECK((a.st == BODYSCAN_MATCH) == naive_keywords(plain, upto));
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t maxes[] = {64, 1000, 4096, 20000, 1 << 20};
    setup();
    if (size < 2)
        return 0;
    unsigned mode = data[0], sel = data[1];
    const uint8_t *body = data + 2;
    size_t n = size - 2;
    struct bodyscan_limits lim = {.max_decoded = maxes[sel % 5],
                                  .max_encoded = (sel & 0x20) ? 3000 : 0,
                                  .capture = (sel & 0x40) ? 2048 : 0,
                                  .decoder_mem = (sel & 0x80) ? 256 * 1024 : 0};
    const struct bodyscan_patterns *both[] = {kw_set, re_set}, *kw[] = {kw_set};
    if (mode % 8 == 7) {
        self_encoded(mode / 8 % 4, &lim, body, n, sel | 1u);
        return 0;
    }
    const char *coding = (mode % 8 == 6 && (mode & 0x80)) ? "zstd" : codings[mode % 8];
    bool identity = mode % 8 == 0;
    scan(coding, both, 2, &lim, body, n, sel | 1u, identity ? body : NULL, n);
    if (!identity)
        return 0;
    /* keywords on identity bodies: the pieces do not matter, a naive search agrees */
    struct run a = scan(coding, kw, 1, &lim, body, n, sel | 1u, body, n);
    struct run b = scan(coding, kw, 1, &lim, body, n, 0, body, n);
    size_t upto = n;
    if (upto > lim.max_decoded)
        upto = (size_t)lim.max_decoded;
    if (lim.max_encoded && upto > lim.max_encoded)
        upto = (size_t)lim.max_encoded;
    CHECK(a.st == b.st);
    CHECK((a.st == BODYSCAN_MATCH) == naive_keywords(body, upto));
    return 0;
}
