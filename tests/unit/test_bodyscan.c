/* Unit tests for bodyscan: the streaming body scanner. Compressed bodies are made here with
 * zlib's and brotli's encoders; every test feeds them in pieces the way the network would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <brotli/encode.h>
#include <zstd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "bodyscan.h"

enum enc { E_IDENTITY, E_GZIP, E_ZLIB, E_RAW, E_BR, E_ZSTD, E_LAST = E_ZSTD };
static const char *const enc_name[] = {"", "gzip", "deflate", "deflate", "br", "zstd"};

struct buf {
    uint8_t *p;
    size_t len;
};

static struct buf deflate_with(const uint8_t *in, size_t n, int bits, int level)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, bits, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, n) + 64;
    struct buf b = {malloc(cap), 0};
    assert_non_null(b.p);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = b.p;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    b.len = cap - z.avail_out;
    deflateEnd(&z);
    return b;
}

static struct buf brotli_with(const uint8_t *in, size_t n, int quality, int lgwin)
{
    size_t cap = BrotliEncoderMaxCompressedSize(n) + 64;
    struct buf b = {malloc(cap), cap};
    assert_non_null(b.p);
    assert_true(BrotliEncoderCompress(quality, lgwin, BROTLI_MODE_TEXT, n, in, &b.len, b.p));
    return b;
}

/* One zstd frame with the given window (2^window_log bytes). */
static struct buf zstd_with(const uint8_t *in, size_t n, int window_log)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_non_null(cc);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, window_log)));
    size_t cap = ZSTD_compressBound(n) + 64;
    struct buf b = {malloc(cap), 0};
    assert_non_null(b.p);
    b.len = ZSTD_compress2(cc, b.p, cap, in, n);
    assert_false(ZSTD_isError(b.len));
    ZSTD_freeCCtx(cc);
    return b;
}

/* A zstd frame made by streaming, its size unknown: the window stays 2^window_log. */
static struct buf zstd_streamed(const uint8_t *in, size_t n, int window_log)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_non_null(cc);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, window_log)));
    size_t cap = ZSTD_compressBound(n) + 4096;
    struct buf b = {malloc(cap), 0};
    assert_non_null(b.p);
    ZSTD_outBuffer out = {b.p, cap, 0};
    ZSTD_inBuffer inb = {in, n, 0};
    assert_false(ZSTD_isError(ZSTD_compressStream2(cc, &out, &inb, ZSTD_e_continue)));
    size_t left;
    do {
        left = ZSTD_compressStream2(cc, &out, &inb, ZSTD_e_end);
        assert_false(ZSTD_isError(left));
    } while (left != 0);
    b.len = out.pos;
    ZSTD_freeCCtx(cc);
    return b;
}

static struct buf encode(enum enc e, const void *in, size_t n)
{
    switch (e) {
    case E_GZIP:
        return deflate_with(in, n, 16 + 15, 6);
    case E_ZLIB:
        return deflate_with(in, n, 15, 6);
    case E_RAW:
        return deflate_with(in, n, -15, 6);
    case E_BR:
        return brotli_with(in, n, 5, 22);
    case E_ZSTD:
        return zstd_with(in, n, 20);
    default: {
        struct buf b = {malloc(n ? n : 1), n};
        memcpy(b.p, in, n);
        return b;
    }
    }
}

/* Deterministic text-like filler without the letters of the test keywords' first bytes. */
static uint8_t *filler(size_t n, unsigned seed)
{
    static const char alphabet[] = "abcdfghijklmnopquvwxyz ,.\n0123456789";
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
    }
    return p;
}

struct sets {
    struct bodyscan_patterns *p[4];
    const struct bodyscan_patterns *c[4];
    size_t n;
};

static void sets_add(struct sets *s, const char *const *kws, const char *const *res)
{
    char err[256];
    struct bodyscan_patterns *p = bodyscan_patterns_new();
    assert_non_null(p);
    for (; kws && *kws; kws++)
        assert_int_equal(bodyscan_patterns_add_keyword(p, *kws, strlen(*kws), err, sizeof(err)), 0);
    for (; res && *res; res++)
        assert_int_equal(bodyscan_patterns_add_regex(p, *res, err, sizeof(err)), 0);
    s->p[s->n] = p;
    s->c[s->n++] = p;
}

