/* http1: streaming HTTP/1.1 inspector for one intercepted connection (see http1.h and
 * docs/HTTP1.md). http-parser tokenises each head; a strict rescan of the complete head adds the
 * checks http-parser leaves out; bodies are framed here, byte-exact, so that nothing ambiguous
 * is ever forwarded. */
#include "http1.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define H1_CHUNK_LINE_MAX 4096                  /* a chunk-size line with its extensions */
#define H1_CHUNK_SIZE_MAX (UINT64_C(1) << 60)   /* larger chunk sizes are refused */
#define H1_CL_MAX UINT64_C(1000000000000000000) /* Content-Length above 10^18 is refused */
#define H1_STR_INLINE 160                       /* authority + path kept inside the record */
#define H1_CTYPE_MAX 128
#define H1_PAGE_MAX 8192          /* body of a gateway reply */
#define H1_AUTHORITY_MAX 262      /* 255-byte name, ':', 5-digit port, brackets */
#define H1_HOLD_SLACK (64 * 1024) /* framing a held body may add beyond twice its payload */

/* Where a side is in its byte stream. */
enum h1_state {
    S_HEAD = 0,      /* between messages, or inside a head (http-parser runs) */
    S_BODY,          /* Content-Length body: `remaining` bytes left */
    S_CHUNK_SIZE,    /* chunk-size hex digits */
    S_CHUNK_BWS,     /* whitespace after the size: only ';' may follow */
    S_CHUNK_EXT,     /* chunk extensions, up to CR */
    S_CHUNK_SIZE_LF, /* CR seen at the end of the size line */
    S_CHUNK_DATA,    /* `remaining` bytes of chunk data */
    S_CHUNK_DATA_CR, /* CRLF after chunk data */
    S_CHUNK_DATA_LF,
    S_TRAILER_START, /* start of a trailer line, or of the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_TRAILER_END_LF,
    S_BODY_EOF, /* server: body delimited by the server closing */
    S_STALLED,  /* client: bytes held unparsed until the server answers */
    S_DEAD,     /* refused, closed or finished: bytes are discarded */
};

/* Exchange record flags. */
enum {
    R_REQ_DONE = 1 << 0,     /* request message complete, refused, or cut by the client */
    R_RESP_DONE = 1 << 1,    /* final response complete */
    R_RESP_STARTED = 1 << 2, /* a final response head went to the client */
    R_UPGRADE = 1 << 3,      /* asks to switch protocols; the server has not answered yet */
    R_REFUSED = 1 << 4,      /* refused by the gateway: a reply is owed to the client */
    R_PARSED = 1 << 5,       /* the request line parsed: method and version are valid */
    R_REQ_CUT = 1 << 6,      /* the client closed in the middle of the request body */
};

struct h1_buf {
    uint8_t *p;
    size_t len, cap;
};

/* Body inspection of a side's current message (struct http1_body_plan). While holding, the
 * message's head and body bytes read so far are in the side's hold. */
struct h1_body {
    void *state;   /* the hook's; NULL: not (or no longer) inspected */
    uint64_t hold; /* payload bytes to inspect before the message goes on */
    uint64_t seen; /* payload bytes given to on_body */
    bool holding;
};

/* Payload bytes found by one body_feed call. */
struct h1_span {
    size_t off, len;
};

struct h1_side {
    http_parser hp;     /* head parser, re-initialised for every message */
    uint8_t state;      /* enum h1_state */
    bool in_head;       /* hp holds a head in progress */
    uint32_t line;      /* bytes of the current chunk-size line, or of the trailer section */
    uint64_t remaining; /* Content-Length or chunk bytes left; the chunk size being read */
    struct h1_buf hold; /* an incomplete head, or (client) bytes held while stalled */
    struct h1_buf pend; /* released bytes the relay still has to send: pend.p[pend_off..] */
    size_t pend_off;
    int64_t head_start_us;
};

/* One request/response exchange in flight. Records are moved within the FIFO, so the strings
 * are found through rec_authority() rather than stored pointers into inl. */
struct h1_rec {
    int64_t start_us, end_us;
    uint64_t req_bytes, resp_bytes;
    const char *why; /* static: why it was refused or cut */
    char *heap;      /* authority\0path\0 when they do not fit in inl */
    unsigned seq;
    uint32_t alen; /* authority length */
    uint16_t status, upstream_status;
    uint16_t flags; /* R_* */
    uint8_t method, http_minor;
    uint8_t end; /* enum http1_end, once decided */
    char inl[H1_STR_INLINE];
};

struct http1 {
    const struct http1_hooks *hooks;
    void *arg;
    struct h1_side side[2];
    /* FIFO of exchanges in request order: rec0 is the front (the one a response answers), the
     * rest live in `more` only while requests are pipelined. */
    struct h1_rec rec0;
    struct h1_rec *more;
    unsigned n_recs, more_cap;
    unsigned seq;
    bool client_refused; /* the back record is refused; the client side is dead */
    bool tunnel, closed;
    uint16_t gw_status; /* the status of the reply owed to a refused client */
    const char *error;
    char ctype[H1_CTYPE_MAX]; /* Content-Type of the front record's final response */
    char upgrade[32];
    char rule[64], ref[48];
    uint8_t *reply;
    size_t reply_len;
    struct h1_body body[2]; /* per side: the request or response body being read */
};

/* One feeding call: buf[emit..fwd) is forwardable, either as the *forward prefix (emit == 0)
 * or, in to_pend mode, appended to the side's pending queue when the call ends. */
struct h1_feed {
    const uint8_t *buf;
    size_t len, pos;
    size_t emit, fwd;
    bool to_pend;
    bool stop;
};

/* A complete head in contiguous memory: in the caller's chunk, or in the side's hold. */
struct h1_head {
    const char *p;
    size_t n;
    bool held;
};

/* What the rescan of a head found. */
struct h1_scan {
    struct http1_header *hdr;
    size_t n;
    const char *line; /* the start line, without CRLF */
    size_t line_len;
    const char *host, *ctype, *upgrade;
    size_t host_len, ctype_len, upgrade_len;
    unsigned n_host, n_cl, n_ctype, te_n_chunked;
    uint64_t cl;
    bool te, te_last_chunked, ctype_conflict;
    bool expect_continue; /* Expect: 100-continue */
    int status;           /* status for a refused request: 400, or 431 */
};

/* ---- character classes ---------------------------------------------------------------- */

enum { C_TCHAR = 1, C_VCHAR = 2, C_WS = 4, C_REGNAME = 8, C_HEX = 16 };

/* tchar; VCHAR or obs-text; SP/HTAB; reg-name (unreserved, pct, sub-delims); hex digit. */
/* clang-format off */
static const uint8_t h1_cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    4,  11, 2,  3,  11, 11, 11, 11, 10, 10, 11, 11, 10, 11, 11, 2,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 2,  10, 2,  10, 2,  2,
    2,  27, 27, 27, 27, 27, 27, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 2,  2,  2,  3,  11,
    3,  27, 27, 27, 27, 27, 27, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 2,  3,  2,  11, 0,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};
/* clang-format on */

