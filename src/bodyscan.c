/* bodyscan: the streaming body scanner (bodyscan.h). Bytes fed go through a pipeline of
 * decoders (stage 0 undoes the last content coding listed), each writing pieces of at most
 * BODYSCAN_PIECE bytes on its stack and handing them to the next stage, and finally to the
 * sink, which appends the piece to a window that still holds the last BODYSCAN_WINDOW bytes
 * of the previous ones and matches every set over it. Regexes run with PCRE2_PARTIAL_HARD
 * except at the very end of the body, so that `$`, `\b` or a lookahead at the end of a piece
 * waits for the bytes after it instead of matching too early. */
#include "bodyscan.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <brotli/decode.h>
#include <zstd.h>
#include <zstd_errors.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define BS_DEFAULT_MAX (1u << 20)
#define BS_WORK_FACTOR 4       /* all stages together may produce this many times max_decoded */
#define BS_PARTIAL_RETRIES 4   /* complete matches looked for past a partial one, per piece */
#define BS_HEAP_LIMIT_KIB 4096 /* PCRE2 backtracking memory per match */
#define BS_DEPTH_LIMIT 100000u
#define BS_INPUT_SLICE (1u << 30) /* zlib counts input in 32 bits */

/* ---- patterns ---------------------------------------------------------------------------- */

struct bodyscan_patterns {
    char **kw; /* lower-cased */
    size_t *kw_len;
    size_t n_kw;
    pcre2_code **re;
    size_t n_re;
    pcre2_match_context *mctx;
};

struct bodyscan_patterns *bodyscan_patterns_new(void)
{
    struct bodyscan_patterns *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->mctx = pcre2_match_context_create(NULL);
    if (!p->mctx) {
        free(p);
        return NULL;
    }
    pcre2_set_match_limit(p->mctx, BODYSCAN_MATCH_LIMIT);
    pcre2_set_depth_limit(p->mctx, BS_DEPTH_LIMIT);
    pcre2_set_heap_limit(p->mctx, BS_HEAP_LIMIT_KIB);
    return p;
}

void bodyscan_patterns_free(struct bodyscan_patterns *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_kw; i++)
        free(p->kw[i]);
    free(p->kw);
    free(p->kw_len);
    for (size_t i = 0; i < p->n_re; i++)
        pcre2_code_free(p->re[i]);
    free(p->re);
    pcre2_match_context_free(p->mctx);
    free(p);
}

static unsigned char bs_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