static void sets_free(struct sets *s)
{
    for (size_t i = 0; i < s->n; i++)
        bodyscan_patterns_free(s->p[i]);
}

static struct sets keyword_set(const char *kw)
{
    struct sets s = {0};
    const char *k[] = {kw, NULL};
    sets_add(&s, k, NULL);
    return s;
}

static struct sets regex_set(const char *re)
{
    struct sets s = {0};
    const char *r[] = {re, NULL};
    sets_add(&s, NULL, r);
    return s;
}

/* Scans data fed in pieces of `step` bytes (0: at once) and ended; returns the status. */
static enum bodyscan_status scan(const struct sets *s, const char *enc, const uint8_t *data,
                                 size_t n, size_t step, const struct bodyscan_limits *lim,
                                 struct bodyscan **keep)
{
    struct bodyscan *b = bodyscan_new(enc, s->c, s->n, lim);
    assert_non_null(b);
    size_t off = 0;
    while (off < n && bodyscan_status(b) == BODYSCAN_MORE) {
        size_t k = step && n - off > step ? step : n - off;
        bodyscan_feed(b, data + off, k);
        off += k;
    }
    enum bodyscan_status st = bodyscan_end(b);
    if (keep)
        *keep = b;
    else
        bodyscan_free(b);
    return st;
}

/* Feeds data split in two at `at`, then ends. */
static enum bodyscan_status scan_split(const struct sets *s, const char *enc, const uint8_t *data,
                                       size_t n, size_t at)
{
    struct bodyscan *b = bodyscan_new(enc, s->c, s->n, NULL);
    assert_non_null(b);
    bodyscan_feed(b, data, at);
    bodyscan_feed(b, data + at, n - at);
    enum bodyscan_status st = bodyscan_end(b);
    bodyscan_free(b);
    return st;
}

static void test_keyword_any_case(void **state)
{
    struct sets s = keyword_set("SeCrEt-Token");
    const char *body = "<p>here is the secret-TOKEN of the day</p>";
    struct bodyscan *b;
    assert_int_equal(scan(&s, NULL, (const uint8_t *)body, strlen(body), 0, NULL, &b),
                     BODYSCAN_MATCH);
    assert_int_equal(bodyscan_match(b), 0);
    assert_null(bodyscan_error(b));
    bodyscan_free(b);
    const char *clean = "nothing to see: secret token, secret_token";
    assert_int_equal(scan(&s, "identity", (const uint8_t *)clean, strlen(clean), 0, NULL, NULL),
                     BODYSCAN_DONE);
    sets_free(&s);
}

/* Every encoding, the compressed bytes split in two at every offset. */
static void test_split_everywhere_each_encoding(void **state)
{
    struct sets s = keyword_set("exfiltrate-me");
    size_t n = 600;
    uint8_t *plain = filler(n, 7);
    memcpy(plain + 300, "ExFiltrate-ME", 13);
    for (enum enc e = E_IDENTITY; e <= E_LAST; e++) {
        struct buf z = encode(e, plain, n);
        for (size_t at = 0; at <= z.len; at++)
            assert_int_equal(scan_split(&s, enc_name[e], z.p, z.len, at), BODYSCAN_MATCH);
        assert_int_equal(scan(&s, enc_name[e], z.p, z.len, 1, NULL, NULL), BODYSCAN_MATCH);
        free(z.p);
    }
    memcpy(plain + 300, "exfiltrate_me", 13);
    for (enum enc e = E_IDENTITY; e <= E_LAST; e++) {
        struct buf z = encode(e, plain, n);
        for (size_t at = 0; at <= z.len; at += 7)
            assert_int_equal(scan_split(&s, enc_name[e], z.p, z.len, at), BODYSCAN_DONE);
        free(z.p);
    }
    free(plain);
    sets_free(&s);
}

/* Decoded pieces are BODYSCAN_PIECE bytes: a keyword and a regex match straddling each piece
 * boundary of a large decoded body are still found, for every encoding. */