static inline bool is_cls(char c, unsigned cls)
{
    return (h1_cls[(unsigned char)c] & cls) != 0;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool span_eq_ci(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && strncasecmp(a, b, an) == 0;
}

#define SPAN_IS(p, n, lit) span_eq_ci(p, n, lit, sizeof(lit) - 1)

/* ---- buffers ----------------------------------------------------------------------------- */

static int buf_append(struct h1_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_free(struct h1_buf *b)
{
    free(b->p);
    *b = (struct h1_buf){0};
}

static size_t pend_count(const struct h1_side *s)
{
    return s->pend.len - s->pend_off;
}

static void pend_clear(struct h1_side *s)
{
    buf_free(&s->pend);
    s->pend_off = 0;
}

/* Moves the hold into the pending queue (the buffer itself when the queue is empty). */
static int pend_take_hold(struct h1_side *s)
{
    if (pend_count(s) == 0) {
        pend_clear(s);
        s->pend = s->hold;
        s->hold = (struct h1_buf){0};
        return 0;
    }
    int rc = buf_append(&s->pend, s->hold.p, s->hold.len);
    buf_free(&s->hold);
    return rc;
}

static int64_t h1_now(const struct http1 *h)
{
    if (h->hooks && h->hooks->now_us)
        return h->hooks->now_us(h->arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- exchange records -------------------------------------------------------------------- */

static struct h1_rec *rec_at(struct http1 *h, unsigned i)
{
    return i == 0 ? &h->rec0 : &h->more[i - 1];
}

static struct h1_rec *rec_back(struct http1 *h)
{
    return h->n_recs ? rec_at(h, h->n_recs - 1) : NULL;
}

/* The record the server's next response answers, or NULL when none is outstanding. */
static struct h1_rec *rec_awaiting(struct http1 *h)
{
    return h->n_recs && !(h->rec0.flags & R_RESP_DONE) ? &h->rec0 : NULL;
}

static const char *rec_authority(const struct h1_rec *r)
{
    return r->heap ? r->heap : r->inl;
}

static const char *rec_path(const struct h1_rec *r)
{
    return rec_authority(r) + r->alen + 1;
}

/* Appends a zeroed record; NULL when out of memory. One more than HTTP1_MAX_INFLIGHT fits, for
 * the refused request that may follow a full pipeline. */
static struct h1_rec *rec_push(struct http1 *h)
{
    if (h->n_recs > HTTP1_MAX_INFLIGHT)
        return NULL;
    if (h->n_recs >= 1 && h->n_recs > h->more_cap) {
        unsigned cap = h->more_cap ? h->more_cap * 2 : 2;
        if (cap > HTTP1_MAX_INFLIGHT)
            cap = HTTP1_MAX_INFLIGHT;
        struct h1_rec *m = realloc(h->more, cap * sizeof(*m));
        if (!m)
            return NULL;
        h->more = m;
        h->more_cap = cap;
    }
    struct h1_rec *r = rec_at(h, h->n_recs++);
    memset(r, 0, sizeof(*r));
    r->seq = ++h->seq;
    return r;
}

/* Copies authority and path ("/" prepended when slash) into the record. */
static int rec_set_strs(struct h1_rec *r, const char *a, size_t alen, const char *p, size_t plen,
                        bool slash)
{
    size_t need = alen + 1 + slash + plen + 1;
    char *d = r->inl;
    if (need > sizeof(r->inl)) {
        d = malloc(need);
        if (!d)
            return -1;
        r->heap = d;
    }
    memcpy(d, a, alen);
    d[alen] = '\0';
    char *q = d + alen + 1;
    if (slash)
        *q++ = '/';
    memcpy(q, p, plen);
    q[plen] = '\0';
    r->alen = (uint32_t)alen;
    return 0;
}

static void rec_view(const struct http1 *h, const struct h1_rec *r, struct http1_exchange *x)
{
    bool front = r == &h->rec0;
    *x = (struct http1_exchange){
        .seq = r->seq,
        .method = (r->flags & R_PARSED) ? http_method_str(r->method) : "",
        .scheme = "https",
        .authority = rec_authority(r),
        .path = rec_path(r),
        .http_minor = r->http_minor,
        .status = r->status,
        .upstream_status = r->upstream_status,
        .content_type = front && r->upstream_status ? h->ctype : "",
        .req_bytes = r->req_bytes,
        .resp_bytes = r->resp_bytes,
        .start_us = r->start_us,
        .end_us = r->end_us,
        .end = (enum http1_end)r->end,
        .upgrade = r->end == HTTP1_END_UPGRADED ? h->upgrade : "",
        .rule = r->end == HTTP1_END_BLOCKED ? h->rule : "",
        .ref = r->end == HTTP1_END_BLOCKED ? h->ref : "",
        .error = r->why ? r->why : "",
    };
}

/* Reports the front record to on_exchange and drops it. */
static void rec_finish(struct http1 *h, enum http1_end end)
{
    struct h1_rec *r = &h->rec0;
    r->end = (uint8_t)end;
    r->end_us = h1_now(h);
    if (h->hooks && h->hooks->on_exchange) {
        struct http1_exchange x;
        rec_view(h, r, &x);
        h->hooks->on_exchange(h->arg, &x);
    }
    free(r->heap);
    r->heap = NULL;
    if (h->n_recs > 1) {
        h->rec0 = h->more[0];
        memmove(h->more, h->more + 1, (h->n_recs - 2) * sizeof(*h->more));
    }
    if (--h->n_recs <= 1) {
        free(h->more);
        h->more = NULL;
        h->more_cap = 0;
    }
}

/* ---- body inspection: the hook's state ----------------------------------------------------- */

static bool body_hooked(const struct http1 *h)
{
    return h->hooks && h->hooks->body_begin && h->hooks->on_body && h->hooks->body_end;
}

/* Ends the inspection of side's body: the hook frees its state. */
static void body_stop(struct http1 *h, enum http1_side side)
{
    void *state = h->body[side].state;
    h->body[side].state = NULL;
    if (state)
        h->hooks->body_end(h->arg, state);
}

/* Forgets side's body entirely (the caller dropped or released the hold). */
static void body_reset(struct http1 *h, enum http1_side side)
{
    body_stop(h, side);
    h->body[side] = (struct h1_body){0};
}

/* ---- gateway replies --------------------------------------------------------------------- */

struct h1_out {
    char *p;
    size_t len, cap;
};

static void out_raw(struct h1_out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len)
        n = o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(struct h1_out *o, const char *s)
{
    out_raw(o, s, strlen(s));
}

static void out_html(struct h1_out *o, const char *s)
{
    for (; *s; s++) {
        const char *e = *s == '<'    ? "&lt;"
                        : *s == '>'  ? "&gt;"
                        : *s == '&'  ? "&amp;"
                        : *s == '"'  ? "&quot;"
                        : *s == '\'' ? "&#39;"
                                     : NULL;
        if (e)
            out_str(o, e);
        else
            out_raw(o, s, 1);
    }
}

static size_t default_block_page(const struct http1_exchange *x, char *buf, size_t cap)
{
    struct h1_out o = {buf, 0, cap};
    out_str(&o, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Blocked</title>"
                "</head>\n<body><h1>Blocked by the gateway</h1>\n<p>The request to <b>");
    out_html(&o, x->authority);
    out_str(&o, "</b> is not allowed by this network's policy.</p>\n");
    if (x->rule[0]) {
        out_str(&o, "<p>Rule: <code>");
        out_html(&o, x->rule);
        out_str(&o, "</code></p>\n");
    }
    if (x->ref[0]) {
        out_str(&o, "<p>Reference: <code>");
        out_html(&o, x->ref);
        out_str(&o, "</code></p>\n");
    }
    out_str(&o, "</body></html>\n");
    return o.len;
}

/* Builds the reply for status (403: the block page for r; others: a short text naming why).
 * The body is left out when r is a HEAD request. */
static void reply_build(struct http1 *h, const struct h1_rec *r, int status, const char *why)
{
    char body[H1_PAGE_MAX];
    size_t blen = 0;
    const char *ctype = "text/plain; charset=utf-8";
    if (status == 403 && r) {
        struct http1_exchange x;
        rec_view(h, r, &x);
        x.end = HTTP1_END_BLOCKED;
        x.rule = h->rule;
        x.ref = h->ref;
        x.status = 403;
        if (h->hooks && h->hooks->block_page)
            blen = h->hooks->block_page(h->arg, &x, body, sizeof(body));
        if (blen == 0 || blen > sizeof(body))
            blen = default_block_page(&x, body, sizeof(body));
        ctype = "text/html; charset=utf-8";
    } else {
        int n = snprintf(body, sizeof(body), "%d %s: %s\n", status,
                         http_status_str((enum http_status)status), why ? why : "");
        blen = n > 0 ? (size_t)n : 0;
    }
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                      status, http_status_str((enum http_status)status), ctype, blen);
    if (r && (r->flags & R_PARSED) && r->method == HTTP_HEAD)
        blen = 0;
    free(h->reply);
    h->reply_len = 0;
    h->reply = malloc((size_t)hn + blen);
    if (!h->reply)
        return;
    memcpy(h->reply, head, (size_t)hn);
    memcpy(h->reply + hn, body, blen);
    h->reply_len = (size_t)hn + blen;
}

static void set_error(struct http1 *h, const char *why)
{
    if (!h->error && why)
        h->error = why;
}

/* Ends inspection: the relay sends the reply (status 0: none) and closes. Bytes not yet sent
 * to the server are dropped; those owed to the client (server-side pending) are kept. */
static void h1_close(struct http1 *h, const struct h1_rec *r, int status, const char *why)
{
    set_error(h, why);
    if (status)
        reply_build(h, r, status, why);
    h->closed = true;
    for (int i = 0; i < 2; i++) {
        h->side[i].state = S_DEAD;
        buf_free(&h->side[i].hold);
        body_reset(h, (enum http1_side)i);
    }
    pend_clear(&h->side[HTTP1_CLIENT]);
}

/* A refused client request is answered once every earlier exchange has its response relayed;
 * if its own response was relayed instead (the server answered early), the connection just
 * closes. Returns true when that happened now. */
static bool refusal_due(struct http1 *h)
{
    if (!h->client_refused || h->closed)
        return false;
    if (h->n_recs == 0) {
        h1_close(h, NULL, 0, NULL);
        return true;
    }
    struct h1_rec *r = &h->rec0;
    if (h->n_recs > 1 || (r->flags & R_RESP_STARTED))
        return false;
    r->status = h->gw_status;
    h1_close(h, r, h->gw_status, r->why);
    rec_finish(h, (enum http1_end)r->end);
    return true;
}

/* ---- heads ------------------------------------------------------------------------------- */

static int on_headers_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* stop on the final LF: bodies are framed here */
    return 0;
}

static const http_parser_settings h1_settings = {.on_headers_complete = on_headers_complete};

static const char *parser_error(enum http_errno e, int *status)
{
    switch (e) {
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return "Content-Length with Transfer-Encoding, or repeated Content-Length";
    case HPE_INVALID_CONTENT_LENGTH:
        return "invalid Content-Length";
    case HPE_LF_EXPECTED:
        return "bare CR in head";
    case HPE_INVALID_HEADER_TOKEN:
        return "invalid character in a header";
    case HPE_INVALID_METHOD:
        return "unknown request method";
    case HPE_INVALID_VERSION:
        return "invalid HTTP version";
    case HPE_INVALID_STATUS:
        return "invalid status code";
    case HPE_HEADER_OVERFLOW:
        *status = 431;
        return "head too large";
    default:
        return http_errno_description(e);
    }
}

enum { HEAD_MORE, HEAD_DONE, HEAD_ERROR };

/* Runs side s's head parser over the rest of f. HEAD_DONE: *hd is the complete head (through
 * its final LF), f->pos is past it. HEAD_MORE: the rest of f was copied into the hold.
 * HEAD_ERROR: *why and *status (400 or 431) say why. */
static int head_step(struct h1_side *s, struct h1_feed *f, struct h1_head *hd, const char **why,
                     int *status)
{
    const uint8_t *p = f->buf + f->pos;
    size_t avail = f->len - f->pos;
    size_t n = http_parser_execute(&s->hp, &h1_settings, (const char *)p, avail);
    enum http_errno e = HTTP_PARSER_ERRNO(&s->hp);
    if (e != HPE_OK && e != HPE_PAUSED) {
        *why = parser_error(e, status);
        return HEAD_ERROR;
    }
    size_t used = e == HPE_PAUSED ? n + 1 : avail; /* paused on the final LF: count it */
    if (s->hold.len + used > HTTP1_MAX_HEAD) {
        *status = 431;
        *why = "head too large";
        return HEAD_ERROR;
    }
    if (e == HPE_OK || s->hold.len) {
        if (buf_append(&s->hold, p, used) != 0) {
            *status = 503;
            *why = "out of memory";
            return HEAD_ERROR;
        }
    }
    f->pos += used;
    if (e == HPE_OK)
        return HEAD_MORE;
    if (s->hold.len)
        *hd = (struct h1_head){(const char *)s->hold.p, s->hold.len, true};
    else
        *hd = (struct h1_head){(const char *)p, used, false};
    return HEAD_DONE;
}

/* The complete head in *hd may be forwarded. A head that began in an earlier chunk goes out as
 * pending bytes, and so does everything forwardable after it in this chunk (to_pend mode),
 * which keeps *forward a prefix of the caller's chunk. */
static int feed_release_head(struct h1_side *s, struct h1_feed *f, const struct h1_head *hd)
{
    if (!hd->held) {
        f->fwd = f->pos;
        return 0;
    }
    /* what was forwardable before the hold goes first (a body hold may end in the chunk its
     * head completed in, after the end of an earlier message) */
    if (f->fwd > f->emit && buf_append(&s->pend, f->buf + f->emit, f->fwd - f->emit) != 0)
        return -1;
    f->to_pend = true;
    f->emit = f->fwd = f->pos;
    return pend_take_hold(s);
}

static const char *te_list(const struct http1_header *hd, struct h1_scan *sc)
{
    const char *v = hd->value, *end = v + hd->value_len;
    sc->te = true;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *e = comma ? comma : end;
        while (v < e && is_cls(*v, C_WS))
            v++;
        const char *te = e;
        while (te > v && is_cls(te[-1], C_WS))
            te--;
        if (te > v) {
            for (const char *c = v; c < te; c++)
                if (!is_cls(*c, C_TCHAR))
                    return "invalid Transfer-Encoding";
            sc->te_last_chunked = SPAN_IS(v, (size_t)(te - v), "chunked");
            sc->te_n_chunked += sc->te_last_chunked;
        }
        v = comma ? comma + 1 : end;
    }
    return NULL;
}

static const char *content_length(const struct http1_header *hd, struct h1_scan *sc)
{
    if (sc->n_cl++)
        return "repeated Content-Length";
    if (hd->value_len == 0)
        return "invalid Content-Length";
    uint64_t v = 0;
    for (size_t i = 0; i < hd->value_len; i++) {
        char c = hd->value[i];
        if (c < '0' || c > '9')
            return "invalid Content-Length";
        if (v >= H1_CL_MAX / 10)
            return "Content-Length too large";
        v = v * 10 + (uint64_t)(c - '0');
    }
    sc->cl = v;
    return NULL;
}

/* The meaning of the few headers that frame or name a message. */
static const char *header_semantics(const struct http1_header *hd, struct h1_scan *sc)
{
    const char *n = hd->name;
    size_t nl = hd->name_len;
    if (SPAN_IS(n, nl, "host")) {
        if (sc->n_host++ == 0) {
            sc->host = hd->value;
            sc->host_len = hd->value_len;
        }
    } else if (SPAN_IS(n, nl, "content-length")) {
        return content_length(hd, sc);
    } else if (SPAN_IS(n, nl, "transfer-encoding")) {
        return te_list(hd, sc);
    } else if (SPAN_IS(n, nl, "content-type")) {
        if (sc->n_ctype++ == 0) {
            sc->ctype = hd->value;
            sc->ctype_len = hd->value_len;
        } else if (!span_eq_ci(sc->ctype, sc->ctype_len, hd->value, hd->value_len)) {
            sc->ctype_conflict = true;
        }
    } else if (SPAN_IS(n, nl, "upgrade") && !sc->upgrade) {
        sc->upgrade = hd->value;
        sc->upgrade_len = hd->value_len;
    } else if (SPAN_IS(n, nl, "expect")) {
        sc->expect_continue = SPAN_IS(hd->value, hd->value_len, "100-continue");
    }
    return NULL;
}

static const char *header_line(const char *line, size_t ll, struct h1_scan *sc)
{
    if (is_cls(line[0], C_WS))
        return "obsolete line folding in a header";
    size_t c = 0;
    while (c < ll && is_cls(line[c], C_TCHAR))
        c++;
    if (c == 0 || c == ll || line[c] != ':')
        return "invalid header name";
    size_t v = c + 1, ve = ll;
    while (v < ve && is_cls(line[v], C_WS))
        v++;
    while (ve > v && is_cls(line[ve - 1], C_WS))
        ve--;
    for (size_t k = v; k < ve; k++)
        if (!is_cls(line[k], C_VCHAR | C_WS))
            return "invalid character in a header value";
    if (sc->n == HTTP1_MAX_HEADERS) {
        sc->status = 431;
        return "too many header lines";
    }
    struct http1_header *hd = &sc->hdr[sc->n++];
    *hd = (struct http1_header){line, line + v, c, ve - v};
    return header_semantics(hd, sc);
}

/* Rescans a complete head that http-parser accepted: lines end in CRLF (no bare CR or LF), no
 * obs-fold, header names are tokens, values are visible characters; collects the headers. */
static const char *head_scan(const char *p, size_t n, struct h1_scan *sc)
{
    size_t i = 0;
    while (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n')
        i += 2; /* empty lines before a message are allowed (RFC 9112 2.2) */
    bool first = true;
    while (i < n) {
        const char *lf = memchr(p + i, '\n', n - i);
        if (!lf)
            break;
        size_t e = (size_t)(lf - p);
        if (e == i || p[e - 1] != '\r')
            return "bare LF in head";
        const char *line = p + i;
        size_t ll = e - 1 - i;
        i = e + 1;
        if (first) {
            if (memchr(line, '\r', ll)) /* header lines: their byte checks refuse CR */
                return "bare CR in head";
            sc->line = line;
            sc->line_len = ll;
            first = false;
        } else if (ll == 0) {
            return i == n ? NULL : "bytes after the end of the head";
        } else {
            const char *why = header_line(line, ll, sc);
            if (why)
                return why;
        }
    }
    return "head without an empty line";
}

/* Body framing shared by both directions (RFC 9112 6): a Transfer-Encoding must end in a single
 * chunked and come alone, in HTTP/1.1; the result must agree with what http-parser saw. */
static const char *framing_check(const struct h1_side *s, const struct h1_scan *sc)
{
    bool chunked = sc->te && sc->te_last_chunked && sc->te_n_chunked == 1;
    if (sc->te && sc->n_cl)
        return "Content-Length with Transfer-Encoding";
    if (sc->te && s->hp.http_minor == 0)
        return "Transfer-Encoding in an HTTP/1.0 message";
    if (sc->te && !chunked)
        return "Transfer-Encoding other than a final chunked";
    if (chunked != !!(s->hp.flags & F_CHUNKED))
        return "ambiguous Transfer-Encoding";
    if (sc->n_cl && (!(s->hp.flags & F_CONTENTLENGTH) || s->hp.content_length != sc->cl))
        return "ambiguous Content-Length";
    return NULL;
}

/* ---- bodies ------------------------------------------------------------------------------ */

/* One byte of a chunk trailer section. */
static const char *trailer_byte(struct h1_side *s, uint8_t c, bool *end)
{
    if (++s->line > HTTP1_MAX_HEAD)
        return "trailers too large";
    switch (s->state) {
    case S_TRAILER_START:
        if (c == '\r')
            s->state = S_TRAILER_END_LF;
        else if (is_cls((char)c, C_TCHAR))
            s->state = S_TRAILER_NAME;
        else
            return is_cls((char)c, C_WS) ? "obsolete line folding in a trailer"
                                         : "invalid trailer field";
        return NULL;
    case S_TRAILER_NAME:
        if (c == ':')
            s->state = S_TRAILER_VALUE;
        else if (!is_cls((char)c, C_TCHAR))
            return "invalid trailer field name";
        return NULL;
    case S_TRAILER_VALUE:
        if (c == '\r')
            s->state = S_TRAILER_LF;
        else if (!is_cls((char)c, C_VCHAR | C_WS))
            return "invalid character in a trailer";
        return NULL;
    case S_TRAILER_LF:
    case S_TRAILER_END_LF:
        if (c != '\n')
            return "bare CR in a trailer";
        *end = s->state == S_TRAILER_END_LF;
        s->state = S_TRAILER_START;
        return NULL;
    default:
        return "internal state error";
    }
}

/* One byte of chunk framing outside chunk data: the size line (hex digits, then optional
 * extensions that may hold no control character), the CRLF after data, the trailers. Returns
 * why the byte is refused, or NULL; *end is set on the message's last byte. */
static const char *chunk_byte(struct h1_side *s, uint8_t c, bool *end)
{
    int d = hexval(c);
    switch (s->state) {
    case S_CHUNK_SIZE:
        if (d >= 0 && s->remaining >= H1_CHUNK_SIZE_MAX >> 4)
            return "chunk size too large";
        if (d >= 0)
            s->remaining = s->remaining * 16 + (unsigned)d;
        else if (s->line == 0 || (c != ';' && c != ' ' && c != '\t' && c != '\r'))
            return "invalid chunk size";
        else
            s->state = c == ';' ? S_CHUNK_EXT : c == '\r' ? S_CHUNK_SIZE_LF : S_CHUNK_BWS;
        return ++s->line > H1_CHUNK_LINE_MAX ? "chunk line too long" : NULL;
    case S_CHUNK_BWS: /* RFC 9112 7.1.1: BWS may only precede ';' */
        if (c == ';')
            s->state = S_CHUNK_EXT;
        else if (c != ' ' && c != '\t')
            return "invalid chunk extension";
        return ++s->line > H1_CHUNK_LINE_MAX ? "chunk line too long" : NULL;
    case S_CHUNK_EXT:
        if (c == '\r')
            s->state = S_CHUNK_SIZE_LF;
        else if (!is_cls((char)c, C_VCHAR | C_WS))
            return "control character in a chunk extension";
        return ++s->line > H1_CHUNK_LINE_MAX ? "chunk line too long" : NULL;
    case S_CHUNK_SIZE_LF:
        if (c != '\n')
            return "bare CR in a chunk line";
        s->line = 0;
        s->state = s->remaining ? S_CHUNK_DATA : S_TRAILER_START;
        return NULL;
    case S_CHUNK_DATA_CR:
        s->state = S_CHUNK_DATA_LF;
        return c == '\r' ? NULL : "chunk data not followed by CRLF";
    case S_CHUNK_DATA_LF:
        s->state = S_CHUNK_SIZE;
        return c == '\n' ? NULL : "chunk data not followed by CRLF";
    default:
        return trailer_byte(s, c, end);
    }
}

/* Advances the body decoder of s over buf[*pos..len), adding payload bytes to *payload.
 * Returns 1 when the message ended (*pos just past it), 0 when it needs more, -1 on a framing
 * error (*why; *pos at the offending byte). With data (the body is inspected), it stops after
 * the first span of payload, which *data names. Data is skipped by count; chunk lines and trailers
 * are checked byte by byte as they stream, so a line that a lenient server would split
 * differently is refused before its end can reach the server. */
static int body_feed(struct h1_side *s, const uint8_t *buf, size_t len, size_t *pos,
                     uint64_t *payload, const char **why, struct h1_span *data)
{
    size_t i = *pos;
    bool end = false;
    while (i < len && !end) {
        if (s->state == S_BODY || s->state == S_CHUNK_DATA) {
            size_t n = len - i < s->remaining ? len - i : (size_t)s->remaining;
            if (data)
                *data = (struct h1_span){i, n};
            i += n;
            s->remaining -= n;
            *payload += n;
            if (s->remaining == 0 && s->state == S_CHUNK_DATA)
                s->state = S_CHUNK_DATA_CR;
            else
                end = s->remaining == 0;
            if (data && n)
                break; /* one span at a time: the caller inspects it */
            continue;
        }
        *why = chunk_byte(s, buf[i], &end);
        if (*why) {
            *pos = i;
            return -1;
        }
        i++;
    }
    *pos = i;
    return end;
}

/* ---- body inspection: delivering and holding ----------------------------------------------- */

/* Offers side's message, whose head was just allowed and whose body follows, to body_begin. */
static void body_begin(struct http1 *h, const struct http1_body_info *info)
{
    struct h1_body *bd = &h->body[info->side];
    body_reset(h, info->side);
    if (!body_hooked(h))
        return;
    struct http1_body_plan plan = {0};
    h->hooks->body_begin(h->arg, info, &plan);
    if (!plan.body)
        return;
    bd->state = plan.body;
    bd->hold = plan.hold < ((uint64_t)1 << 40) ? plan.hold : (uint64_t)1 << 40;
    bd->holding = plan.hold > 0;
}

/* Starts holding side's message at its complete head (in the hold already, or copied there
 * from the chunk): nothing of it is forwarded yet. */
static int body_hold_head(struct h1_side *s, const struct h1_head *hd)
{
    return hd->held ? 0 : buf_append(&s->hold, hd->p, hd->n);
}

/* Gives payload p[0..n) of side's body, and its end, to on_body. BLOCK copies the rule and
 * reference; BLOCK, DONE and the end stop the inspection. Returns the verdict (DONE at the
 * end). */
static int body_deliver(struct http1 *h, enum http1_side side, const uint8_t *p, size_t n, bool end)
{
    struct h1_body *bd = &h->body[side];
    if (!bd->state || (n == 0 && !end))
        return HTTP1_BODY_MORE;
    struct http1_block blk = {0};
    int v = h->hooks->on_body(h->arg, bd->state, p, n, end, &blk);
    bd->seen += n;
    if (v == HTTP1_BODY_BLOCK) {
        snprintf(h->rule, sizeof(h->rule), "%s", blk.rule ? blk.rule : "");
        snprintf(h->ref, sizeof(h->ref), "%s", blk.ref ? blk.ref : "");
        body_stop(h, side);
        return v;
    }
    if (v == HTTP1_BODY_DONE || end) {
        body_stop(h, side);
        return HTTP1_BODY_DONE;
    }
    return HTTP1_BODY_MORE;
}

/* The held message goes on: the hold becomes pending bytes, followed by what is forwardable
 * after it in this chunk (f may be a feed of no bytes). */
static int body_release(struct http1 *h, enum http1_side side, struct h1_feed *f)
{
    h->body[side].holding = false;
    if (side == HTTP1_SERVER) {
        h->rec0.status = h->rec0.upstream_status;
        h->rec0.flags |= R_RESP_STARTED;
    }
    struct h1_head hd = {.held = true};
    return feed_release_head(&h->side[side], f, &hd);
}

/* Bytes buf[start..f->pos) of side's message were read: kept in the hold while the message is
 * held, else forwardable. The hold ends when enough was inspected, the inspection or the body
 * ended, or the held bytes reached their bound. */
static int body_after_step(struct http1 *h, enum http1_side side, struct h1_feed *f, size_t start,
                           bool end)
{
    struct h1_body *bd = &h->body[side];
    struct h1_side *s = &h->side[side];
    if (!bd->holding) {
        f->fwd = f->pos;
        return 0;
    }
    if (buf_append(&s->hold, f->buf + start, f->pos - start) != 0)
        return -1;
    if (end || !bd->state || bd->seen >= bd->hold || s->hold.len >= 2 * bd->hold + H1_HOLD_SLACK)
        return body_release(h, side, f);
    return 0;
}

/* ---- the client side --------------------------------------------------------------------- */

static void client_run(struct http1 *h, struct h1_feed *f);

/* The client's request is refused: r gets the status it will be answered with, the client side
 * is dead, and the rest of the input is discarded. refusal_due() sends the reply in order. */
static void client_refuse(struct http1 *h, struct h1_feed *f, struct h1_rec *r, int status,
                          enum http1_end end, const char *why)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    r->flags = (uint16_t)((r->flags | R_REFUSED | R_REQ_DONE) & ~R_UPGRADE);
    r->end = (uint8_t)end;
    r->why = why;
    h->gw_status = (uint16_t)status;
    set_error(h, why);
    h->client_refused = true;
    s->state = S_DEAD;
    s->in_head = false;
    buf_free(&s->hold);
    body_reset(h, HTTP1_CLIENT);
    f->stop = true;
}

/* A refusal that has no parsed request to attach to (a broken head, too much held data). */
static void client_refuse_new(struct http1 *h, struct h1_feed *f, int status, const char *why)
{
    struct h1_rec *r = rec_push(h);
    if (!r) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    r->start_us = h->side[HTTP1_CLIENT].head_start_us;
    client_refuse(h, f, r, status, HTTP1_END_BAD_REQUEST, why);
}

/* True while a new request must wait: the pipeline is full, or the last request asked to switch
 * protocols and the server has not answered (what follows may not be HTTP at all). */
static bool client_must_stall(struct http1 *h)
{
    struct h1_rec *b = rec_back(h);
    return h->n_recs >= HTTP1_MAX_INFLIGHT || (b && (b->flags & R_UPGRADE));
}

static void client_message_done(struct http1 *h)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    struct h1_rec *r = rec_back(h);
    body_reset(h, HTTP1_CLIENT);
    r->flags |= R_REQ_DONE;
    s->state = S_HEAD;
    s->in_head = false;
    if (r->flags & R_RESP_DONE) /* the server answered before the body ended: r is the front */
        rec_finish(h, HTTP1_END_COMPLETE);
}