int bodyscan_patterns_add_keyword(struct bodyscan_patterns *p, const char *kw, size_t len,
                                  char *err, size_t errlen)
{
    if (len == 0 || len > BODYSCAN_KEYWORD_MAX) {
        snprintf(err, errlen, "a keyword has 1 to %d bytes, this one %zu", BODYSCAN_KEYWORD_MAX,
                 len);
        return -1;
    }
    char *copy = malloc(len);
    char **kws = realloc(p->kw, (p->n_kw + 1) * sizeof(*kws));
    if (kws)
        p->kw = kws;
    size_t *lens = kws ? realloc(p->kw_len, (p->n_kw + 1) * sizeof(*lens)) : NULL;
    if (!copy || !lens) {
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->kw_len = lens;
    for (size_t i = 0; i < len; i++)
        copy[i] = (char)bs_lower((unsigned char)kw[i]);
    p->kw[p->n_kw] = copy;
    p->kw_len[p->n_kw++] = len;
    return 0;
}

int bodyscan_patterns_add_regex(struct bodyscan_patterns *p, const char *re, char *err,
                                size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    PCRE2_UCHAR msg[256];
    pcre2_code **res = realloc(p->re, (p->n_re + 1) * sizeof(*res));
    if (!res) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->re = res;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
    if (!c) {
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        snprintf(err, errlen, "%s at offset %zu", (const char *)msg, (size_t)offset);
        return -1;
    }
    /* interpreted when JIT is missing */
    (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    p->re[p->n_re++] = c;
    return 0;
}

void bodyscan_patterns_count(const struct bodyscan_patterns *p, size_t *keywords, size_t *regexes)
{
    *keywords = p->n_kw;
    *regexes = p->n_re;
}

/* ---- the scanner --------------------------------------------------------------------------- */

enum bs_coding { BS_GZIP, BS_DEFLATE, BS_BR, BS_ZSTD };

/* zstd: the largest window a body may ask for, 2^23 = 8 MiB, as RFC 9659 sets for HTTP; the
 * decoder then holds at most about that much plus its 160 KiB context. */
#define BS_ZSTD_WINDOW_LOG 23

struct bs_stage {
    enum bs_coding coding;
    bool started; /* the decoder is set up (deflate: after sniffing its first two bytes) */
    bool ended;   /* the compressed stream ended */
    bool fed;     /* some input arrived */
    uint8_t sniff[2];
    size_t sniff_len;
    z_stream z;
    BrotliDecoderState *br;
    ZSTD_DCtx *zs;
};

struct bodyscan {
    const struct bodyscan_patterns *sets[BODYSCAN_MAX_SETS];
    size_t n_sets;
    struct bs_stage stage[BODYSCAN_MAX_CODINGS];
    size_t n_stages;
    struct bodyscan_limits lim;
    enum bodyscan_status status;
    int match;
    bool truncated;
    const char *error;
    char errbuf[96];
    size_t max_kw;
    uint64_t fed, decoded, work;
    uint64_t dropped; /* decoded bytes no longer in the window: the window is not the start */
    uint8_t *win;     /* [carry | piece]: BODYSCAN_WINDOW + BODYSCAN_PIECE bytes */
    size_t win_len;
    uint8_t *cap;
    size_t cap_len, cap_size;
    pcre2_match_data *md;
    size_t dec_mem;
};

/* Decoder memory, counted against lim.decoder_mem. */
union bs_hdr {
    size_t n;
    max_align_t align;
};

static void *bs_alloc(struct bodyscan *s, size_t n)
{
    if (n > s->lim.decoder_mem || s->dec_mem > s->lim.decoder_mem - n)
        return NULL;
    union bs_hdr *h = malloc(sizeof(*h) + n);
    if (!h)
        return NULL;
    h->n = n;
    s->dec_mem += n;
    return h + 1;
}

static void bs_free_mem(struct bodyscan *s, void *p)
{
    if (!p)
        return;
    union bs_hdr *h = (union bs_hdr *)p - 1;
    s->dec_mem -= h->n;
    free(h);
}

static voidpf bs_zalloc(voidpf opaque, uInt items, uInt size)
{
    if (size && items > SIZE_MAX / size)
        return NULL;
    return bs_alloc(opaque, (size_t)items * size);
}

static void bs_zfree(voidpf opaque, voidpf p)
{
    bs_free_mem(opaque, p);
}

static void *bs_br_alloc(void *opaque, size_t n)
{
    return bs_alloc(opaque, n);
}

static void bs_br_free(void *opaque, void *p)
{
    bs_free_mem(opaque, p);
}

static void bs_fail(struct bodyscan *s, const char *why)
{
    if (s->status != BODYSCAN_MORE)
        return;
    s->error = why;
    s->status = BODYSCAN_DONE;
}

static void bs_limit(struct bodyscan *s)
{
    if (s->status != BODYSCAN_MORE)
        return;
    s->truncated = true;
    s->status = BODYSCAN_DONE;
}

/* ---- matching ---- */

/* The next position in [p, end) holding c in either case (c is lower case), or NULL. */
static const uint8_t *bs_next_first(const uint8_t *p, const uint8_t *end, uint8_t c)
{
    const uint8_t *a = memchr(p, c, (size_t)(end - p));
    uint8_t up = c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
    if (up == c)
        return a;
    const uint8_t *b = memchr(p, up, (size_t)((a ? a : end) - p));
    return b ? b : a;
}

static bool bs_has_keyword(const uint8_t *h, size_t n, const char *kw, size_t k)
{
    if (k > n)
        return false;
    const uint8_t *last = h + n - k + 1; /* one past the last possible start */
    for (const uint8_t *p = h; p < last; p++) {
        p = bs_next_first(p, last, (uint8_t)kw[0]);
        if (!p)
            return false;
        size_t i = 1;
        while (i < k && bs_lower(p[i]) == (uint8_t)kw[i])
            i++;
        if (i == k)
            return true;
    }
    return false;
}

/* One regex over win[0..len). In a piece (not at the end), a match that depends on bytes past
 * the end is partial and waits for the next piece; a complete match after a partial one is
 * looked for a few times. A match past PCRE2's limits counts as none. */
static bool bs_regex_find(struct bodyscan *s, const struct bodyscan_patterns *p,
                          const pcre2_code *re, size_t len, bool at_end)
{
    uint32_t opts = s->dropped ? PCRE2_NOTBOL : 0;
    if (!at_end)
        opts |= PCRE2_NOTEOL | PCRE2_PARTIAL_HARD;
    PCRE2_SIZE start = 0;
    for (int tries = 0; tries <= BS_PARTIAL_RETRIES && start <= len; tries++) {
        int rc = pcre2_match(re, s->win, len, start, opts, s->md, p->mctx);
        if (rc >= 0)
            return true;
        if (rc != PCRE2_ERROR_PARTIAL)
            return false;
        start = pcre2_get_ovector_pointer(s->md)[0] + 1;
    }
    return false;
}

/* True when set p matches the window, whose bytes from `fresh` on are new. */
static bool bs_set_matches(struct bodyscan *s, const struct bodyscan_patterns *p, size_t fresh,
                           size_t len, bool at_end)
{
    if (!at_end) {
        for (size_t i = 0; i < p->n_kw; i++) {
            size_t k = p->kw_len[i];
            size_t from = fresh >= k - 1 ? fresh - (k - 1) : 0;
            if (bs_has_keyword(s->win + from, len - from, p->kw[i], k))
                return true;
        }
    }
    for (size_t i = 0; i < p->n_re; i++)
        if (bs_regex_find(s, p, p->re[i], len, at_end))
            return true;
    return false;
}

static void bs_match_window(struct bodyscan *s, size_t fresh, size_t len, bool at_end)
{
    for (size_t i = 0; i < s->n_sets; i++) {
        if (bs_set_matches(s, s->sets[i], fresh, len, at_end)) {
            s->match = (int)i;
            s->status = BODYSCAN_MATCH;
            return;
        }
    }
}

static void bs_capture(struct bodyscan *s, const uint8_t *p, size_t n)
{
    if (s->cap_len >= s->lim.capture)
        return;
    if (n > s->lim.capture - s->cap_len)
        n = s->lim.capture - s->cap_len;
    if (s->cap_len + n > s->cap_size) {
        size_t size = s->cap_size ? s->cap_size : 4096;
        while (size < s->cap_len + n)
            size *= 2;
        if (size > s->lim.capture)
            size = s->lim.capture;
        uint8_t *c = realloc(s->cap, size);
        if (!c)
            return; /* the capture stays shorter; the scan goes on */
        s->cap = c;
        s->cap_size = size;
    }
    memcpy(s->cap + s->cap_len, p, n);
    s->cap_len += n;
}

/* Decoded bytes: matched piece by piece, up to max_decoded. */
static void bs_sink(struct bodyscan *s, const uint8_t *p, size_t n)
{
    while (n > 0 && s->status == BODYSCAN_MORE) {
        uint64_t room = s->lim.max_decoded - s->decoded;
        size_t k = n < BODYSCAN_PIECE ? n : BODYSCAN_PIECE;
        if (k > room)
            k = (size_t)room;
        bs_capture(s, p, k);
        memcpy(s->win + s->win_len, p, k);
        s->decoded += k;
        bs_match_window(s, s->win_len, s->win_len + k, false);
        s->win_len += k;
        if (s->win_len > BODYSCAN_WINDOW) {
            size_t drop = s->win_len - BODYSCAN_WINDOW;
            memmove(s->win, s->win + drop, BODYSCAN_WINDOW);
            s->win_len = BODYSCAN_WINDOW;
            s->dropped += drop;
        }
        if (s->decoded >= s->lim.max_decoded)
            bs_limit(s);
        p += k;
        n -= k;
    }
}

/* ---- decoding ---- */

static void bs_push(struct bodyscan *s, size_t i, const uint8_t *in, size_t n);

/* Output of stage i goes on to stage i + 1. What intermediate stages produce is bounded
 * too: a bomb inside a bomb must not cost more than a few times max_decoded. */
static void bs_stage_out(struct bodyscan *s, size_t i, const uint8_t *out, size_t n)
{
    if (i + 1 < s->n_stages) {
        s->work += n;
        if (s->work > BS_WORK_FACTOR * s->lim.max_decoded + BODYSCAN_PIECE) {
            bs_limit(s);
            return;
        }
    }
    bs_push(s, i + 1, out, n);
}

static int bs_zlib_init(struct bodyscan *s, struct bs_stage *st)
{
    int bits = MAX_WBITS;
    if (st->coding == BS_GZIP) {
        bits = 16 + MAX_WBITS;
    } else {
        /* RFC 9110 8.4.1.2 says zlib format; some servers send raw deflate. Tell them apart
         * by the zlib header: CM 8, CINFO <= 7, and the check bits. */
        unsigned b0 = st->sniff[0], b1 = st->sniff[1];
        bool zlib = (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
        bits = zlib ? MAX_WBITS : -MAX_WBITS;
    }
    st->z.zalloc = bs_zalloc;
    st->z.zfree = bs_zfree;
    st->z.opaque = s;
    if (inflateInit2(&st->z, bits) != Z_OK) {
        bs_fail(s, "out of memory for the decoder");
        return -1;
    }
    st->started = true;
    return 0;
}

/* After the end of a zlib stream: a gzip body may hold another member; anything else is
 * data the client would not see decoded the same way by every decoder. */
static bool bs_zlib_next_member(struct bodyscan *s, struct bs_stage *st)
{
    if (st->z.avail_in == 0)
        return false;
    if (st->coding != BS_GZIP || st->z.next_in[0] != 0x1f) {
        bs_fail(s, "data after the end of the compressed body");
        return false;
    }
    inflateReset(&st->z);
    st->ended = false;
    return true;
}

static void bs_zlib_run(struct bodyscan *s, size_t i, const uint8_t *in, size_t n)
{
    struct bs_stage *st = &s->stage[i];
    uint8_t out[BODYSCAN_PIECE];
    st->z.next_in = (Bytef *)in;
    st->z.avail_in = (uInt)n;
    while (s->status == BODYSCAN_MORE) {
        if (st->ended && !bs_zlib_next_member(s, st))
            return;
        st->z.next_out = out;
        st->z.avail_out = sizeof(out);
        int rc = inflate(&st->z, Z_NO_FLUSH);
        size_t got = sizeof(out) - st->z.avail_out;
        if (got)
            bs_stage_out(s, i, out, got);
        if (rc == Z_STREAM_END) {
            st->ended = true;
        } else if (rc == Z_MEM_ERROR) {
            bs_fail(s, "decoder memory limit");
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            bs_fail(s, st->coding == BS_GZIP ? "corrupt gzip data" : "corrupt deflate data");
        } else if (st->z.avail_in == 0 && st->z.avail_out != 0) {
            return;
        } else if (got == 0 && rc == Z_BUF_ERROR) {
            return;
        }
    }
}

/* deflate: the first two bytes decide between the zlib and the raw format. */
static void bs_deflate_sniff(struct bodyscan *s, size_t i, const uint8_t **in, size_t *n)
{
    struct bs_stage *st = &s->stage[i];
    while (st->sniff_len < 2 && *n > 0) {
        st->sniff[st->sniff_len++] = **in;
        (*in)++;
        (*n)--;
    }
    if (st->sniff_len < 2 || bs_zlib_init(s, st) != 0)
        return;
    bs_zlib_run(s, i, st->sniff, 2);
}

static bool bs_br_alloc_error(BrotliDecoderErrorCode e)
{
    return e <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
           e >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES;
}

static void bs_br_run(struct bodyscan *s, size_t i, const uint8_t *in, size_t n)
{
    struct bs_stage *st = &s->stage[i];
    uint8_t out[BODYSCAN_PIECE];
    while (s->status == BODYSCAN_MORE) {
        if (st->ended) {
            if (n)
                bs_fail(s, "data after the end of the compressed body");
            return;
        }
        uint8_t *next_out = out;
        size_t avail_out = sizeof(out);
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(st->br, &n, &in, &avail_out, &next_out, NULL);
        size_t got = sizeof(out) - avail_out;
        if (got)
            bs_stage_out(s, i, out, got);
        if (r == BROTLI_DECODER_RESULT_SUCCESS)
            st->ended = true;
        else if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT)
            return;
        else if (r == BROTLI_DECODER_RESULT_ERROR)
            bs_fail(s, bs_br_alloc_error(BrotliDecoderGetErrorCode(st->br))
                           ? "decoder memory limit"
                           : "corrupt brotli data");
    }
}

/* zstd: one or more frames; st->ended is true between frames. */
static void bs_zstd_run(struct bodyscan *s, size_t i, const uint8_t *in, size_t n)
{
    struct bs_stage *st = &s->stage[i];
    uint8_t out[BODYSCAN_PIECE];
    ZSTD_inBuffer ib = {in, n, 0};
    while (s->status == BODYSCAN_MORE) {
        ZSTD_outBuffer ob = {out, sizeof(out), 0};
        size_t rc = ZSTD_decompressStream(st->zs, &ob, &ib);
        if (ob.pos)
            bs_stage_out(s, i, out, ob.pos);
        if (ZSTD_isError(rc)) {
            bs_fail(s, ZSTD_getErrorCode(rc) == ZSTD_error_frameParameter_windowTooLarge
                           ? "zstd window larger than 8 MiB"
                           : "corrupt zstd data");
            return;
        }
        st->ended = rc == 0;
        if (ib.pos == ib.size && ob.pos < ob.size)
            return;
    }
}

/* Input for stage i (i == n_stages: decoded bytes for the sink). */
static void bs_push(struct bodyscan *s, size_t i, const uint8_t *in, size_t n)
{
    if (i == s->n_stages) {
        bs_sink(s, in, n);
        return;
    }
    struct bs_stage *st = &s->stage[i];
    while (n > 0 && s->status == BODYSCAN_MORE) {
        size_t k = n < BS_INPUT_SLICE ? n : BS_INPUT_SLICE;
        st->fed = true;
        if (st->coding == BS_BR) {
            bs_br_run(s, i, in, k);
        } else if (st->coding == BS_ZSTD) {
            bs_zstd_run(s, i, in, k);
        } else if (!st->started) {
            const uint8_t *p = in;
            size_t left = k;
            bs_deflate_sniff(s, i, &p, &left);
            if (st->started && left)
                bs_zlib_run(s, i, p, left);
        } else {
            bs_zlib_run(s, i, in, k);
        }
        in += k;
        n -= k;
    }
}

/* ---- set-up ---- */

/* One coding name of a Content-Encoding list into a stage; identity adds none. */
static int bs_add_coding(struct bodyscan *s, const char *name, size_t len)
{
    static const struct {
        const char *name;
        enum bs_coding coding;
    } known[] = {{"gzip", BS_GZIP}, {"x-gzip", BS_GZIP}, {"deflate", BS_DEFLATE}, {"br", BS_BR},
                 {"zstd", BS_ZSTD}};
    if (len == 8 && strncasecmp(name, "identity", 8) == 0)
        return 0;
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        if (strlen(known[k].name) != len || strncasecmp(name, known[k].name, len) != 0)
            continue;
        if (s->n_stages == BODYSCAN_MAX_CODINGS) {
            snprintf(s->errbuf, sizeof(s->errbuf), "more than %d content codings",
                     BODYSCAN_MAX_CODINGS);
            return -1;
        }
        s->stage[s->n_stages++].coding = known[k].coding;
        return 0;
    }
    snprintf(s->errbuf, sizeof(s->errbuf), "content coding '%.*s' is not supported",
             (int)(len > 32 ? 32 : len), name);
    return -1;
}

/* Parses "gzip, br" into stages, reversed: stage 0 undoes the coding applied last. */
static int bs_parse_encoding(struct bodyscan *s, const char *enc)
{
    const char *p = enc ? enc : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *b = p, *e = p + n;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > b && bs_add_coding(s, b, (size_t)(e - b)) != 0)
            return -1;
        p += n + (p[n] == ',');
    }
    for (size_t i = 0; i < s->n_stages / 2; i++) {
        enum bs_coding t = s->stage[i].coding;
        s->stage[i].coding = s->stage[s->n_stages - 1 - i].coding;
        s->stage[s->n_stages - 1 - i].coding = t;
    }
    return 0;
}