static void test_match_across_decoded_pieces(void **state)
{
    struct sets kw = keyword_set("needle-in-hay");
    struct sets re = regex_set("nee+dle-[0-9]{3}-hay");
    size_t n = 3 * BODYSCAN_PIECE + 100;
    for (size_t at = BODYSCAN_PIECE - 12; at <= BODYSCAN_PIECE + 1; at++) {
        uint8_t *plain = filler(n, (unsigned)at);
        memcpy(plain + at, "needle-in-hay", 13);
        memcpy(plain + at + BODYSCAN_PIECE, "neeedle-123-hay", 15);
        for (enum enc e = E_IDENTITY; e <= E_LAST; e++) {
            struct buf z = encode(e, plain, n);
            assert_int_equal(scan(&kw, enc_name[e], z.p, z.len, 1000, NULL, NULL), BODYSCAN_MATCH);
            assert_int_equal(scan(&re, enc_name[e], z.p, z.len, 0, NULL, NULL), BODYSCAN_MATCH);
            free(z.p);
        }
        free(plain);
    }
    sets_free(&kw);
    sets_free(&re);
}

/* The window: a regex match of up to BODYSCAN_WINDOW bytes spanning two pieces is found. */
static void test_window_bounds_a_split_regex(void **state)
{
    struct sets re = regex_set("BEGIN[a-z ,.\\n0-9]*END");
    size_t n = 2 * BODYSCAN_PIECE;
    uint8_t *plain = filler(n, 3);
    size_t span = BODYSCAN_WINDOW - 100;
    memcpy(plain + BODYSCAN_PIECE - span / 2, "BEGIN", 5);
    memcpy(plain + BODYSCAN_PIECE + span / 2, "END", 3);
    assert_int_equal(scan(&re, NULL, plain, n, BODYSCAN_PIECE, NULL, NULL), BODYSCAN_MATCH);
    free(plain);
    sets_free(&re);
}

/* `$`, `\b` and lookaheads at the end of a piece wait for the next bytes; `$` matches at the
 * end of the body. */
static void test_anchors_at_piece_ends(void **state)
{
    struct sets dollar = regex_set("secret$");
    struct sets word = regex_set("secret\\b");
    struct sets ahead = regex_set("secret(?!s)");
    const uint8_t body[] = "here is a secrets list";
    size_t cut = 16; /* "here is a secret" | "s list" */
    for (size_t at = 0; at <= sizeof(body) - 1; at++) {
        assert_int_equal(scan_split(&dollar, NULL, body, sizeof(body) - 1, at), BODYSCAN_DONE);
        assert_int_equal(scan_split(&word, NULL, body, sizeof(body) - 1, at), BODYSCAN_DONE);
        assert_int_equal(scan_split(&ahead, NULL, body, sizeof(body) - 1, at), BODYSCAN_DONE);
    }
    assert_int_equal(scan_split(&dollar, NULL, body, cut, 5), BODYSCAN_MATCH);
    assert_int_equal(scan_split(&word, NULL, body, cut, 9), BODYSCAN_MATCH);
    struct sets caret = regex_set("^here");
    uint8_t *big = filler(BODYSCAN_PIECE * 2, 1);
    memcpy(big + BODYSCAN_PIECE + 10, "here", 4);
    assert_int_equal(scan(&caret, NULL, big, BODYSCAN_PIECE * 2, 0, NULL, NULL), BODYSCAN_DONE);
    memcpy(big, "here", 4);
    assert_int_equal(scan(&caret, NULL, big, BODYSCAN_PIECE * 2, 0, NULL, NULL), BODYSCAN_MATCH);
    free(big);
    sets_free(&dollar);
    sets_free(&word);
    sets_free(&ahead);
    sets_free(&caret);
}

/* A complete match after a partial one in the same piece is still found. */
static void test_complete_after_partial(void **state)
{
    struct sets re = regex_set("a[^z]*z|token");
    const uint8_t body[] = "a first then token then more";
    struct bodyscan *b = bodyscan_new(NULL, re.c, re.n, NULL);
    assert_int_equal(bodyscan_feed(b, body, sizeof(body) - 1), BODYSCAN_MATCH);
    bodyscan_free(b);
    sets_free(&re);
}

/* The first set (rule) that matches in a piece is reported. */
static void test_lowest_set_wins(void **state)
{
    struct sets s = {0};
    const char *k1[] = {"zebra", NULL}, *k2[] = {"apple", NULL}, *r3[] = {"ap+le", NULL};
    sets_add(&s, k1, NULL);
    sets_add(&s, k2, NULL);
    sets_add(&s, NULL, r3);
    struct bodyscan *b;
    const char *body = "an apple and a zebra";
    assert_int_equal(scan(&s, NULL, (const uint8_t *)body, strlen(body), 0, NULL, &b),
                     BODYSCAN_MATCH);
    assert_int_equal(bodyscan_match(b), 0);
    bodyscan_free(b);
    body = "an apple";
    assert_int_equal(scan(&s, NULL, (const uint8_t *)body, strlen(body), 0, NULL, &b),
                     BODYSCAN_MATCH);
    assert_int_equal(bodyscan_match(b), 1);
    bodyscan_free(b);
    sets_free(&s);
}