static bool authority_valid(const char *a, size_t n)
{
    size_t i = 0;
    if (n == 0 || n > H1_AUTHORITY_MAX)
        return false;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (!rb || rb == a + 1)
            return false;
        for (const char *c = a + 1; c < rb; c++)
            if (!is_cls(*c, C_HEX) && *c != ':' && *c != '.')
                return false;
        i = (size_t)(rb - a) + 1;
    } else {
        while (i < n && a[i] != ':' && is_cls(a[i], C_REGNAME))
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (a[i] != ':' || n - i < 2 || n - i > 6)
        return false;
    for (i++; i < n; i++)
        if (a[i] < '0' || a[i] > '9')
            return false;
    return true;
}

/* Same authority, ignoring case and an explicit default port. */
static bool authority_same(const char *a, size_t an, const char *b, size_t bn)
{
    if (an > 4 && memcmp(a + an - 4, ":443", 4) == 0)
        an -= 4;
    if (bn > 4 && memcmp(b + bn - 4, ":443", 4) == 0)
        bn -= 4;
    return span_eq_ci(a, an, b, bn);
}

struct h1_target {
    const char *auth, *path;
    size_t alen, plen;
    bool slash; /* absolute-form without a path: the path is "/" + query */
};

/* Splits an absolute-form target (https://host[:port]/path?query) into authority and path. */
static const char *target_absolute(const char *t, size_t tl, struct h1_target *tg)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(t, tl, 0, &u) != 0 || !(u.field_set & (1 << UF_SCHEMA)) ||
        !(u.field_set & (1 << UF_HOST)))
        return "invalid request target";
    const char *scheme = t + u.field_data[UF_SCHEMA].off;
    size_t sl = u.field_data[UF_SCHEMA].len;
    if (!SPAN_IS(scheme, sl, "https") && !SPAN_IS(scheme, sl, "http"))
        return "request target with a scheme other than https";
    if (u.field_set & (1 << UF_USERINFO))
        return "user information in the request target";
    tg->auth = t + sl + 3; /* after "://" */
    if (u.field_set & (1 << UF_PATH)) {
        tg->path = t + u.field_data[UF_PATH].off;
    } else if (u.field_set & (1 << UF_QUERY)) {
        tg->path = t + u.field_data[UF_QUERY].off - 1; /* "?query" */
        tg->slash = true;
    } else {
        tg->path = "/";
        tg->plen = 1;
        tg->alen = (size_t)(t + tl - tg->auth);
        return NULL;
    }
    tg->alen = (size_t)(tg->path - tg->auth);
    tg->plen = (size_t)(t + tl - tg->path);
    return NULL;
}

