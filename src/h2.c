/* h2: the HTTP/2 bridge (h2.h, docs/HTTP2.md). Session DOWN is an nghttp2 server facing the
 * client, session UP an nghttp2 client facing the upstream; a struct h2_stream joins one stream
 * of each. Bodies cross through per-stream chunk buffers that nghttp2 data providers drain;
 * a byte is consumed (and so re-opens its sender's window) only once the other leg's session
 * has taken it into a DATA frame, which carries flow control end to end and bounds each
 * buffer by the window the bridge advertised.
 *
 * Re-entrancy: nghttp2 calls back only from inside the mem_recv/mem_send of its own session.
 * Callbacks may submit frames on either session and may free a stream once neither session
 * can mention it again (both legs closed it). Whatever tears a whole leg down (EOF, a fatal
 * error) runs outside callbacks, in finish(). */
#include "h2.h"

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { DOWN = 0, UP = 1 }; /* legs: DOWN faces the client, UP the upstream */
#define OTHER(leg) (1 - (leg))

#define H2_CHUNK 16384     /* largest body chunk */
#define H2_DIRECT_MIN 4096 /* frames this large are handed to the caller without a copy */
#define H2_CTYPE_MAX 127
#define H2_RULE_MAX 63
#define H2_REF_MAX 47
#define H2_PAGE_MAX 4096
#define H2_FIELD_OVERHEAD 32 /* RFC 9113 §6.5.2: a field's size is name + value + 32 */

static const char *const leg_name[2] = {"client", "upstream"};

/* --- memory: every allocation of a bridge (nghttp2's too) is counted and capped --------- */

union h2_memhdr {
    size_t size;
    max_align_t align;
};

struct h2_bridge;
static void *bmalloc(struct h2_bridge *b, size_t n);
static void bfree(struct h2_bridge *b, void *p);
static void *brealloc(struct h2_bridge *b, void *p, size_t n);

/* --- body buffers: a list of chunks, allocated only while bytes are in flight ------------ */

struct h2_chunk {
    struct h2_chunk *next;
    size_t off, len, cap;
    uint8_t data[];
};

struct h2_sbuf {
    struct h2_chunk *head, *tail;
    size_t len;
};

/* --- header blocks as received: "name\0value\0" bytes and field offsets ------------------ */

struct h2_field {
    uint32_t name, name_len, value, value_len;
    uint8_t flags; /* NGHTTP2_NV_FLAG_NO_INDEX is kept when forwarding */
};

struct h2_head {
    char *bytes;
    size_t len, cap;
    struct h2_field *f;
    size_t n, fcap;
    size_t size; /* the block's size as h2 counts it */
    bool too_big;
};

/* One direction of a stream's body: bytes received from the source leg that the other leg's
 * session has not taken yet, and whether the source ended (with or without trailers). */
struct h2_body {
    struct h2_sbuf buf;
    struct h2_head trailers;
    uint64_t bytes; /* payload received */
    bool eof;       /* END_STREAM received */
    bool has_trailers;
    bool drop;  /* arrivals are discarded (and consumed at once) */
    bool local; /* buf holds the gateway's own page: nothing to consume on the other leg */
    /* body inspection (h2_body_info): the hook's state, and the hold of the head */
    void *inspect;      /* NULL: not (or no longer) inspected */
    uint64_t hold;      /* bytes to inspect before the head goes on */
    uint64_t seen;      /* bytes given to on_body */
    bool holding;       /* the head waits in the stream's `held` */
    size_t preconsumed; /* bytes in buf already given back to the connection window */
};

struct h2_stream {
    struct h2_stream *prev, *next;
    int32_t id[2];  /* the stream's id on each leg; id[UP] is 0 until submitted */
    bool open[2];   /* that leg's session may still call back about it */
    bool reset[2];  /* we submitted RST_STREAM on that leg */
    bool rst_in[2]; /* RST_STREAM received from that leg (code in rst_code) */
    uint32_t rst_code[2];
    bool end_sent[2];       /* END_STREAM sent on that leg */
    struct h2_head rx[2];   /* the head (or trailers) being received from each leg */
    struct h2_head held;    /* a head waiting for its body's inspection (request, then
                             * response) */
    struct h2_body body[2]; /* body[DOWN]: the request, to UP; body[UP]: the response */
    bool head_done;         /* the request head completed */
    bool final_in;          /* a final response head arrived */
    bool resp_started;      /* a final response head (ours or the upstream's) was submitted */
    bool local_reply;
    bool rst_after_resp; /* the request is abandoned: RST(NO_ERROR) once the response is out */
    bool is_head;
    bool reported, end_set;
    enum h2_end end;
    uint32_t error_code;
    const char *why;
    unsigned seq;
    int status, upstream_status;
    int64_t start_us;
    char *meta; /* method, scheme, authority and path, NUL-terminated, in one allocation */
    const char *method, *scheme, *authority, *path;
    char content_type[H2_CTYPE_MAX + 1];
    char rule[H2_RULE_MAX + 1];
    char ref[H2_REF_MAX + 1];
};

/* Output toward one leg: small frames are coalesced into buf; a large frame is handed out
 * straight from nghttp2's own buffer (direct), valid until that session's next mem_send,
 * which happens only once the caller has sent all of it. At most one of the two is
 * non-empty. */
struct h2_out {
    uint8_t *buf;
    size_t off, len, cap;
    const uint8_t *direct;
    size_t dlen;
};

struct h2_bridge {
    nghttp2_session *sess[2];
    const struct h2_hooks *hooks;
    void *arg;
    struct h2_config cfg;
    struct h2_out out[2];
    struct h2_stream *streams; /* every live stream */
    size_t n_streams;
    unsigned seq;
    int32_t max_done_id;    /* highest client stream id already reported */
    bool closed[2];         /* the leg is gone (EOF or failure): its session is not driven */
    bool broken[2];         /* nghttp2 failed fatally on that leg, or a frame it produced
                             * could not be kept: nothing more may be sent on it */
    bool goaway_out[2];     /* we submitted GOAWAY on that leg */
    bool own_goaway_err[2]; /* ... with an error code (passed on from the other leg) */
    bool stopping;          /* new requests are refused */
    int fail_leg;           /* -1, or the leg whose failure finish() must still handle */
    bool fail_handled;
    const char *error;
    char errbuf[160];
    char lib_err[2][96]; /* nghttp2's last complaint about each leg */
    size_t mem, mem_peak;
    nghttp2_mem nmem;
};

static void *bmalloc(struct h2_bridge *b, size_t n)
{
    if (n > b->cfg.mem_limit || b->mem > b->cfg.mem_limit - n)
        return NULL;
    union h2_memhdr *h = malloc(sizeof(*h) + n);
    if (!h)
        return NULL;
    h->size = n;
    b->mem += n;
    if (b->mem > b->mem_peak)
        b->mem_peak = b->mem;
    return h + 1;
}

static void bfree(struct h2_bridge *b, void *p)
{
    if (!p)
        return;
    union h2_memhdr *h = (union h2_memhdr *)p - 1;
    b->mem -= h->size;
    free(h);
}

static void *brealloc(struct h2_bridge *b, void *p, size_t n)
{
    if (!p)
        return bmalloc(b, n);
    if (n == 0) {
        bfree(b, p);
        return NULL;
    }
    union h2_memhdr *h = (union h2_memhdr *)p - 1;
    size_t old = h->size;
    if (n > old && (n - old > b->cfg.mem_limit || b->mem > b->cfg.mem_limit - (n - old)))
        return NULL;
    union h2_memhdr *nh = realloc(h, sizeof(*nh) + n);
    if (!nh)
        return NULL;
    nh->size = n;
    b->mem = b->mem - old + n;
    if (b->mem > b->mem_peak)
        b->mem_peak = b->mem;
    return nh + 1;
}

static void *nm_malloc(size_t n, void *ud)
{
    return bmalloc(ud, n);
}

static void nm_free(void *p, void *ud)
{
    bfree(ud, p);
}