static void test_max_decoded(void **state)
{
    struct sets s = keyword_set("late-keyword");
    size_t n = 100000;
    uint8_t *plain = filler(n, 9);
    memcpy(plain + 50000, "late-keyword", 12);
    struct bodyscan_limits lim = {.max_decoded = 50000 + 11};
    for (enum enc e = E_IDENTITY; e <= E_LAST; e++) {
        struct buf z = encode(e, plain, n);
        struct bodyscan *b;
        assert_int_equal(scan(&s, enc_name[e], z.p, z.len, 4096, &lim, &b), BODYSCAN_DONE);
        assert_true(bodyscan_truncated(b));
        assert_int_equal(bodyscan_decoded(b), lim.max_decoded);
        bodyscan_free(b);
        lim.max_decoded++;
        assert_int_equal(scan(&s, enc_name[e], z.p, z.len, 4096, &lim, NULL), BODYSCAN_MATCH);
        lim.max_decoded--;
        free(z.p);
    }
    /* max_encoded stops at the bytes fed */
    struct bodyscan_limits enc = {.max_encoded = 1000};
    struct bodyscan *b;
    assert_int_equal(scan(&s, NULL, plain, n, 300, &enc, &b), BODYSCAN_DONE);
    assert_true(bodyscan_truncated(b));
    assert_int_equal(bodyscan_encoded(b), 1000);
    bodyscan_free(b);
    free(plain);
    sets_free(&s);
}

static void test_corrupt_input(void **state)
{
    struct sets s = keyword_set("x");
    uint8_t junk[512];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    static const char *const encs[] = {"gzip", "deflate", "br", "gzip, br"};
    for (size_t i = 0; i < sizeof(encs) / sizeof(encs[0]); i++) {
        struct bodyscan *b;
        assert_int_equal(scan(&s, encs[i], junk, sizeof(junk), 64, NULL, &b), BODYSCAN_DONE);
        assert_non_null(bodyscan_error(b));
        bodyscan_free(b);
    }
    /* a valid gzip body cut short: what was decoded is scanned, then "ends early" */
    size_t n = 20000;
    uint8_t *plain = filler(n, 5);
    memcpy(plain + 10, "xyzzy", 5);
    struct sets kw = keyword_set("xyzzy");
    struct buf z = encode(E_GZIP, plain, n);
    struct bodyscan *b;
    assert_int_equal(scan(&kw, "gzip", z.p, z.len - 20, 0, NULL, &b), BODYSCAN_MATCH);
    bodyscan_free(b);
    memcpy(plain + 10, "-----", 5);
    free(z.p);
    z = encode(E_GZIP, plain, n);
    assert_int_equal(scan(&kw, "gzip", z.p, z.len - 20, 0, NULL, &b), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "the compressed body ends early");
    bodyscan_free(b);
    free(z.p);
    free(plain);
    sets_free(&s);
    sets_free(&kw);
}

static void test_unsupported_codings(void **state)
{
    struct sets s = keyword_set("x");
    struct bodyscan *b = bodyscan_new("compress", s.c, s.n, NULL);
    assert_int_equal(bodyscan_status(b), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "content coding 'compress' is not supported");
    assert_int_equal(bodyscan_feed(b, (const uint8_t *)"xxx", 3), BODYSCAN_DONE);
    bodyscan_free(b);
    b = bodyscan_new("gzip, gzip, br, deflate", s.c, s.n, NULL);
    assert_int_equal(bodyscan_status(b), BODYSCAN_DONE);
    assert_non_null(bodyscan_error(b));
    bodyscan_free(b);
    b = bodyscan_new(" identity ,", s.c, s.n, NULL); /* identity and empty items: nothing */
    assert_int_equal(bodyscan_feed(b, (const uint8_t *)"x", 1), BODYSCAN_MATCH);
    bodyscan_free(b);
    sets_free(&s);
}