/* Checks the request line and target against http-parser's reading; finds authority and path. */
static const char *request_target(const struct h1_side *s, const struct h1_scan *sc,
                                  struct h1_target *tg, int *status)
{
    const char *m = http_method_str((enum http_method)s->hp.method);
    size_t ml = strlen(m), n = sc->line_len;
    const char *l = sc->line;
    if (s->hp.http_major != 1 || s->hp.http_minor > 1) {
        *status = 505;
        return "unsupported HTTP version";
    }
    if (n < ml + 11 || memcmp(l, m, ml) != 0 || l[ml] != ' ' ||
        memcmp(l + n - 9, " HTTP/1.", 8) != 0 || l[n - 1] != '0' + s->hp.http_minor)
        return "malformed request line";
    const char *t = l + ml + 1;
    size_t tl = n - ml - 10;
    if (memchr(t, ' ', tl))
        return "malformed request line";
    if (memchr(t, '#', tl))
        return "fragment in the request target";
    *tg = (struct h1_target){0};
    if (s->hp.method == HTTP_CONNECT) {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (!authority_valid(t, tl) || http_parser_parse_url(t, tl, 1, &u) != 0 ||
            !(u.field_set & (1 << UF_PORT)))
            return "CONNECT target is not host:port";
        tg->auth = t;
        tg->alen = tl;
        tg->path = "";
    } else if (t[0] == '/') {
        tg->path = t;
        tg->plen = tl;
    } else if (tl == 1 && t[0] == '*') {
        if (s->hp.method != HTTP_OPTIONS)
            return "asterisk target outside OPTIONS";
        tg->path = t;
        tg->plen = 1;
    } else {
        const char *why = target_absolute(t, tl, tg);
        if (why)
            return why;
        if (!authority_valid(tg->auth, tg->alen))
            return "invalid authority in the request target";
    }
    return NULL;
}