static void *nm_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = bmalloc(ud, nmemb * size);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

static void *nm_realloc(void *p, size_t n, void *ud)
{
    return brealloc(ud, p, n);
}

/* --- body buffers ------------------------------------------------------------------------ */

static int sbuf_add(struct h2_bridge *b, struct h2_sbuf *sb, const uint8_t *p, size_t n)
{
    while (n > 0) {
        struct h2_chunk *t = sb->tail;
        if (!t || t->len == t->cap) {
            size_t cap = n < H2_CHUNK ? (n + 4095) / 4096 * 4096 : H2_CHUNK;
            t = bmalloc(b, sizeof(*t) + cap);
            if (!t)
                return -1;
            t->next = NULL;
            t->off = t->len = 0;
            t->cap = cap;
            if (sb->tail)
                sb->tail->next = t;
            else
                sb->head = t;
            sb->tail = t;
        }
        size_t k = t->cap - t->len < n ? t->cap - t->len : n;
        memcpy(t->data + t->len, p, k);
        t->len += k;
        sb->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Moves up to max bytes out into dst; frees emptied chunks. */
static size_t sbuf_take(struct h2_bridge *b, struct h2_sbuf *sb, uint8_t *dst, size_t max)
{
    size_t got = 0;
    while (got < max && sb->head) {
        struct h2_chunk *h = sb->head;
        size_t k = h->len - h->off < max - got ? h->len - h->off : max - got;
        memcpy(dst + got, h->data + h->off, k);
        h->off += k;
        got += k;
        if (h->off == h->len) {
            sb->head = h->next;
            if (!sb->head)
                sb->tail = NULL;
            bfree(b, h);
        }
    }
    sb->len -= got;
    return got;
}

/* Frees everything; returns how many bytes were dropped. */
static size_t sbuf_clear(struct h2_bridge *b, struct h2_sbuf *sb)
{
    size_t n = sb->len;
    while (sb->head) {
        struct h2_chunk *next = sb->head->next;
        bfree(b, sb->head);
        sb->head = next;
    }
    sb->tail = NULL;
    sb->len = 0;
    return n;
}

/* --- header blocks ----------------------------------------------------------------------- */

static void head_free(struct h2_bridge *b, struct h2_head *h)
{
    bfree(b, h->bytes);
    bfree(b, h->f);
    memset(h, 0, sizeof(*h));
}

/* Appends a field; past the limits the block is marked too big and no longer grows.
 * Returns -1 on out-of-memory only. */
static int head_add(struct h2_bridge *b, struct h2_head *h, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags)
{
    if (h->too_big)
        return 0;
    size_t add = nlen + vlen + H2_FIELD_OVERHEAD;
    if (h->n >= H2_MAX_HEADERS || add > H2_MAX_HEAD || h->size + add > H2_MAX_HEAD) {
        h->too_big = true;
        return 0;
    }
    if (h->len + nlen + vlen + 2 > h->cap) {
        size_t cap = h->cap ? h->cap : 512;
        while (cap < h->len + nlen + vlen + 2)
            cap *= 2;
        char *nb = brealloc(b, h->bytes, cap);
        if (!nb)
            return -1;
        h->bytes = nb;
        h->cap = cap;
    }
    if (h->n == h->fcap) {
        size_t fcap = h->fcap ? h->fcap * 2 : 16;
        struct h2_field *nf = brealloc(b, h->f, fcap * sizeof(*nf));
        if (!nf)
            return -1;
        h->f = nf;
        h->fcap = fcap;
    }
    struct h2_field *f = &h->f[h->n++];
    f->name = (uint32_t)h->len;
    f->name_len = (uint32_t)nlen;
    memcpy(h->bytes + h->len, name, nlen);
    h->len += nlen;
    h->bytes[h->len++] = '\0';
    f->value = (uint32_t)h->len;
    f->value_len = (uint32_t)vlen;
    memcpy(h->bytes + h->len, value, vlen);
    h->len += vlen;
    h->bytes[h->len++] = '\0';
    f->flags = flags & NGHTTP2_NV_FLAG_NO_INDEX;
    h->size += add;
    return 0;
}

static const char *field_name(const struct h2_head *h, size_t i)
{
    return h->bytes + h->f[i].name;
}

static const char *field_value(const struct h2_head *h, size_t i)
{
    return h->bytes + h->f[i].value;
}

/* The value of the first field named name (lower-case), or NULL. */
static const char *head_get(const struct h2_head *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(field_name(h, i), name) == 0)
            return field_value(h, i);
    return NULL;
}

/* An nghttp2_nv array over the block, to submit as received (nghttp2 copies it). Caller
 * frees it with bfree. NULL on out-of-memory. */
static nghttp2_nv *head_nva(struct h2_bridge *b, const struct h2_head *h)
{
    nghttp2_nv *nva = bmalloc(b, (h->n ? h->n : 1) * sizeof(*nva));
    if (!nva)
        return NULL;
    for (size_t i = 0; i < h->n; i++) {
        nva[i].name = (uint8_t *)(h->bytes + h->f[i].name);
        nva[i].namelen = h->f[i].name_len;
        nva[i].value = (uint8_t *)(h->bytes + h->f[i].value);
        nva[i].valuelen = h->f[i].value_len;
        nva[i].flags = h->f[i].flags;
    }
    return nva;
}

/* The regular (non-pseudo) fields for a hook; caller frees with bfree. NULL on OOM. */
static struct h2_header *head_regular(struct h2_bridge *b, const struct h2_head *h, size_t *n)
{
    struct h2_header *v = bmalloc(b, (h->n ? h->n : 1) * sizeof(*v));
    if (!v)
        return NULL;
    *n = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (field_name(h, i)[0] == ':')
            continue;
        v[*n].name = field_name(h, i);
        v[*n].name_len = h->f[i].name_len;
        v[*n].value = field_value(h, i);
        v[*n].value_len = h->f[i].value_len;
        (*n)++;
    }
    return v;
}

/* --- output ------------------------------------------------------------------------------ */

static size_t out_pending(const struct h2_out *o, const uint8_t **data)
{
    if (o->dlen) {
        *data = o->direct;
        return o->dlen;
    }
    *data = o->buf ? o->buf + o->off : NULL;
    return o->len - o->off;
}

static size_t out_len(const struct h2_out *o)
{
    return o->dlen + (o->len - o->off);
}

static void out_reset(struct h2_bridge *b, struct h2_out *o)
{
    bfree(b, o->buf);
    memset(o, 0, sizeof(*o));
}