/* zstd: frames one after another are one body; a frame asking for a window over RFC 9659's
 * 8 MiB is not inspected (and says why); a cut frame ends early; garbage is corrupt. */
static void test_zstd_frames_window_and_cuts(void **state)
{
    struct sets s = keyword_set("zstd-secret");
    size_t n = 3000;
    uint8_t *plain = filler(n, 11);
    memcpy(plain + 2000, "zstd-SECRET", 11);
    struct buf a = zstd_with(plain, 1500, 20), c = zstd_with(plain + 1500, n - 1500, 20);
    uint8_t *two = malloc(a.len + c.len);
    assert_non_null(two);
    memcpy(two, a.p, a.len);
    memcpy(two + a.len, c.p, c.len);
    for (size_t at = 0; at <= a.len + c.len; at += 5)
        assert_int_equal(scan_split(&s, "zstd", two, a.len + c.len, at), BODYSCAN_MATCH);
    struct bodyscan *b;
    memcpy(plain + 2000, "zstd_secret", 11);
    struct buf whole = zstd_with(plain, n, 20);
    assert_int_equal(scan(&s, "zstd", whole.p, whole.len - 3, 0, NULL, &b), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "the compressed body ends early");
    bodyscan_free(b);
    uint8_t *big = calloc(1, 1 << 20);
    assert_non_null(big);
    struct buf wide = zstd_streamed(big, 1 << 20, 27); /* the header names a 128 MiB window */
    assert_int_equal(scan(&s, "zstd", wide.p, wide.len, 0, NULL, &b), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "zstd window larger than 8 MiB");
    bodyscan_free(b);
    assert_int_equal(scan(&s, "zstd", (const uint8_t *)"not zstd at all", 15, 0, NULL, &b),
                     BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "corrupt zstd data");
    bodyscan_free(b);
    free(big);
    free(wide.p);
    free(whole.p);
    free(two);
    free(a.p);
    free(c.p);
    free(plain);
    sets_free(&s);
}

/* "gzip, br": gzip was applied first, br last; both are undone. */
static void test_stacked_codings(void **state)
{
    struct sets s = keyword_set("two-layers");
    size_t n = 5000;
    uint8_t *plain = filler(n, 2);
    memcpy(plain + 2500, "two-layers", 10);
    struct buf g = encode(E_GZIP, plain, n);
    struct buf gb = encode(E_BR, g.p, g.len);
    for (size_t step = 1; step < 200; step += 37)
        assert_int_equal(scan(&s, "gzip, br", gb.p, gb.len, step, NULL, NULL), BODYSCAN_MATCH);
    assert_int_equal(scan(&s, "br, gzip", gb.p, gb.len, 0, NULL, NULL), BODYSCAN_DONE);
    free(g.p);
    free(gb.p);
    free(plain);
    sets_free(&s);
}

/* A gzip body of several members (concatenated files) is decoded whole. */
static void test_gzip_members(void **state)
{
    struct sets s = keyword_set("second-member");
    uint8_t *a = filler(3000, 1), *b2 = filler(3000, 2);
    memcpy(b2 + 1000, "second-member", 13);
    struct buf za = encode(E_GZIP, a, 3000), zb = encode(E_GZIP, b2, 3000);
    uint8_t *both = malloc(za.len + zb.len);
    memcpy(both, za.p, za.len);
    memcpy(both + za.len, zb.p, zb.len);
    for (size_t at = 0; at <= za.len + zb.len; at += 3)
        assert_int_equal(scan_split(&s, "x-gzip", both, za.len + zb.len, at), BODYSCAN_MATCH);
    /* trailing junk after a deflate stream: an error, but what came before was scanned */
    struct buf zd = encode(E_ZLIB, b2, 3000);
    uint8_t *tail = malloc(zd.len + 10);
    memcpy(tail, zd.p, zd.len);
    memset(tail + zd.len, 'J', 10);
    struct bodyscan *sc;
    assert_int_equal(scan(&s, "deflate", tail, zd.len + 10, 0, NULL, &sc), BODYSCAN_MATCH);
    bodyscan_free(sc);
    memcpy(b2 + 1000, "-------------", 13);
    free(zd.p);
    zd = encode(E_ZLIB, b2, 3000);
    memcpy(tail, zd.p, zd.len);
    assert_int_equal(scan(&s, "deflate", tail, zd.len + 10, 0, NULL, &sc), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(sc), "data after the end of the compressed body");
    bodyscan_free(sc);
    free(tail);
    free(zd.p);
    free(both);
    free(za.p);
    free(zb.p);
    free(a);
    free(b2);
    sets_free(&s);
}