/* Host rules (RFC 9112 3.2): exactly one in HTTP/1.1, valid, and naming the same authority as
 * an absolute-form or CONNECT target, so that policy and server see the same host. */
static const char *request_host(const struct h1_side *s, const struct h1_scan *sc,
                                struct h1_target *tg)
{
    if (sc->n_host > 1)
        return "more than one Host header";
    if (sc->n_host == 0) {
        if (s->hp.http_minor == 1)
            return "missing Host header";
        if (!tg->auth)
            tg->auth = "";
        return NULL;
    }
    if (!authority_valid(sc->host, sc->host_len))
        return "invalid Host header";
    if (tg->auth && !authority_same(tg->auth, tg->alen, sc->host, sc->host_len))
        return "Host header does not match the request target";
    if (!tg->auth) {
        tg->auth = sc->host;
        tg->alen = sc->host_len;
    }
    return NULL;
}

static const char *request_check(const struct h1_side *s, const struct h1_scan *sc,
                                 struct h1_target *tg, int *status)
{
    const char *why = request_target(s, sc, tg, status);
    if (!why)
        why = request_host(s, sc, tg);
    if (!why)
        why = framing_check(s, sc);
    if (!why && s->hp.method == HTTP_CONNECT && (sc->te || sc->cl > 0))
        why = "CONNECT with a body";
    return why;
}