static int bs_start_decoders(struct bodyscan *s)
{
    for (size_t i = 0; i < s->n_stages; i++) {
        struct bs_stage *st = &s->stage[i];
        if (st->coding == BS_GZIP && bs_zlib_init(s, st) != 0)
            return -1;
        if (st->coding == BS_BR) {
            st->br = BrotliDecoderCreateInstance(bs_br_alloc, bs_br_free, s);
            if (!st->br)
                return -1;
            st->started = true;
        }
        if (st->coding == BS_ZSTD) {
            st->zs = ZSTD_createDCtx();
            if (!st->zs ||
                ZSTD_isError(ZSTD_DCtx_setParameter(st->zs, ZSTD_d_windowLogMax,
                                                    BS_ZSTD_WINDOW_LOG)))
                return -1;
            st->started = true;
        }
    }
    return 0;
}

struct bodyscan *bodyscan_new(const char *content_encoding,
                              const struct bodyscan_patterns *const *sets, size_t n_sets,
                              const struct bodyscan_limits *limits)
{
    if (n_sets > BODYSCAN_MAX_SETS)
        return NULL;
    struct bodyscan *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->lim = limits ? *limits : (struct bodyscan_limits){0};
    if (!s->lim.max_decoded)
        s->lim.max_decoded = BS_DEFAULT_MAX;
    if (!s->lim.decoder_mem)
        s->lim.decoder_mem = BODYSCAN_DECODER_MEM;
    s->match = -1;
    s->n_sets = n_sets;
    for (size_t i = 0; i < n_sets; i++)
        s->sets[i] = sets[i];
    s->win = malloc(BODYSCAN_WINDOW + BODYSCAN_PIECE);
    s->md = pcre2_match_data_create(1, NULL);
    if (!s->win || !s->md)
        goto fail;
    if (bs_parse_encoding(s, content_encoding) != 0) {
        s->n_stages = 0;
        bs_fail(s, s->errbuf);
        return s;
    }
    if (bs_start_decoders(s) != 0)
        goto fail;
    return s;
fail:
    bodyscan_free(s);
    return NULL;
}