static void test_empty_bodies(void **state)
{
    struct sets s = regex_set("^$");
    static const char *const encs[] = {"", "gzip", "deflate", "br"};
    for (size_t i = 0; i < 4; i++) {
        struct bodyscan *b = bodyscan_new(encs[i], s.c, s.n, NULL);
        assert_int_equal(bodyscan_end(b), BODYSCAN_MATCH); /* an empty body matches ^$ */
        assert_null(bodyscan_error(b));
        bodyscan_free(b);
    }
    sets_free(&s);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A bomb (100 MiB of zeros) costs max_decoded of work, for each encoding and stacked. */
static void test_bomb(void **state)
{
    struct sets s = keyword_set("never");
    size_t n = 100u << 20;
    uint8_t *zeros = calloc(1, n);
    assert_non_null(zeros);
    struct buf g = deflate_with(zeros, n, 16 + 15, 9);
    struct buf br = brotli_with(zeros, n, 5, 24);
    struct buf gbr = brotli_with(g.p, g.len, 5, 24);
    free(zeros);
    struct {
        const char *enc;
        struct buf *b;
    } bombs[] = {{"gzip", &g}, {"br", &br}, {"gzip, br", &gbr}};
    for (size_t i = 0; i < 3; i++) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct bodyscan *b;
        assert_int_equal(scan(&s, bombs[i].enc, bombs[i].b->p, bombs[i].b->len, 16384, NULL, &b),
                         BODYSCAN_DONE);
        assert_true(bodyscan_truncated(b));
        assert_int_equal(bodyscan_decoded(b), 1u << 20);
        /* gzip: its fixed state; brotli: a ring buffer as large as the 16 MiB window */
        assert_true(bodyscan_memory(b) < (i == 0 ? (1u << 20) : BODYSCAN_DECODER_MEM));
        assert_true(seconds_since(&t0) < 0.5);
        bodyscan_free(b);
    }
    free(g.p);
    free(br.p);
    free(gbr.p);
    sets_free(&s);
}

/* Brotli's ring buffer is bounded by decoder_mem: a stream that needs more is refused. */
static void test_decoder_memory_cap(void **state)
{
    struct sets s = keyword_set("marker-at-the-end");
    size_t n = 6u << 20;
    uint8_t *plain = filler(n, 4);
    memcpy(plain + n - 100, "marker-at-the-end", 17);
    struct buf z = brotli_with(plain, n, 2, 24);
    struct bodyscan_limits lim = {.max_decoded = n, .decoder_mem = 1u << 20};
    struct bodyscan *b;
    assert_int_equal(scan(&s, "br", z.p, z.len, 65536, &lim, &b), BODYSCAN_DONE);
    assert_string_equal(bodyscan_error(b), "decoder memory limit");
    bodyscan_free(b);
    lim.decoder_mem = 0; /* the default cap is enough for a 16 MiB window */
    assert_int_equal(scan(&s, "br", z.p, z.len, 65536, &lim, &b), BODYSCAN_MATCH);
    assert_true(bodyscan_memory(b) <= BODYSCAN_DECODER_MEM + 64 * 1024);
    bodyscan_free(b);
    free(z.p);
    free(plain);
    sets_free(&s);
}

static void test_capture(void **state)
{
    struct sets s = keyword_set("zzz-never");
    size_t n = 50000;
    uint8_t *plain = filler(n, 8);
    struct buf z = encode(E_GZIP, plain, n);
    struct bodyscan_limits lim = {.capture = 10000};
    struct bodyscan *b;
    assert_int_equal(scan(&s, "gzip", z.p, z.len, 777, &lim, &b), BODYSCAN_DONE);
    size_t len;
    const uint8_t *cap = bodyscan_captured(b, &len);
    assert_int_equal(len, 10000);
    assert_memory_equal(cap, plain, 10000);
    bodyscan_free(b);
    lim.capture = 0;
    assert_int_equal(scan(&s, "gzip", z.p, z.len, 0, &lim, &b), BODYSCAN_DONE);
    assert_null(bodyscan_captured(b, &len));
    assert_int_equal(len, 0);
    bodyscan_free(b);
    free(z.p);
    free(plain);
    sets_free(&s);
}