/* What the hooks see of a request head. */
static struct http1_request_info request_info(const struct h1_rec *r, const struct h1_side *s,
                                              const struct h1_scan *sc)
{
    return (struct http1_request_info){
        .seq = r->seq,
        .method = http_method_str(r->method),
        .scheme = "https",
        .authority = rec_authority(r),
        .path = rec_path(r),
        .http_minor = r->http_minor,
        .content_length = sc->te ? -1 : (int64_t)sc->cl,
        .upgrade = s->hp.upgrade,
        .headers = sc->hdr,
        .n_headers = sc->n,
    };
}

/* Asks on_request; true when it blocked (rule and ref copied). */
static bool ask_request(struct http1 *h, const struct h1_rec *r, const struct h1_side *s,
                        const struct h1_scan *sc)
{
    if (!h->hooks || !h->hooks->on_request)
        return false;
    struct http1_request_info info = request_info(r, s, sc);
    struct http1_block blk = {0};
    if (h->hooks->on_request(h->arg, &info, &blk) != HTTP1_BLOCK)
        return false;
    snprintf(h->rule, sizeof(h->rule), "%s", blk.rule ? blk.rule : "");
    snprintf(h->ref, sizeof(h->ref), "%s", blk.ref ? blk.ref : "");
    return true;
}

/* An allowed request head goes on, unless its body is to be inspected first: then it is held
 * with the body, and a client waiting for `100 Continue` gets one from the gateway when no
 * earlier response is in the way (the server's own 100 may follow: clients take several). */
static int client_head_go(struct http1 *h, struct h1_feed *f, const struct h1_head *hd,
                          const struct h1_rec *r, const struct h1_scan *sc)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT], *srv = &h->side[HTTP1_SERVER];
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (sc->te || (sc->cl > 0 && s->hp.method != HTTP_CONNECT)) {
        struct http1_request_info req = request_info(r, s, sc);
        body_begin(h, &(struct http1_body_info){.side = HTTP1_CLIENT, .req = &req});
    }
    if (!h->body[HTTP1_CLIENT].holding)
        return feed_release_head(s, f, hd);
    if (body_hold_head(s, hd) != 0)
        return -1;
    if (sc->expect_continue && h->n_recs == 1 && r->http_minor == 1 && srv->state == S_HEAD &&
        !srv->in_head && pend_count(srv) == 0)
        return buf_append(&srv->pend, cont, sizeof(cont) - 1);
    return 0;
}

static void client_head_done(struct http1 *h, struct h1_feed *f, const struct h1_head *hd)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    struct http1_header hdrs[HTTP1_MAX_HEADERS];
    struct h1_scan sc = {.hdr = hdrs, .status = 400};
    struct h1_target tg = {0};
    struct h1_rec *r = rec_push(h);
    s->in_head = false;
    if (!r) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    r->start_us = s->head_start_us;
    r->method = (uint8_t)s->hp.method;
    r->http_minor = (uint8_t)s->hp.http_minor;
    r->flags |= R_PARSED;
    int status = 400;
    const char *why = head_scan(hd->p, hd->n, &sc);
    if (why)
        status = sc.status;
    else
        why = request_check(s, &sc, &tg, &status);
    if (!why && rec_set_strs(r, tg.auth, tg.alen, tg.path, tg.plen, tg.slash) != 0) {
        status = 503;
        why = "out of memory";
    }
    if (why) {
        client_refuse(h, f, r, status, HTTP1_END_BAD_REQUEST, why);
        return;
    }
    if (ask_request(h, r, s, &sc)) {
        client_refuse(h, f, r, 403, HTTP1_END_BLOCKED, "request blocked by policy");
        return;
    }
    if (s->hp.upgrade)
        r->flags |= R_UPGRADE;
    if (client_head_go(h, f, hd, r, &sc) != 0) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    s->remaining = 0;
    s->line = 0;
    if (sc.te)
        s->state = S_CHUNK_SIZE;
    else if (sc.cl > 0 && s->hp.method != HTTP_CONNECT)
        s->remaining = sc.cl, s->state = S_BODY;
    else
        client_message_done(h);
}

static void client_head_step(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    if (!s->in_head) {
        if (client_must_stall(h)) {
            s->state = S_STALLED;
            return;
        }
        http_parser_init(&s->hp, HTTP_REQUEST);
        s->in_head = true;
        s->head_start_us = h1_now(h);
    }
    struct h1_head hd;
    const char *why = NULL;
    int status = 400;
    switch (head_step(s, f, &hd, &why, &status)) {
    case HEAD_MORE:
        return;
    case HEAD_ERROR:
        client_refuse_new(h, f, status, why);
        return;
    default:
        client_head_done(h, f, &hd);
        return;
    }
}

/* A body rule blocked the request body: while it was held, the request is refused like a
 * blocked head (403 in order); once part of it went out, the connection is cut. */
static void client_body_blocked(struct http1 *h, struct h1_feed *f, struct h1_rec *r)
{
    if (h->body[HTTP1_CLIENT].holding) {
        client_refuse(h, f, r, 403, HTTP1_END_BLOCKED, "request body blocked by policy");
        return;
    }
    r->flags |= R_REFUSED | R_REQ_DONE;
    r->end = HTTP1_END_BLOCKED;
    r->why = "request body blocked by policy after part of it was forwarded";
    h1_close(h, NULL, 0, r->why);
    f->stop = true;
}

static void client_body_step(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    struct h1_rec *r = rec_back(h);
    struct h1_span span = {0};
    size_t start = f->pos;
    const char *why = NULL;
    int rc = body_feed(s, f->buf, f->len, &f->pos, &r->req_bytes, &why,
                       h->body[HTTP1_CLIENT].state ? &span : NULL);
    if (rc < 0) {
        client_refuse(h, f, r, 400, HTTP1_END_BAD_REQUEST, why);
        return;
    }
    if (body_deliver(h, HTTP1_CLIENT, f->buf + span.off, span.len, rc == 1) == HTTP1_BODY_BLOCK) {
        client_body_blocked(h, f, r);
        return;
    }
    if (body_after_step(h, HTTP1_CLIENT, f, start, rc == 1) != 0) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    if (rc == 1)
        client_message_done(h);
}

/* Holds client bytes that may not be parsed yet (see client_must_stall). */
static void client_stall_hold(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    size_t n = f->len - f->pos;
    if (s->hold.len + n > HTTP1_MAX_HEAD) {
        client_refuse_new(h, f, 400, "too much data sent ahead of the server's answers");
        return;
    }
    if (buf_append(&s->hold, f->buf + f->pos, n) != 0) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    f->pos = f->len;
}

static void client_run(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    while (f->pos < f->len && !f->stop && !h->closed) {
        switch (s->state) {
        case S_HEAD:
            client_head_step(h, f);
            break;
        case S_STALLED:
            client_stall_hold(h, f);
            break;
        case S_DEAD:
            f->pos = f->len;
            break;
        default:
            client_body_step(h, f);
            break;
        }
    }
}

/* Moves the forwardable bytes of f to the side's pending queue when in to_pend mode. Returns
 * the *forward count for the caller's chunk. */
static size_t feed_finish(struct http1 *h, enum http1_side side, struct h1_feed *f)
{
    struct h1_side *s = &h->side[side];
    if (!f->to_pend)
        return f->fwd;
    if (f->fwd > f->emit && buf_append(&s->pend, f->buf + f->emit, f->fwd - f->emit) != 0)
        h1_close(h, NULL, 0, "out of memory");
    return 0;
}

/* Once the server has answered what the client was stalled on, parses the held client bytes;
 * what may be forwarded goes to the client side's pending queue. */
static void client_unstall(struct http1 *h)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    if (s->state != S_STALLED || h->closed || client_must_stall(h))
        return;
    struct h1_buf held = s->hold;
    s->hold = (struct h1_buf){0};
    s->state = S_HEAD;
    if (held.len) {
        struct h1_feed cf = {.buf = held.p, .len = held.len, .to_pend = true};
        client_run(h, &cf);
        if (!h->closed)
            feed_finish(h, HTTP1_CLIENT, &cf);
    }
    free(held.p);
}