static int out_append(struct h2_bridge *b, struct h2_out *o, const uint8_t *p, size_t n)
{
    if (o->off > 0 && o->off == o->len)
        o->off = o->len = 0;
    if (o->len + n > o->cap) {
        if (o->off > 0) {
            memmove(o->buf, o->buf + o->off, o->len - o->off);
            o->len -= o->off;
            o->off = 0;
        }
        if (o->len + n > o->cap) {
            size_t cap = o->cap ? o->cap : 4096;
            while (cap < o->len + n)
                cap *= 2;
            uint8_t *nb = brealloc(b, o->buf, cap);
            if (!nb)
                return -1;
            o->buf = nb;
            o->cap = cap;
        }
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* --- failures ---------------------------------------------------------------------------- */

/* Records that the bridge failed because of leg (first cause wins); finish() tears it down. */
static void fail(struct h2_bridge *b, int leg, const char *what)
{
    if (b->error)
        return;
    if (b->lib_err[leg][0])
        snprintf(b->errbuf, sizeof(b->errbuf), "%s: %s (%s)", leg_name[leg], what, b->lib_err[leg]);
    else
        snprintf(b->errbuf, sizeof(b->errbuf), "%s: %s", leg_name[leg], what);
    b->error = b->errbuf;
    b->fail_leg = leg;
}

/* --- streams ----------------------------------------------------------------------------- */

static int64_t now_us(const struct h2_bridge *b)
{
    if (b->hooks && b->hooks->now_us)
        return b->hooks->now_us(b->arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void copy_trunc(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static struct h2_stream *stream_new(struct h2_bridge *b, int32_t down_id)
{
    struct h2_stream *s = bmalloc(b, sizeof(*s));
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->id[DOWN] = down_id;
    s->open[DOWN] = true;
    s->seq = ++b->seq;
    s->start_us = now_us(b);
    s->method = s->scheme = s->authority = s->path = "";
    s->next = b->streams;
    if (b->streams)
        b->streams->prev = s;
    b->streams = s;
    b->n_streams++;
    return s;
}

/* The stream with this upstream id, for the rare events nghttp2 reports without the
 * stream's user data (a request HEADERS that never went out). */
static struct h2_stream *stream_by_up_id(struct h2_bridge *b, int32_t id)
{
    for (struct h2_stream *s = b->streams; s; s = s->next)
        if (s->id[UP] == id)
            return s;
    return NULL;
}

static void set_end(struct h2_stream *s, enum h2_end end, uint32_t code, const char *why)
{
    if (s->end_set)
        return;
    s->end_set = true;
    s->end = end;
    s->error_code = code;
    s->why = why;
}

static void exchange_view(const struct h2_stream *s, struct h2_exchange *x)
{
    memset(x, 0, sizeof(*x));
    x->stream_id = s->id[DOWN];
    x->seq = s->seq;
    x->method = s->method;
    x->scheme = s->scheme;
    x->authority = s->authority;
    x->path = s->path;
    x->status = s->status;
    x->upstream_status = s->upstream_status;
    x->content_type = s->content_type;
    x->req_bytes = s->body[DOWN].bytes;
    x->resp_bytes = s->local_reply ? 0 : s->body[UP].bytes;
    x->start_us = s->start_us;
    x->end_us = s->start_us;
    x->end = s->end;
    x->error_code = s->error_code;
    x->rule = s->rule;
    x->ref = s->ref;
    x->error = s->why ? s->why : "";
}

/* Reports the exchange once: the client's side of the stream is over. */
static void report(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->reported)
        return;
    s->reported = true;
    if (!s->end_set)
        set_end(s, s->end_sent[DOWN] ? H2_END_COMPLETE : H2_END_INCOMPLETE, 0,
                s->end_sent[DOWN] ? NULL : "stream closed before the response completed");
    if (s->id[DOWN] > b->max_done_id)
        b->max_done_id = s->id[DOWN];
    if (!b->hooks || !b->hooks->on_exchange)
        return;
    struct h2_exchange x;
    exchange_view(s, &x);
    x.end_us = now_us(b);
    if (x.end_us < x.start_us)
        x.end_us = x.start_us;
    b->hooks->on_exchange(b->arg, &x);
}

/* Ends the inspection of the body from leg: the hook frees its state. */
static void inspect_stop(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    void *state = s->body[leg].inspect;
    s->body[leg].inspect = NULL;
    if (state)
        b->hooks->body_end(b->arg, state);
}

static void stream_free(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        b->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    b->n_streams--;
    for (int leg = 0; leg < 2; leg++) {
        inspect_stop(b, s, leg);
        head_free(b, &s->rx[leg]);
        head_free(b, &s->body[leg].trailers);
        sbuf_clear(b, &s->body[leg].buf);
    }
    head_free(b, &s->held);
    bfree(b, s->meta);
    bfree(b, s);
}

/* Frees the stream once neither session can mention it again. */
static void stream_maybe_free(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->open[DOWN] || s->open[UP])
        return;
    report(b, s);
    stream_free(b, s);
}

/* Tells leg's session that n bytes of stream id were passed on (or dropped): WINDOW_UPDATE. */
static int consume(struct h2_bridge *b, int leg, int32_t id, size_t n, bool stream_level)
{
    if (n == 0 || b->closed[leg])
        return 0;
    int rv = stream_level && id > 0 ? nghttp2_session_consume(b->sess[leg], id, n)
                                    : nghttp2_session_consume_connection(b->sess[leg], n);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* n bytes of the body from leg `from` were passed on or dropped: gives them back to the
 * sender's windows (those held were given back to its connection window already). */
static int consume_body(struct h2_bridge *b, struct h2_stream *s, int from, size_t n)
{
    struct h2_body *body = &s->body[from];
    size_t pre = n < body->preconsumed ? n : body->preconsumed;
    body->preconsumed -= pre;
    if (pre && s->open[from] && s->id[from] > 0 && !b->closed[from] &&
        nghttp2_is_fatal(nghttp2_session_consume_stream(b->sess[from], s->id[from], pre)))
        return -1;
    return consume(b, from, s->id[from], n - pre, s->open[from]);
}

/* Discards what came from leg and was not passed on yet, and whatever still comes. */
static int body_drop(struct h2_bridge *b, struct h2_stream *s, int from)
{
    struct h2_body *body = &s->body[from];
    size_t n = sbuf_clear(b, &body->buf);
    head_free(b, &body->trailers);
    body->has_trailers = false;
    body->drop = true;
    body->holding = false;
    inspect_stop(b, s, from);
    return body->local ? 0 : consume_body(b, s, from, n);
}

static int reset_leg(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code)
{
    if (!s->open[leg] || s->id[leg] <= 0 || s->reset[leg] || b->closed[leg])
        return 0;
    s->reset[leg] = true;
    return nghttp2_is_fatal(
               nghttp2_submit_rst_stream(b->sess[leg], NGHTTP2_FLAG_NONE, s->id[leg], code))
               ? -1
               : 0;
}

/* The response is complete on the client's side and the request will not be passed on:
 * asks the client to stop sending it (RFC 9113 §8.1: RST_STREAM NO_ERROR after a complete
 * response). */
static int maybe_rst_after(struct h2_bridge *b, struct h2_stream *s)
{
    if (!s->rst_after_resp || !s->end_sent[DOWN] || !s->open[DOWN] || b->closed[DOWN])
        return 0;
    if (nghttp2_session_get_stream_remote_close(b->sess[DOWN], s->id[DOWN]))
        return 0;
    return reset_leg(b, s, DOWN, NGHTTP2_NO_ERROR);
}

/* The request body will not reach the upstream (blocked, answered locally, or the upstream
 * stopped reading it): drop it, keep the client's window open, stop it after the response. */
static int abandon_request(struct h2_bridge *b, struct h2_stream *s)
{
    if (body_drop(b, s, DOWN) != 0)
        return -1;
    s->rst_after_resp = true;
    return maybe_rst_after(b, s);
}

static void wake(struct h2_bridge *b, struct h2_stream *s, int to)
{
    if (s->open[to] && s->id[to] > 0 && !b->closed[to])
        nghttp2_session_resume_data(b->sess[to], s->id[to]); /* may have nothing deferred */
}

/* --- data providers ---------------------------------------------------------------------- */

/* Feeds a DATA frame on session `to` from the stream's buffer of the other leg. Bytes taken
 * here are consumed on their source leg: end-to-end flow control. */
static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct h2_bridge *b = ud;
    struct h2_stream *s = source->ptr;
    int to = session == b->sess[UP] ? UP : DOWN;
    int from = OTHER(to);
    struct h2_body *body = &s->body[from];
    size_t n = sbuf_take(b, &body->buf, buf, length);
    if (!body->local && consume_body(b, s, from, n) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (body->buf.len == 0 && body->eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (body->has_trailers) {
            nghttp2_nv *nva = head_nva(b, &body->trailers);
            if (!nva)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            int rv = nghttp2_submit_trailer(session, stream_id, nva, body->trailers.n);
            bfree(b, nva);
            head_free(b, &body->trailers);
            body->has_trailers = false;
            if (nghttp2_is_fatal(rv))
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            if (rv == 0)
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
        return (ssize_t)n;
    }
    return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

/* --- local replies ----------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 403:
        return "Forbidden";
    case 431:
        return "Request Header Fields Too Large";
    case 502:
        return "Bad Gateway";
    default:
        return "Error";
    }
}

struct page {
    char *p;
    size_t len, cap;
};

static void page_str(struct page *o, const char *s)
{
    size_t n = strlen(s);
    if (n > o->cap - o->len)
        n = o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void page_html(struct page *o, const char *s)
{
    for (; *s; s++) {
        char c[2] = {*s, '\0'};
        switch (*s) {
        case '<':
            page_str(o, "&lt;");
            break;
        case '>':
            page_str(o, "&gt;");
            break;
        case '&':
            page_str(o, "&amp;");
            break;
        case '"':
            page_str(o, "&quot;");
            break;
        case '\'':
            page_str(o, "&#39;");
            break;
        default:
            page_str(o, c);
        }
    }
}

static size_t default_block_page(const struct h2_exchange *x, char *buf, size_t cap)
{
    struct page o = {buf, 0, cap};
    page_str(&o, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Blocked</title>"
                 "</head>\n<body><h1>Blocked by the gateway</h1>\n<p>The request to <b>");
    page_html(&o, x->authority);
    page_str(&o, "</b> is not allowed by this network's policy.</p>\n");
    if (x->rule[0]) {
        page_str(&o, "<p>Rule: <code>");
        page_html(&o, x->rule);
        page_str(&o, "</code></p>\n");
    }
    if (x->ref[0]) {
        page_str(&o, "<p>Reference: <code>");
        page_html(&o, x->ref);
        page_str(&o, "</code></p>\n");
    }
    page_str(&o, "</body></html>\n");
    return o.len;
}

/* Answers the client's stream with the gateway's own response (403 page, 431, 502) instead of
 * the upstream's: the upstream stream, if any, is reset and the request body abandoned. If a
 * response head already went out, the client's stream is reset instead. */
static int reply_local(struct h2_bridge *b, struct h2_stream *s, int status)
{
    if (reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
        return -1;
    if (s->resp_started) {
        if (body_drop(b, s, UP) != 0)
            return -1;
        return reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
    }
    if (!s->open[DOWN] || b->closed[DOWN])
        return body_drop(b, s, UP);
    char body[H2_PAGE_MAX];
    size_t blen = 0;
    const char *ctype = "text/plain; charset=utf-8";
    s->status = status;
    if (status == 403) {
        struct h2_exchange x;
        exchange_view(s, &x);
        if (b->hooks && b->hooks->block_page)
            blen = b->hooks->block_page(b->arg, &x, body, sizeof(body));
        if (blen == 0 || blen > sizeof(body))
            blen = default_block_page(&x, body, sizeof(body));
        ctype = "text/html; charset=utf-8";
    } else {
        int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, reason(status),
                         s->why ? s->why : "");
        blen = n > 0 ? ((size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1) : 0;
    }
    if (body_drop(b, s, UP) != 0)
        return -1;
    struct h2_body *out = &s->body[UP];
    out->local = true;
    out->eof = true;
    if (!s->is_head && sbuf_add(b, &out->buf, (const uint8_t *)body, blen) != 0)
        return -1;
    char st[4], clen[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(clen, sizeof(clen), "%zu", blen);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {NV(":status", st), NV("content-type", ctype), NV("content-length", clen),
                        NV("cache-control", "no-store")};
#undef NV
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_body};
    int rv = nghttp2_submit_response(b->sess[DOWN], s->id[DOWN], nva, 4, out->buf.len ? &dp : NULL);
    if (nghttp2_is_fatal(rv))
        return -1;
    s->resp_started = true;
    s->local_reply = true;
    return abandon_request(b, s);
}

/* Refuses a request that will not be processed: the client may retry it elsewhere. */
static int refuse(struct h2_bridge *b, struct h2_stream *s, const char *why)
{
    set_end(s, H2_END_REFUSED, NGHTTP2_REFUSED_STREAM, why);
    if (body_drop(b, s, DOWN) != 0)
        return -1;
    return reset_leg(b, s, DOWN, NGHTTP2_REFUSED_STREAM);
}

/* --- the client's leg: request heads ----------------------------------------------------- */

static int64_t parse_length(const char *v)
{
    if (!v || !*v)
        return -1;
    int64_t n = 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9' || n > (INT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*v - '0');
    }
    return n;
}

/* Copies method, scheme, authority and path out of the head for the exchange record. */
static int request_meta(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    const char *v[4] = {head_get(h, ":method"), head_get(h, ":scheme"), head_get(h, ":authority"),
                        head_get(h, ":path")};
    if (!v[2])
        v[2] = head_get(h, "host");
    size_t len[4], total = 0;
    for (int i = 0; i < 4; i++) {
        if (!v[i])
            v[i] = "";
        len[i] = strlen(v[i]);
        total += len[i] + 1;
    }
    s->meta = bmalloc(b, total);
    if (!s->meta)
        return -1;
    const char **dst[4] = {&s->method, &s->scheme, &s->authority, &s->path};
    char *p = s->meta;
    for (int i = 0; i < 4; i++) {
        memcpy(p, v[i], len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    s->is_head = strcmp(s->method, "HEAD") == 0;
    return 0;
}

/* What the hooks see of a request head; req->headers must be freed with bfree. -1 on OOM. */
static int request_info(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                        bool end, struct h2_request_info *req)
{
    *req = (struct h2_request_info){
        .stream_id = s->id[DOWN],
        .seq = s->seq,
        .method = s->method,
        .scheme = s->scheme,
        .authority = s->authority,
        .path = s->path,
        .content_length = end ? 0 : parse_length(head_get(h, "content-length")),
    };
    struct h2_header *hv = head_regular(b, h, &req->n_headers);
    req->headers = hv;
    return hv ? 0 : -1;
}

/* Asks on_request; 1 when blocked (rule and ref copied), 0 when allowed, -1 on OOM. */
static int ask_request(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h, bool end)
{
    if (!b->hooks || !b->hooks->on_request)
        return 0;
    struct h2_request_info req;
    if (request_info(b, s, h, end, &req) != 0)
        return -1;
    struct h2_block blk = {0};
    int action = b->hooks->on_request(b->arg, &req, &blk);
    bfree(b, (void *)req.headers);
    if (action != H2_BLOCK)
        return 0;
    copy_trunc(s->rule, sizeof(s->rule), blk.rule);
    copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    return 1;
}

/* --- body inspection --------------------------------------------------------------------- */

static bool body_hooked(const struct h2_bridge *b)
{
    return b->hooks && b->hooks->body_begin && b->hooks->on_body && b->hooks->body_end;
}

/* Offers the body from leg, which follows a head just allowed, to body_begin. */
static void inspect_begin(struct h2_bridge *b, struct h2_stream *s, int leg,
                          const struct h2_body_info *info)
{
    struct h2_body *body = &s->body[leg];
    struct h2_body_plan plan = {0};
    if (!body_hooked(b))
        return;
    b->hooks->body_begin(b->arg, info, &plan);
    if (!plan.body)
        return;
    body->inspect = plan.body;
    body->hold = plan.hold < info->max_hold ? plan.hold : info->max_hold;
    body->holding = body->hold > 0;
}

/* Offers a request body; 0, or -1 on OOM. */
static int inspect_request(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    struct h2_request_info req;
    if (!body_hooked(b))
        return 0;
    if (request_info(b, s, h, false, &req) != 0)
        return -1;
    inspect_begin(b, s, DOWN,
                  &(struct h2_body_info){.req = &req, .max_hold = b->cfg.stream_window});
    bfree(b, (void *)req.headers);
    return 0;
}

/* Gives data[0..len) from leg, and the end, to on_body. BLOCK copies the rule and reference;
 * BLOCK, DONE and the end stop the inspection. Returns the verdict (DONE at the end). */
static int inspect_data(struct h2_bridge *b, struct h2_stream *s, int leg, const uint8_t *data,
                        size_t len, bool end)
{
    struct h2_body *body = &s->body[leg];
    if (!body->inspect || (len == 0 && !end))
        return H2_BODY_MORE;
    struct h2_block blk = {0};
    int v = b->hooks->on_body(b->arg, body->inspect, data, len, end, &blk);
    body->seen += len;
    if (v == H2_BODY_BLOCK) {
        copy_trunc(s->rule, sizeof(s->rule), blk.rule);
        copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    }
    if (v == H2_BODY_BLOCK || v == H2_BODY_DONE || end) {
        inspect_stop(b, s, leg);
        return v == H2_BODY_BLOCK ? v : H2_BODY_DONE;
    }
    return H2_BODY_MORE;
}

/* A body rule blocked the body from leg: a head still held is answered with the page (the
 * request never went upstream, or the response head never reached the client); otherwise
 * the upstream's stream is cancelled and the client's reset (reply_local). */
static int inspect_blocked(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    bool held = s->body[leg].holding;
    set_end(s, H2_END_BLOCKED, 0,
            leg == DOWN ? (held ? "request body blocked by policy"
                                : "request body blocked by policy after part of it was sent")
                        : (held ? "response body blocked by policy"
                                : "response body blocked by policy after part of it was sent"));
    s->body[leg].holding = false;
    head_free(b, &s->held);
    return reply_local(b, s, 403);
}

/* Opens the upstream stream for the request head h (borrowed). 0, or -1 on OOM. */
static int open_upstream(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h,
                         bool end)
{
    nghttp2_nv *nva = head_nva(b, h);
    if (!nva)
        return -1;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(b->sess[UP], NULL, nva, h->n, end ? NULL : &dp, s);
    bfree(b, nva);
    if (nghttp2_is_fatal(id))
        return -1;
    if (id < 0)
        return refuse(b, s, "no upstream stream available");
    s->id[UP] = id;
    s->open[UP] = true;
    return 0;
}

/* A held request whose client waits for 100 Continue gets one from the gateway (the
 * upstream's own may follow; clients take several). */
static int continue_held(struct h2_bridge *b, struct h2_stream *s)
{
    const char *expect = head_get(&s->held, "expect");
    if (!expect || strcasecmp(expect, "100-continue") != 0)
        return 0;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    int rv =
        nghttp2_submit_headers(b->sess[DOWN], NGHTTP2_FLAG_NONE, s->id[DOWN], NULL, &nv, 1, NULL);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* The held request goes upstream now (unless the upstream is going away). */
static int release_request(struct h2_bridge *b, struct h2_stream *s)
{
    int rv;
    s->body[DOWN].holding = false;
    if (b->stopping || b->closed[UP] || !nghttp2_session_check_request_allowed(b->sess[UP]))
        rv = refuse(b, s, "upstream connection going away");
    else
        rv = open_upstream(b, s, &s->held, false);
    head_free(b, &s->held);
    return rv;
}

/* A request head is complete: refuse, block, or open the mapped stream upstream. */
static int request_head(struct h2_bridge *b, struct h2_stream *s, bool end)
{
    struct h2_head *h = &s->rx[DOWN];
    s->head_done = true;
    s->body[DOWN].eof = end;
    int rv = 0;
    if (request_meta(b, s, h) != 0)
        goto oom;
    if (h->too_big) {
        set_end(s, H2_END_BAD_REQUEST, 0, "request head too large");
        rv = reply_local(b, s, 431);
        goto out;
    }
    if (b->stopping || b->closed[UP] || !nghttp2_session_check_request_allowed(b->sess[UP])) {
        rv = refuse(b, s, "upstream connection going away");
        goto out;
    }
    int blocked = ask_request(b, s, h, end);
    if (blocked < 0)
        goto oom;
    if (blocked) {
        set_end(s, H2_END_BLOCKED, 0, "request blocked by policy");
        rv = reply_local(b, s, 403);
        goto out;
    }
    if (!end && inspect_request(b, s, h) != 0)
        goto oom;
    if (s->body[DOWN].holding) {
        s->held = *h; /* the head waits for its body's inspection */
        memset(h, 0, sizeof(*h));
        rv = continue_held(b, s);
        goto out;
    }
    rv = open_upstream(b, s, h, end);
out:
    head_free(b, h);
    return rv;
oom:
    head_free(b, h);
    return -1;
}

/* Trailers from leg: kept until the body before them has been passed on. */
static int trailers_in(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    struct h2_head *h = &s->rx[leg];
    struct h2_body *body = &s->body[leg];
    if (body->drop) {
        head_free(b, h);
        return 0;
    }
    if (h->too_big) {
        head_free(b, h);
        if (leg == DOWN) {
            set_end(s, H2_END_BAD_REQUEST, NGHTTP2_ENHANCE_YOUR_CALM, "request trailers too large");
            if (body_drop(b, s, DOWN) != 0 || reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
                return -1;
            return reset_leg(b, s, DOWN, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        set_end(s, H2_END_BAD_RESPONSE, NGHTTP2_INTERNAL_ERROR, "response trailers too large");
        if (body_drop(b, s, UP) != 0 || reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
            return -1;
        return reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
    }
    head_free(b, &body->trailers);
    body->trailers = *h;
    memset(h, 0, sizeof(*h));
    body->has_trailers = true;
    return 0;
}

/* --- the upstream's leg: response heads -------------------------------------------------- */

/* What the hooks see of a response head, with *x the exchange so far; resp->headers must be
 * freed with bfree. -1 on OOM. */
static int response_info(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                         struct h2_exchange *x, struct h2_response_info *resp)
{
    exchange_view(s, x);
    x->status = x->upstream_status = 0;
    *resp = (struct h2_response_info){
        .req = x, .status = s->upstream_status, .content_type = s->content_type};
    struct h2_header *hv = head_regular(b, h, &resp->n_headers);
    resp->headers = hv;
    return hv ? 0 : -1;
}

/* Asks on_response; 1 when blocked, 0 when allowed, -1 on OOM. */
static int ask_response(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    if (!b->hooks || !b->hooks->on_response)
        return 0;
    struct h2_exchange x;
    struct h2_response_info resp;
    if (response_info(b, s, h, &x, &resp) != 0)
        return -1;
    struct h2_block blk = {0};
    int action = b->hooks->on_response(b->arg, &resp, &blk);
    bfree(b, (void *)resp.headers);
    if (action != H2_BLOCK)
        return 0;
    copy_trunc(s->rule, sizeof(s->rule), blk.rule);
    copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    return 1;
}

/* Offers a response body; 0, or -1 on OOM. */
static int inspect_response(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    struct h2_exchange x;
    struct h2_response_info resp;
    if (!body_hooked(b))
        return 0;
    if (response_info(b, s, h, &x, &resp) != 0)
        return -1;
    inspect_begin(
        b, s, UP,
        &(struct h2_body_info){.response = true, .resp = &resp, .max_hold = b->cfg.stream_window});
    bfree(b, (void *)resp.headers);
    return 0;
}

static int submit_head_down(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h,
                            bool final, bool end)
{
    nghttp2_nv *nva = head_nva(b, h);
    if (!nva)
        return -1;
    int rv;
    if (final) {
        nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_body};
        rv = nghttp2_submit_response(b->sess[DOWN], s->id[DOWN], nva, h->n, end ? NULL : &dp);
    } else {
        rv = nghttp2_submit_headers(b->sess[DOWN], NGHTTP2_FLAG_NONE, s->id[DOWN], NULL, nva, h->n,
                                    NULL);
    }
    bfree(b, nva);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* The held response head goes to the client now, its body after it. */
static int release_response(struct h2_bridge *b, struct h2_stream *s)
{
    int rv = 0;
    s->body[UP].holding = false;
    if (!s->open[DOWN] || b->closed[DOWN]) {
        rv = body_drop(b, s, UP);
    } else {
        rv = submit_head_down(b, s, &s->held, true, false);
        s->status = s->upstream_status;
        s->resp_started = true;
    }
    head_free(b, &s->held);
    return rv;
}

static int release_held(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    return leg == DOWN ? release_request(b, s) : release_response(b, s);
}

/* A response head (1xx or final) or trailers arrived from the upstream. */
static int response_head(struct h2_bridge *b, struct h2_stream *s, bool end)
{
    struct h2_head *h = &s->rx[UP];
    if (s->body[UP].drop) {
        head_free(b, h);
        return 0;
    }
    if (s->final_in)
        return trailers_in(b, s, UP);
    const char *st = head_get(h, ":status");
    int status = st ? atoi(st) : 0;
    int rv = 0;
    if (status >= 100 && status < 200) { /* interim: passed on as is, not asked about */
        if (!h->too_big)
            rv = submit_head_down(b, s, h, false, false);
        goto out;
    }
    s->final_in = true;
    s->upstream_status = status;
    copy_trunc(s->content_type, sizeof(s->content_type), head_get(h, "content-type"));
    s->body[UP].eof = end;
    if (h->too_big || status < 200 || status > 599) { /* nghttp2 lets "053" through */
        set_end(s, H2_END_BAD_RESPONSE, 0,
                h->too_big ? "response head too large" : "invalid response status");
        rv = reply_local(b, s, 502);
        goto out;
    }
    int blocked = ask_response(b, s, h);
    if (blocked < 0) {
        rv = -1;
        goto out;
    }
    if (blocked) {
        set_end(s, H2_END_BLOCKED, 0, "response blocked by policy");
        rv = reply_local(b, s, 403);
        goto out;
    }
    if (!end && inspect_response(b, s, h) != 0) {
        rv = -1;
        goto out;
    }
    if (s->body[UP].holding) {
        s->held = *h; /* the head waits for its body's inspection */
        memset(h, 0, sizeof(*h));
        goto out;
    }
    rv = submit_head_down(b, s, h, true, end);
    s->status = status;
    s->resp_started = true;
out:
    head_free(b, h);
    return rv;
}

/* --- stream closure ---------------------------------------------------------------------- */

/* The upstream's stream closed (or its HEADERS never went out). */
static int up_closed(struct h2_bridge *b, struct h2_stream *s, uint32_t code)
{
    if (code == NGHTTP2_NO_ERROR && !(s->rst_in[UP] && !s->body[UP].eof)) {
        /* Done with it; the response keeps draining. A request body it did not take is
         * not wanted. */
        if (!s->body[DOWN].eof || s->body[DOWN].buf.len || s->body[DOWN].has_trailers)
            return abandon_request(b, s);
        return 0;
    }
    if (s->reset[UP]) /* we reset it: the client's side was dealt with already */
        return 0;
    if (s->body[UP].eof) /* complete response, then a reset: deliver it */
        return abandon_request(b, s);
    if (body_drop(b, s, DOWN) != 0 || body_drop(b, s, UP) != 0)
        return -1;
    if (s->rst_in[UP]) {
        set_end(s, code == NGHTTP2_REFUSED_STREAM ? H2_END_REFUSED : H2_END_RESET_BY_UPSTREAM, code,
                "upstream reset the stream");
        return reset_leg(b, s, DOWN, code);
    }
    if (code == NGHTTP2_REFUSED_STREAM) {
        set_end(s, H2_END_REFUSED, code, "upstream refused the stream (GOAWAY)");
        return reset_leg(b, s, DOWN, NGHTTP2_REFUSED_STREAM);
    }
    set_end(s, H2_END_BAD_RESPONSE, code, "malformed response from upstream");
    if (!s->resp_started)
        return reply_local(b, s, 502);
    return reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
}

/* The client's stream closed: the exchange is over for the client. */
static int down_closed(struct h2_bridge *b, struct h2_stream *s, uint32_t code)
{
    int rv = 0;
    if (code == NGHTTP2_NO_ERROR && s->end_sent[DOWN]) {
        /* The client has the whole response. Request bytes still buffered go on upstream;
         * a request it stopped sending (RST NO_ERROR) will not complete there. */
        if (!s->body[DOWN].eof &&
            (body_drop(b, s, DOWN) != 0 || reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0))
            rv = -1;
    } else {
        if (s->rst_in[DOWN])
            set_end(s, H2_END_RESET_BY_CLIENT, code, "client reset the stream");
        else if (code == NGHTTP2_REFUSED_STREAM)
            set_end(s, H2_END_REFUSED, code, "refused (GOAWAY)");
        else if (!s->head_done)
            set_end(s, H2_END_BAD_REQUEST, code, "malformed request");
        else
            set_end(s, H2_END_INCOMPLETE, code, "stream reset");
        if (body_drop(b, s, DOWN) != 0 || body_drop(b, s, UP) != 0)
            return -1;
        rv = reset_leg(b, s, UP, s->rst_in[DOWN] ? code : NGHTTP2_CANCEL);
    }
    report(b, s);
    return rv;
}

static int leg_closed(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code)
{
    if (!s->open[leg])
        return 0;
    s->open[leg] = false;
    int rv = leg == UP ? up_closed(b, s, code) : down_closed(b, s, code);
    stream_maybe_free(b, s);
    return rv;
}

/* --- GOAWAY ------------------------------------------------------------------------------ */

static int goaway(struct h2_bridge *b, int leg, int32_t last, uint32_t code)
{
    if (b->closed[leg])
        return 0;
    b->goaway_out[leg] = true;
    if (code != NGHTTP2_NO_ERROR)
        b->own_goaway_err[leg] = true;
    int rv = nghttp2_submit_goaway(b->sess[leg], NGHTTP2_FLAG_NONE, last, code, NULL, 0);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* The upstream will process no stream above last: the client learns the highest of its
 * streams that may still complete. Those above are refused by nghttp2 on both legs (closed
 * with REFUSED_STREAM), and a refusal crosses over as RST_STREAM(REFUSED_STREAM). */
static int upstream_goaway(struct h2_bridge *b, int32_t last, uint32_t code)
{
    b->stopping = true;
    int32_t keep = b->max_done_id;
    for (struct h2_stream *s = b->streams; s; s = s->next) {
        if (!s->open[DOWN])
            continue;
        bool kept = s->local_reply || (s->id[UP] > 0 && s->id[UP] <= last) ||
                    (s->head_done && !s->open[UP] && s->body[UP].eof);
        if (kept && s->id[DOWN] > keep)
            keep = s->id[DOWN];
    }
    return goaway(b, DOWN, keep, code);
}

/* --- nghttp2 callbacks (both sessions) --------------------------------------------------- */

static int leg_of(const struct h2_bridge *b, const nghttp2_session *session)
{
    return session == b->sess[UP] ? UP : DOWN;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_bridge *b = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || leg_of(b, session) != DOWN ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (b->n_streams >= 2 * (size_t)b->cfg.max_concurrent) {
        /* streams waiting for the upstream to take or drop them: bound them */
        int rv = nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                           NGHTTP2_REFUSED_STREAM);
        return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    struct h2_stream *s = stream_new(b, frame->hd.stream_id);
    if (!s || nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2_bridge *b = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    int leg = leg_of(b, session);
    if (!s || s->body[leg].drop)
        return 0;
    if (head_add(b, &s->rx[leg], name, namelen, value, valuelen, flags) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* DATA from leg for a live stream: inspected first when asked, then buffered for the other
 * leg, or held with its head (given back to the sender's connection window at once). */
static int body_data(struct h2_bridge *b, struct h2_stream *s, int leg, const uint8_t *data,
                     size_t len)
{
    struct h2_body *body = &s->body[leg];
    int v = inspect_data(b, s, leg, data, len, false);
    if (v == H2_BODY_BLOCK) {
        body->bytes += len;
        if (consume(b, leg, s->id[leg], len, true) != 0)
            return -1;
        return inspect_blocked(b, s, leg);
    }
    if (sbuf_add(b, &body->buf, data, len) != 0)
        return -1;
    body->bytes += len;
    if (!body->holding) {
        wake(b, s, OTHER(leg));
        return 0;
    }
    if (nghttp2_is_fatal(nghttp2_session_consume_connection(b->sess[leg], len)))
        return -1;
    body->preconsumed += len;
    if (v == H2_BODY_DONE || body->seen >= body->hold)
        return release_held(b, s, leg);
    return 0;
}

/* END_STREAM from leg: the inspection ends, and a held head goes on (or is blocked). */
static int body_ended(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    struct h2_body *body = &s->body[leg];
    body->eof = true;
    if (inspect_data(b, s, leg, NULL, 0, true) == H2_BODY_BLOCK)
        return inspect_blocked(b, s, leg);
    if (body->holding)
        return release_held(b, s, leg);
    wake(b, s, OTHER(leg));
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *ud)
{
    struct h2_bridge *b = ud;
    int leg = leg_of(b, session);
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || s->body[leg].drop) {
        int rv = nghttp2_session_consume(session, stream_id, len);
        return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    return body_data(b, s, leg, data, len) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_bridge *b = ud;
    int leg = leg_of(b, session);
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    struct h2_stream *s = NULL;
    int rv = 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!s)
            return 0;
        if (leg == DOWN)
            rv = s->head_done ? trailers_in(b, s, DOWN) : request_head(b, s, end);
        else
            rv = response_head(b, s, end);
        break;
    case NGHTTP2_DATA:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        break;
    case NGHTTP2_RST_STREAM:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s) {
            s->rst_in[leg] = true;
            s->rst_code[leg] = frame->rst_stream.error_code;
        }
        return 0;
    case NGHTTP2_GOAWAY:
        if (leg == UP)
            rv = upstream_goaway(b, frame->goaway.last_stream_id, frame->goaway.error_code);
        else if (!b->goaway_out[UP]) /* the client opens no more streams: tell the upstream */
            rv = goaway(b, UP, 0, frame->goaway.error_code);
        return rv ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    default:
        return 0;
    }
    if (rv != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (s && end && !s->body[leg].drop && body_ended(b, s, leg) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_bridge *b = ud;
    int leg = leg_of(b, session);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR && !b->own_goaway_err[leg])
            fail(b, leg, nghttp2_http2_strerror(frame->goaway.error_code));
        return 0;
    }
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s)
        return 0;
    s->end_sent[leg] = true;
    if (leg == DOWN && maybe_rst_after(b, s) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int err,
                             void *ud)
{
    struct h2_bridge *b = ud;
    if (leg_of(b, session) != UP || frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    /* A request that never went out. If nghttp2 opened the stream, on_stream_close
     * follows; otherwise this is the stream's end on this leg. */
    if (nghttp2_session_find_stream(session, frame->hd.stream_id))
        return 0;
    struct h2_stream *s = stream_by_up_id(b, frame->hd.stream_id);
    if (!s)
        return 0;
    uint32_t code = err == NGHTTP2_ERR_STREAM_CLOSING ? NGHTTP2_CANCEL : NGHTTP2_REFUSED_STREAM;
    return leg_closed(b, s, UP, code) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t code, void *ud)
{
    struct h2_bridge *b = ud;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    return leg_closed(b, s, leg_of(b, session), code) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *ud)
{
    struct h2_bridge *b = ud;
    int leg = leg_of(b, session);
    snprintf(b->lib_err[leg], sizeof(b->lib_err[leg]), "%.*s", (int)len, msg);
    return 0;
}

/* --- driving the sessions ---------------------------------------------------------------- */

/* A failure was recorded but finish() has not handled it: drive nothing. */
static bool halted(const struct h2_bridge *b)
{
    return b->fail_leg >= 0 && !b->fail_handled;
}

/* Pulls frames from leg's session until its output reaches H2_OUT_HIGH, a large frame is
 * handed out directly, or nghttp2 has nothing more. */
static void fill(struct h2_bridge *b, int leg, bool *progress)
{
    struct h2_out *o = &b->out[leg];
    while (!b->closed[leg] && !b->broken[leg] && !halted(b) && o->dlen == 0 &&
           o->len - o->off < H2_OUT_HIGH) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(b->sess[leg], &p);
        if (n < 0) {
            b->broken[leg] = true;
            fail(b, leg, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            return;
        *progress = true;
        if (o->len == o->off && (size_t)n >= H2_DIRECT_MIN) {
            out_reset(b, o);
            o->direct = p;
            o->dlen = (size_t)n;
            return;
        }
        if (out_append(b, o, p, (size_t)n) != 0) {
            /* nghttp2 counts the frame as sent: the leg's stream of frames is cut here */
            b->broken[leg] = true;
            fail(b, leg, "out of memory");
            return;
        }
    }
}

/* Runs both sessions' output until neither produces more: taking bytes into one leg's
 * frames consumes them on the other, whose WINDOW_UPDATE is then due, and so on. */
static void flush(struct h2_bridge *b)
{
    bool progress;
    do {
        progress = false;
        fill(b, UP, &progress);
        fill(b, DOWN, &progress);
    } while (progress && !halted(b));
}

/* The client's leg is gone: every stream ends for it; the upstream is told. */
static void client_gone(struct h2_bridge *b, bool keep_output)
{
    if (b->closed[DOWN])
        return;
    if (!keep_output)
        out_reset(b, &b->out[DOWN]);
    b->closed[DOWN] = true;
    b->stopping = true;
    int rv = 0;
    struct h2_stream *next;
    for (struct h2_stream *s = b->streams; s; s = next) {
        next = s->next;
        if (s->open[DOWN]) {
            s->open[DOWN] = false;
            set_end(s, H2_END_INCOMPLETE, 0, "client connection closed");
            report(b, s);
        }
        rv |= body_drop(b, s, DOWN);
        rv |= body_drop(b, s, UP);
        rv |= reset_leg(b, s, UP, NGHTTP2_CANCEL);
        stream_maybe_free(b, s);
    }
    if (!b->goaway_out[UP])
        rv |= goaway(b, UP, 0, NGHTTP2_NO_ERROR);
    if (rv)
        fail(b, UP, "out of memory");
}

static int upstream_gone_stream(struct h2_bridge *b, struct h2_stream *s)
{
    if (!s->open[UP] && s->body[DOWN].holding && s->open[DOWN])
        return refuse(b, s, "upstream closed before the request was sent");
    if (!s->open[UP])
        return 0;
    s->open[UP] = false;
    if (s->body[UP].eof) /* the whole response arrived: it is still delivered */
        return abandon_request(b, s);
    bool sent = nghttp2_session_find_stream(b->sess[UP], s->id[UP]) != NULL;
    if (body_drop(b, s, DOWN) != 0 || body_drop(b, s, UP) != 0)
        return -1;
    if (!sent)
        return refuse(b, s, "upstream closed before the request was sent");
    if (!s->resp_started) {
        set_end(s, H2_END_BAD_RESPONSE, 0, "upstream closed the connection");
        return reply_local(b, s, 502);
    }
    set_end(s, H2_END_INCOMPLETE, NGHTTP2_INTERNAL_ERROR, "upstream closed mid-response");
    return reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
}

/* The upstream's leg is gone: complete responses drain, the rest is answered, the client is
 * told to go away once its streams are done. */
static void upstream_gone(struct h2_bridge *b, bool keep_output)
{
    if (b->closed[UP])
        return;
    if (!keep_output)
        out_reset(b, &b->out[UP]);
    b->closed[UP] = true;
    b->stopping = true;
    int rv = 0;
    struct h2_stream *next;
    for (struct h2_stream *s = b->streams; s; s = next) {
        next = s->next;
        rv |= upstream_gone_stream(b, s);
        stream_maybe_free(b, s);
    }
    if (!b->closed[DOWN] && !b->goaway_out[DOWN])
        rv |= goaway(b, DOWN, nghttp2_session_get_last_proc_stream_id(b->sess[DOWN]),
                     NGHTTP2_NO_ERROR);
    if (rv)
        fail(b, DOWN, "out of memory");
}

static void leg_gone(struct h2_bridge *b, int leg, bool keep_output)
{
    if (leg == DOWN)
        client_gone(b, keep_output);
    else
        upstream_gone(b, keep_output);
}

/* Ends every public call: produces output, and tears the bridge down after a failure (the
 * failed leg first, so the other leg's resets and GOAWAY can still be written). */
static int finish(struct h2_bridge *b)
{
    flush(b);
    if (b->error && !b->fail_handled) {
        b->fail_handled = true;
        int leg = b->fail_leg;
        leg_gone(b, leg, true);
        flush(b); /* the other leg's resets and GOAWAY */
        leg_gone(b, OTHER(leg), true);
    }
    return b->error ? -1 : 0;
}

/* --- public API -------------------------------------------------------------------------- */

static int session_setup(struct h2_bridge *b, int leg, const nghttp2_session_callbacks *cbs)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return -1;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv;
    if (leg == DOWN) {
        nghttp2_option_set_no_closed_streams(opt, 1);
        rv = nghttp2_session_server_new3(&b->sess[DOWN], cbs, b, opt, &b->nmem);
    } else {
        nghttp2_option_set_peer_max_concurrent_streams(opt, b->cfg.max_concurrent);
        rv = nghttp2_session_client_new3(&b->sess[UP], cbs, b, opt, &b->nmem);
    }
    nghttp2_option_del(opt);
    if (rv != 0)
        return -1;
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, b->cfg.stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEAD},
        leg == DOWN ? (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                               b->cfg.max_concurrent}
                    : (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(b->sess[leg], NGHTTP2_FLAG_NONE, iv, 3) != 0)
        return -1;
    if (nghttp2_session_set_local_window_size(b->sess[leg], NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)b->cfg.conn_window) != 0)
        return -1;
    return 0;
}

struct h2_bridge *h2_bridge_new(const struct h2_hooks *hooks, void *arg,
                                const struct h2_config *cfg)
{
    struct h2_bridge *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->mem = b->mem_peak = sizeof(*b);
    b->hooks = hooks;
    b->arg = arg;
    b->fail_leg = -1;
    if (cfg)
        b->cfg = *cfg;
    if (!b->cfg.stream_window)
        b->cfg.stream_window = H2_STREAM_WINDOW;
    if (b->cfg.stream_window > NGHTTP2_MAX_WINDOW_SIZE)
        b->cfg.stream_window = NGHTTP2_MAX_WINDOW_SIZE;
    if (b->cfg.conn_window < b->cfg.stream_window)
        b->cfg.conn_window =
            b->cfg.stream_window > H2_CONN_WINDOW ? b->cfg.stream_window : H2_CONN_WINDOW;
    if (b->cfg.conn_window > NGHTTP2_MAX_WINDOW_SIZE)
        b->cfg.conn_window = NGHTTP2_MAX_WINDOW_SIZE;
    if (!b->cfg.max_concurrent)
        b->cfg.max_concurrent = H2_MAX_CONCURRENT;
    if (!b->cfg.mem_limit)
        b->cfg.mem_limit = H2_MEM_LIMIT;
    b->nmem = (nghttp2_mem){b, nm_malloc, nm_free, nm_calloc, nm_realloc};

    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(b);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    int ok = session_setup(b, DOWN, cbs) == 0 && session_setup(b, UP, cbs) == 0;
    nghttp2_session_callbacks_del(cbs);
    if (!ok) {
        h2_bridge_free(b);
        return NULL;
    }
    finish(b);
    return b;
}

void h2_bridge_free(struct h2_bridge *b)
{
    if (!b)
        return;
    while (b->streams) {
        struct h2_stream *s = b->streams;
        set_end(s, H2_END_INCOMPLETE, 0, "connection closed");
        report(b, s);
        stream_free(b, s);
    }
    out_reset(b, &b->out[DOWN]);
    out_reset(b, &b->out[UP]);
    nghttp2_session_del(b->sess[DOWN]);
    nghttp2_session_del(b->sess[UP]);
    free(b);
}

static int recv_from(struct h2_bridge *b, int leg, const uint8_t *data, size_t len)
{
    if (b->error)
        return -1;
    if (b->closed[leg] || len == 0)
        return 0;
    ssize_t n = nghttp2_session_mem_recv(b->sess[leg], data, len);
    if (n < 0) {
        b->broken[leg] = true; /* every error of mem_recv is fatal to the session */
        fail(b, leg,
             n == NGHTTP2_ERR_BAD_CLIENT_MAGIC   ? "not an HTTP/2 connection preface"
             : n == NGHTTP2_ERR_FLOODED          ? "flooding (too many frames to answer)"
             : n == NGHTTP2_ERR_CALLBACK_FAILURE ? "out of memory"
                                                 : nghttp2_strerror((int)n));
    }
    return finish(b);
}

int h2_bridge_from_client(struct h2_bridge *b, const uint8_t *data, size_t len)
{
    return recv_from(b, DOWN, data, len);
}

int h2_bridge_from_upstream(struct h2_bridge *b, const uint8_t *data, size_t len)
{
    return recv_from(b, UP, data, len);
}

int h2_bridge_eof_from_client(struct h2_bridge *b)
{
    if (!b->error)
        client_gone(b, false);
    return finish(b);
}

int h2_bridge_eof_from_upstream(struct h2_bridge *b)
{
    if (!b->error)
        upstream_gone(b, false);
    return finish(b);
}

void h2_bridge_shutdown(struct h2_bridge *b)
{
    if (b->error)
        return;
    b->stopping = true;
    if (!b->closed[DOWN] && !b->goaway_out[DOWN])
        goaway(b, DOWN, nghttp2_session_get_last_proc_stream_id(b->sess[DOWN]), NGHTTP2_NO_ERROR);
    if (!b->closed[UP] && !b->goaway_out[UP])
        goaway(b, UP, 0, NGHTTP2_NO_ERROR);
    finish(b);
}

static void sent(struct h2_bridge *b, int leg, size_t n)
{
    struct h2_out *o = &b->out[leg];
    if (o->dlen) {
        n = n < o->dlen ? n : o->dlen;
        o->direct += n;
        o->dlen -= n;
    } else {
        n = n < o->len - o->off ? n : o->len - o->off;
        o->off += n;
        if (o->off == o->len)
            out_reset(b, o); /* an idle leg holds no buffer */
    }
    finish(b);
}

size_t h2_bridge_pending_to_client(struct h2_bridge *b, const uint8_t **data)
{
    return out_pending(&b->out[DOWN], data);
}

void h2_bridge_sent_to_client(struct h2_bridge *b, size_t n)
{
    sent(b, DOWN, n);
}

size_t h2_bridge_pending_to_upstream(struct h2_bridge *b, const uint8_t **data)
{
    return out_pending(&b->out[UP], data);
}

void h2_bridge_sent_to_upstream(struct h2_bridge *b, size_t n)
{
    sent(b, UP, n);
}

static bool wants_from(const struct h2_bridge *b, int leg)
{
    return !b->error && !b->closed[leg] && nghttp2_session_want_read(b->sess[leg]) &&
           out_len(&b->out[OTHER(leg)]) < H2_OUT_HIGH;
}

bool h2_bridge_wants_from_client(const struct h2_bridge *b)
{
    return wants_from(b, DOWN);
}

bool h2_bridge_wants_from_upstream(const struct h2_bridge *b)
{
    return wants_from(b, UP);
}

static bool leg_finished(const struct h2_bridge *b, int leg)
{
    if (out_len(&b->out[leg]))
        return false;
    return b->closed[leg] ||
           (!nghttp2_session_want_read(b->sess[leg]) && !nghttp2_session_want_write(b->sess[leg]));
}

bool h2_bridge_done(const struct h2_bridge *b)
{
    if (b->error)
        return !out_len(&b->out[DOWN]) && !out_len(&b->out[UP]);
    return leg_finished(b, DOWN) && leg_finished(b, UP);
}

const char *h2_bridge_error(const struct h2_bridge *b)
{
    return b->error;
}

size_t h2_bridge_memory(const struct h2_bridge *b)
{
    return b->mem;
}

size_t h2_bridge_memory_peak(const struct h2_bridge *b)
{
    return b->mem_peak;
}