static void test_pattern_errors(void **state)
{
    char err[256];
    struct bodyscan_patterns *p = bodyscan_patterns_new();
    assert_int_equal(bodyscan_patterns_add_regex(p, "a(b", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "offset"));
    assert_int_equal(bodyscan_patterns_add_keyword(p, "", 0, err, sizeof(err)), -1);
    char big[BODYSCAN_KEYWORD_MAX + 1];
    memset(big, 'k', sizeof(big));
    assert_int_equal(bodyscan_patterns_add_keyword(p, big, sizeof(big), err, sizeof(err)), -1);
    assert_int_equal(bodyscan_patterns_add_keyword(p, big, sizeof(big) - 1, err, sizeof(err)), 0);
    size_t k, r;
    bodyscan_patterns_count(p, &k, &r);
    assert_int_equal(k, 1);
    assert_int_equal(r, 0);
    bodyscan_patterns_free(p);
}

/* A keyword as long as the window limit, split anywhere across two pieces. */
static void test_long_keyword_split(void **state)
{
    char kw[BODYSCAN_KEYWORD_MAX];
    for (size_t i = 0; i < sizeof(kw); i++)
        kw[i] = (char)('A' + i % 26);
    struct sets s = {0};
    struct bodyscan_patterns *p = bodyscan_patterns_new();
    char err[128];
    assert_int_equal(bodyscan_patterns_add_keyword(p, kw, sizeof(kw), err, sizeof(err)), 0);
    s.p[0] = p;
    s.c[0] = p;
    s.n = 1;
    size_t n = BODYSCAN_PIECE + 2 * sizeof(kw);
    uint8_t *plain = filler(n, 6);
    for (size_t at = BODYSCAN_PIECE - sizeof(kw) + 1; at < BODYSCAN_PIECE; at += 61) {
        uint8_t *copy = malloc(n);
        memcpy(copy, plain, n);
        for (size_t i = 0; i < sizeof(kw); i++)
            copy[at + i] = (uint8_t)(kw[i] | 0x20); /* lower case in the body */
        assert_int_equal(scan(&s, NULL, copy, n, 0, NULL, NULL), BODYSCAN_MATCH);
        assert_int_equal(scan(&s, NULL, copy, n, 1000, NULL, NULL), BODYSCAN_MATCH);
        free(copy);
    }
    free(plain);
    sets_free(&s);
}

/* Regression (found by fuzz_bodyscan): a decoder's first 16 KiB piece counted against the
 * limit meant for stacked codings, so a max_decoded under 4 KiB stopped every compressed body
 * before its first byte was scanned. */
static void test_regression_small_max_with_compressed_piece(void **state)
{
    struct sets s = keyword_set("token");
    size_t n = 20000;
    uint8_t *plain = filler(n, 11);
    memcpy(plain + 100, "token", 5);
    struct bodyscan_limits lim = {.max_decoded = 1000};
    for (enum enc e = E_GZIP; e <= E_BR; e++) {
        struct buf z = encode(e, plain, n);
        assert_int_equal(scan(&s, enc_name[e], z.p, z.len, 0, &lim, NULL), BODYSCAN_MATCH);
        free(z.p);
    }
    free(plain);
    sets_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyword_any_case),
        cmocka_unit_test(test_split_everywhere_each_encoding),
        cmocka_unit_test(test_match_across_decoded_pieces),
        cmocka_unit_test(test_window_bounds_a_split_regex),
        cmocka_unit_test(test_anchors_at_piece_ends),
        cmocka_unit_test(test_complete_after_partial),
        cmocka_unit_test(test_lowest_set_wins),
        cmocka_unit_test(test_max_decoded),
        cmocka_unit_test(test_corrupt_input),
        cmocka_unit_test(test_unsupported_codings),
        cmocka_unit_test(test_stacked_codings),
        cmocka_unit_test(test_zstd_frames_window_and_cuts),
        cmocka_unit_test(test_gzip_members),
        cmocka_unit_test(test_empty_bodies),
        cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_decoder_memory_cap),
        cmocka_unit_test(test_capture),
        cmocka_unit_test(test_pattern_errors),
        cmocka_unit_test(test_long_keyword_split),
        cmocka_unit_test(test_regression_small_max_with_compressed_piece),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