/* ---- the server side --------------------------------------------------------------------- */

/* The server's message is refused. The client gets `status` if nothing of the response has
 * reached it yet, else the connection is cut (an empty reply). */
static void server_refuse(struct http1 *h, struct h1_feed *f, int status, const char *why)
{
    struct h1_rec *r = rec_awaiting(h);
    if (!r || (r->flags & R_RESP_STARTED))
        status = 0;
    set_error(h, why);
    if (r) {
        if (status)
            r->status = (uint16_t)status;
        r->why = why;
    }
    h1_close(h, r, status, why);
    if (r)
        rec_finish(h, HTTP1_END_BAD_RESPONSE);
    f->stop = true;
}

/* After a response ended or the server declined an upgrade: a refused client may now be
 * answered, or stalled client bytes parsed. */
static void after_server_event(struct http1 *h, struct h1_feed *f)
{
    if (refusal_due(h)) {
        f->stop = true;
        return;
    }
    client_unstall(h);
    if (refusal_due(h))
        f->stop = true;
}

static void server_message_done(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    struct h1_rec *r = &h->rec0;
    body_reset(h, HTTP1_SERVER);
    r->flags |= R_RESP_DONE;
    s->state = S_HEAD;
    s->in_head = false;
    if (r->flags & R_REQ_DONE) {
        enum http1_end end = HTTP1_END_COMPLETE;
        if (r->flags & R_REFUSED)
            end = (enum http1_end)r->end;
        else if (r->flags & R_REQ_CUT)
            end = HTTP1_END_INCOMPLETE;
        rec_finish(h, end);
    }
    after_server_event(h, f);
}

/* 101 or CONNECT 2xx: from here on the connection is an opaque tunnel. */
static void server_tunnel(struct http1 *h, struct h1_feed *f, const struct h1_scan *sc)
{
    struct h1_side *c = &h->side[HTTP1_CLIENT];
    if (h->client_refused) {
        h1_close(h, NULL, 0, NULL);
        f->stop = true;
        return;
    }
    if (h->rec0.method == HTTP_CONNECT)
        snprintf(h->upgrade, sizeof(h->upgrade), "CONNECT");
    else
        snprintf(h->upgrade, sizeof(h->upgrade), "%.*s", (int)sc->upgrade_len, sc->upgrade);
    h->rec0.flags |= R_RESP_DONE;
    rec_finish(h, HTTP1_END_UPGRADED);
    if (c->hold.len && pend_take_hold(c) != 0) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    c->state = S_DEAD;
    h->tunnel = true;
    f->fwd = f->pos = f->len;
}

/* Checks the status line against http-parser's reading: "HTTP/1.x DDD[ reason]". */
static const char *status_line_check(const struct h1_side *s, const struct h1_scan *sc)
{
    const char *l = sc->line;
    size_t n = sc->line_len;
    if (s->hp.http_major != 1 || s->hp.http_minor > 1)
        return "unsupported HTTP version in the response";
    if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[8] != ' ' || (n > 12 && l[12] != ' '))
        return "malformed status line";
    unsigned st = 0;
    for (int i = 9; i < 12; i++) {
        if (l[i] < '0' || l[i] > '9')
            return "malformed status line";
        st = st * 10 + (unsigned)(l[i] - '0');
    }
    if (st < 100 || st > 599 || st != s->hp.status_code)
        return "invalid status code";
    for (size_t i = 13; i < n; i++)
        if (!is_cls(l[i], C_VCHAR | C_WS))
            return "invalid character in the reason phrase";
    return NULL;
}

/* What the hooks see of a response head; *x receives the exchange so far. */
static struct http1_response_info response_info(const struct http1 *h, const struct h1_rec *r,
                                                const struct h1_side *s, const struct h1_scan *sc,
                                                struct http1_exchange *x)
{
    rec_view(h, r, x);
    x->status = 0;
    x->upstream_status = 0;
    x->content_type = "";
    return (struct http1_response_info){
        .req = x,
        .status = s->hp.status_code,
        .http_minor = s->hp.http_minor,
        .content_type = h->ctype,
        .headers = sc->hdr,
        .n_headers = sc->n,
    };
}

/* Asks on_response; true when it blocked. */
static bool ask_response(struct http1 *h, const struct h1_rec *r, const struct h1_side *s,
                         const struct h1_scan *sc)
{
    if (!h->hooks || !h->hooks->on_response)
        return false;
    struct http1_exchange x;
    struct http1_response_info info = response_info(h, r, s, sc, &x);
    struct http1_block blk = {0};
    if (h->hooks->on_response(h->arg, &info, &blk) != HTTP1_BLOCK)
        return false;
    snprintf(h->rule, sizeof(h->rule), "%s", blk.rule ? blk.rule : "");
    snprintf(h->ref, sizeof(h->ref), "%s", blk.ref ? blk.ref : "");
    return true;
}

/* Validates a complete response head; returns why it is refused, or NULL. */
static const char *response_check(const struct h1_rec *r, const struct h1_side *s,
                                  const struct h1_scan *sc)
{
    unsigned st = s->hp.status_code;
    const char *why = status_line_check(s, sc);
    if (!why)
        why = framing_check(s, sc);
    if (why || (st < 200 && st != 101))
        return why;
    if (st == 101 && (!(r->flags & R_UPGRADE) || r->method == HTTP_CONNECT))
        return "101 Switching Protocols without an Upgrade request";
    if (st == 101 && !(r->flags & R_REQ_DONE))
        return "101 Switching Protocols before the request was complete";
    if (sc->ctype_conflict)
        return "conflicting Content-Type headers";
    return NULL;
}

/* An allowed final response head goes on to the client, unless its body is to be inspected
 * first: then it is held with the body (body_release sends it). */
static int server_head_go(struct http1 *h, struct h1_feed *f, const struct h1_head *hd,
                          struct h1_rec *r, const struct h1_scan *sc, bool tunnel)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    unsigned st = s->hp.status_code;
    bool bodyless =
        r->method == HTTP_HEAD || st == 204 || st == 304 || (sc->n_cl && !sc->te && sc->cl == 0);
    if (!tunnel && !bodyless) {
        struct http1_exchange x;
        struct http1_response_info resp = response_info(h, r, s, sc, &x);
        body_begin(h, &(struct http1_body_info){.side = HTTP1_SERVER, .resp = &resp});
    }
    if (h->body[HTTP1_SERVER].holding)
        return body_hold_head(s, hd);
    r->status = (uint16_t)st;
    r->flags |= R_RESP_STARTED;
    return feed_release_head(s, f, hd);
}

static void server_head_done(struct http1 *h, struct h1_feed *f, const struct h1_head *hd)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    struct http1_header hdrs[HTTP1_MAX_HEADERS];
    struct h1_scan sc = {.hdr = hdrs, .status = 400};
    struct h1_rec *r = rec_awaiting(h);
    unsigned st = s->hp.status_code;
    s->in_head = false;
    if (!r) {
        server_refuse(h, f, 0, "response with no request outstanding");
        return;
    }
    const char *why = head_scan(hd->p, hd->n, &sc);
    if (!why)
        why = response_check(r, s, &sc);
    if (why) {
        server_refuse(h, f, 502, why);
        return;
    }
    if (st < 200 && st != 101) { /* interim (100 Continue, 103): the final response follows */
        if (feed_release_head(s, f, hd) != 0)
            server_refuse(h, f, 0, "out of memory");
        return;
    }
    r->upstream_status = (uint16_t)st;
    size_t cl = sc.ctype_len < H1_CTYPE_MAX ? sc.ctype_len : H1_CTYPE_MAX - 1;
    memcpy(h->ctype, sc.ctype ? sc.ctype : "", sc.ctype ? cl : 0);
    h->ctype[sc.ctype ? cl : 0] = '\0';
    if (ask_response(h, r, s, &sc)) {
        r->status = 403;
        r->why = "response blocked by policy";
        h1_close(h, r, 403, r->why);
        rec_finish(h, HTTP1_END_BLOCKED);
        f->stop = true;
        return;
    }
    bool tunnel = st == 101 || (r->method == HTTP_CONNECT && st < 300);
    if (server_head_go(h, f, hd, r, &sc, tunnel) != 0) {
        server_refuse(h, f, 0, "out of memory");
        return;
    }
    if (tunnel) {
        server_tunnel(h, f, &sc);
        return;
    }
    bool declined = (r->flags & R_UPGRADE) != 0;
    r->flags &= (uint16_t)~R_UPGRADE;
    s->remaining = 0;
    s->line = 0;
    if (r->method == HTTP_HEAD || st == 204 || st == 304)
        server_message_done(h, f);
    else if (sc.te)
        s->state = S_CHUNK_SIZE;
    else if (sc.n_cl && sc.cl == 0)
        server_message_done(h, f);
    else if (sc.n_cl)
        s->remaining = sc.cl, s->state = S_BODY;
    else
        s->state = S_BODY_EOF;
    if (declined && !h->closed && !f->stop)
        after_server_event(h, f);
}