void bodyscan_free(struct bodyscan *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_stages; i++) {
        if (s->stage[i].coding == BS_BR && s->stage[i].br)
            BrotliDecoderDestroyInstance(s->stage[i].br);
        else if (s->stage[i].coding == BS_ZSTD)
            ZSTD_freeDCtx(s->stage[i].zs);
        else if (s->stage[i].started)
            inflateEnd(&s->stage[i].z);
    }
    pcre2_match_data_free(s->md);
    free(s->win);
    free(s->cap);
    free(s);
}

enum bodyscan_status bodyscan_feed(struct bodyscan *s, const uint8_t *data, size_t len)
{
    if (s->status != BODYSCAN_MORE || len == 0)
        return s->status;
    if (s->lim.max_encoded && len > s->lim.max_encoded - s->fed)
        len = (size_t)(s->lim.max_encoded - s->fed);
    s->fed += len;
    bs_push(s, 0, data, len);
    if (s->lim.max_encoded && s->fed >= s->lim.max_encoded)
        bs_limit(s);
    return s->status;
}

enum bodyscan_status bodyscan_end(struct bodyscan *s)
{
    if (s->status != BODYSCAN_MORE)
        return s->status;
    for (size_t i = 0; i < s->n_stages; i++) {
        const struct bs_stage *st = &s->stage[i];
        if (st->fed && !st->ended) {
            s->error = "the compressed body ends early";
            break;
        }
    }
    bs_match_window(s, s->win_len, s->win_len, true);
    if (s->status == BODYSCAN_MORE)
        s->status = BODYSCAN_DONE;
    return s->status;
}

enum bodyscan_status bodyscan_status(const struct bodyscan *s)
{
    return s->status;
}

int bodyscan_match(const struct bodyscan *s)
{
    return s->match;
}

const char *bodyscan_error(const struct bodyscan *s)
{
    return s->error;
}

bool bodyscan_truncated(const struct bodyscan *s)
{
    return s->truncated;
}

uint64_t bodyscan_decoded(const struct bodyscan *s)
{
    return s->decoded;
}

uint64_t bodyscan_encoded(const struct bodyscan *s)
{
    return s->fed;
}

const uint8_t *bodyscan_captured(const struct bodyscan *s, size_t *len)
{
    *len = s->cap_len;
    return s->cap;
}

size_t bodyscan_memory(const struct bodyscan *s)
{
    return sizeof(*s) + BODYSCAN_WINDOW + BODYSCAN_PIECE + s->cap_size + s->dec_mem;
}