static void server_head_step(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    if (!s->in_head) {
        http_parser_init(&s->hp, HTTP_RESPONSE);
        s->in_head = true;
    }
    struct h1_head hd;
    const char *why = NULL;
    int status = 502;
    switch (head_step(s, f, &hd, &why, &status)) {
    case HEAD_MORE:
        return;
    case HEAD_ERROR:
        server_refuse(h, f, 502, why);
        return;
    default:
        server_head_done(h, f, &hd);
        return;
    }
}

/* A body rule blocked the response body: the client gets the 403 page if nothing of the
 * response reached it (it was held), else the connection is cut. */
static void server_body_blocked(struct http1 *h, struct h1_feed *f)
{
    struct h1_rec *r = &h->rec0;
    bool held = h->body[HTTP1_SERVER].holding;
    r->why = held ? "response body blocked by policy"
                  : "response body blocked by policy after part of it was forwarded";
    if (held)
        r->status = 403;
    h1_close(h, r, held ? 403 : 0, r->why);
    rec_finish(h, HTTP1_END_BLOCKED);
    f->stop = true;
}

static void server_body_step(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    struct h1_rec *r = &h->rec0;
    struct h1_span span = {0};
    size_t start = f->pos;
    const char *why = NULL;
    int rc = body_feed(s, f->buf, f->len, &f->pos, &r->resp_bytes, &why,
                       h->body[HTTP1_SERVER].state ? &span : NULL);
    if (rc < 0) {
        server_refuse(h, f, 502, why);
        return;
    }
    if (body_deliver(h, HTTP1_SERVER, f->buf + span.off, span.len, rc == 1) == HTTP1_BODY_BLOCK) {
        server_body_blocked(h, f);
        return;
    }
    if (body_after_step(h, HTTP1_SERVER, f, start, rc == 1) != 0) {
        server_refuse(h, f, 0, "out of memory");
        return;
    }
    if (rc == 1)
        server_message_done(h, f);
}

/* A body delimited by the server's close: every byte is payload. */
static void server_eof_body_step(struct http1 *h, struct h1_feed *f)
{
    size_t start = f->pos;
    h->rec0.resp_bytes += f->len - f->pos;
    f->pos = f->len;
    if (body_deliver(h, HTTP1_SERVER, f->buf + start, f->len - start, false) == HTTP1_BODY_BLOCK) {
        server_body_blocked(h, f);
        return;
    }
    if (body_after_step(h, HTTP1_SERVER, f, start, false) != 0)
        server_refuse(h, f, 0, "out of memory");
}

static void server_run(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    while (f->pos < f->len && !f->stop && !h->closed && !h->tunnel) {
        switch (s->state) {
        case S_HEAD:
            server_head_step(h, f);
            break;
        case S_DEAD:
            f->pos = f->len;
            break;
        case S_BODY_EOF:
            server_eof_body_step(h, f);
            break;
        default:
            server_body_step(h, f);
            break;
        }
    }
}

/* ---- API --------------------------------------------------------------------------------- */

struct http1 *http1_new(const struct http1_hooks *hooks, void *arg)
{
    struct http1 *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->hooks = hooks;
    h->arg = arg;
    return h;
}

void http1_free(struct http1 *h)
{
    if (!h)
        return;
    body_reset(h, HTTP1_CLIENT);
    body_reset(h, HTTP1_SERVER);
    while (h->n_recs) {
        struct h1_rec *r = &h->rec0;
        enum http1_end end = HTTP1_END_INCOMPLETE;
        if (r->flags & R_REFUSED)
            end = (enum http1_end)r->end;
        else if (!r->why)
            r->why = (r->flags & R_REQ_DONE) ? "connection closed before the response ended"
                                             : "connection closed before the request ended";
        rec_finish(h, end);
    }
    for (int i = 0; i < 2; i++) {
        buf_free(&h->side[i].hold);
        buf_free(&h->side[i].pend);
    }
    free(h->more);
    free(h->reply);
    free(h);
}

static enum http1_verdict verdict(const struct http1 *h)
{
    if (h->closed)
        return HTTP1_REPLY_AND_CLOSE;
    return h->tunnel ? HTTP1_TUNNEL : HTTP1_FORWARD;
}

enum http1_verdict http1_from_client(struct http1 *h, const uint8_t *buf, size_t len,
                                     size_t *forward)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    *forward = 0;
    if (h->closed || len == 0)
        return verdict(h);
    struct h1_feed f = {.buf = buf, .len = len, .to_pend = pend_count(s) > 0};
    if (h->tunnel) {
        f.fwd = len;
    } else {
        client_run(h, &f);
        refusal_due(h);
    }
    size_t fwd = h->closed ? 0 : feed_finish(h, HTTP1_CLIENT, &f);
    if (!h->closed)
        *forward = fwd;
    return verdict(h);
}

enum http1_verdict http1_from_server(struct http1 *h, const uint8_t *buf, size_t len,
                                     size_t *forward)
{
    *forward = 0;
    if (h->closed || len == 0)
        return verdict(h);
    struct h1_feed f = {.buf = buf, .len = len, .to_pend = pend_count(&h->side[HTTP1_SERVER]) > 0};
    if (h->tunnel)
        f.fwd = len;
    else
        server_run(h, &f);
    *forward = feed_finish(h, HTTP1_SERVER, &f);
    return verdict(h);
}

/* side closed in the middle of a body being inspected: the scan ends on what came (a cut body
 * is judged like a complete one); a block is answered as usual, else a hold goes on. True when
 * it blocked. */
static bool body_eof(struct http1 *h, enum http1_side side, struct h1_feed *f)
{
    if (!h->body[side].state && !h->body[side].holding)
        return false;
    if (body_deliver(h, side, NULL, 0, true) == HTTP1_BODY_BLOCK) {
        if (side == HTTP1_CLIENT) {
            client_body_blocked(h, f, rec_back(h));
            refusal_due(h);
        } else {
            server_body_blocked(h, f);
        }
        return true;
    }
    if (h->body[side].holding && body_release(h, side, f) != 0)
        h1_close(h, NULL, 0, "out of memory");
    return false;
}

enum http1_verdict http1_eof(struct http1 *h, enum http1_side side)
{
    if (h->closed || h->tunnel)
        return verdict(h);
    struct h1_side *s = &h->side[side];
    struct h1_feed f = {0};
    if (body_eof(h, side, &f) || h->closed)
        return verdict(h);
    if (side == HTTP1_CLIENT) {
        struct h1_rec *b = rec_back(h);
        if (s->state != S_HEAD && s->state != S_STALLED && s->state != S_DEAD && b) {
            b->flags |= R_REQ_DONE | R_REQ_CUT;
            b->why = "client closed before the request ended";
        }
    } else if (s->state == S_BODY_EOF) {
        server_message_done(h, &f); /* the close delimits this response */
    } else if (s->state != S_HEAD && s->state != S_DEAD && h->n_recs) {
        h->rec0.why = "server closed before the response ended";
    }
    if (!h->closed) {
        s->state = S_DEAD;
        s->in_head = false;
        buf_free(&s->hold);
    }
    if (side == HTTP1_SERVER && h->client_refused && !refusal_due(h) && !h->closed)
        h1_close(h, NULL, 0, NULL); /* the reply owed can never be sent in order */
    return verdict(h);
}

size_t http1_pending(const struct http1 *h, enum http1_side side, const uint8_t **data)
{
    const struct h1_side *s = &h->side[side];
    size_t n = pend_count(s);
    *data = n ? s->pend.p + s->pend_off : NULL;
    return n;
}

void http1_pending_consume(struct http1 *h, enum http1_side side, size_t n)
{
    struct h1_side *s = &h->side[side];
    if (n > pend_count(s))
        n = pend_count(s);
    s->pend_off += n;
    if (pend_count(s) == 0)
        pend_clear(s);
}

void http1_reply(const struct http1 *h, const uint8_t **data, size_t *len)
{
    *data = h->reply;
    *len = h->reply_len;
}

const char *http1_error(const struct http1 *h)
{
    return h->error;
}
