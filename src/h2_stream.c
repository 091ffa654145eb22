/* h2_stream: the HTTP/2 bridge's streams, each joining a client stream to its upstream one:
 * their records and the exchange report, flow control given back per stream, resets, request
 * and response heads (asked about, then opened upstream or passed down), the gateway's local
 * replies (403 page, 431, 502), and the stream's closure on either leg. */
#include "h2_int.h"

#include "html.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define H2_PAGE_MAX 4096

/* --- streams ----------------------------------------------------------------------------- */

static int64_t now_us(const struct h2_bridge *b)
{
    if (b->hooks && b->hooks->now_us)
        return b->hooks->now_us(b->arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void h2_copy_trunc(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

struct h2_stream *h2_stream_new(struct h2_bridge *b, int32_t down_id)
{
    struct h2_stream *s = h2_mem_alloc(b, sizeof(*s));
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
struct h2_stream *h2_stream_by_up_id(struct h2_bridge *b, int32_t id)
{
    for (struct h2_stream *s = b->streams; s; s = s->next)
        if (s->id[UP] == id)
            return s;
    return NULL;
}

void h2_set_end(struct h2_stream *s, enum h2_end end, uint32_t code, const char *why)
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
void h2_stream_report(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->reported)
        return;
    s->reported = true;
    if (!s->end_set)
        h2_set_end(s, s->end_sent[DOWN] ? H2_END_COMPLETE : H2_END_INCOMPLETE, 0,
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

void h2_stream_free(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        b->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    b->n_streams--;
    for (int leg = 0; leg < 2; leg++) {
        h2_inspect_stop(b, s, leg);
        h2_head_free(b, &s->rx[leg]);
        h2_head_free(b, &s->body[leg].trailers);
        h2_sbuf_clear(b, &s->body[leg].buf);
    }
    h2_head_free(b, &s->held);
    h2_mem_free(b, s->meta);
    h2_mem_free(b, s);
}

/* Frees the stream once neither session can mention it again. */
void h2_stream_maybe_free(struct h2_bridge *b, struct h2_stream *s)
{
    if (s->open[DOWN] || s->open[UP])
        return;
    h2_stream_report(b, s);
    h2_stream_free(b, s);
}

/* Tells leg's session that n bytes of stream id were passed on (or dropped): WINDOW_UPDATE. */
int h2_consume(struct h2_bridge *b, int leg, int32_t id, size_t n, bool stream_level)
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
    return h2_consume(b, from, s->id[from], n - pre, s->open[from]);
}

/* Discards what came from leg and was not passed on yet, and whatever still comes. */
int h2_body_drop(struct h2_bridge *b, struct h2_stream *s, int from)
{
    struct h2_body *body = &s->body[from];
    size_t n = h2_sbuf_clear(b, &body->buf);
    h2_head_free(b, &body->trailers);
    body->has_trailers = false;
    body->drop = true;
    body->holding = false;
    h2_inspect_stop(b, s, from);
    return body->local ? 0 : consume_body(b, s, from, n);
}

int h2_reset_leg(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code)
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
 * response) once it has sent one more stream window of it. Not at once: RFC 9113 says the
 * client must keep the response, but curl 7.88 (Debian 12's) drops it when the reset comes
 * while it is still uploading, and a client that was about to end its upload anyway should
 * simply end it. The bytes that come meanwhile are dropped, their windows given back. */
int h2_maybe_rst_after(struct h2_bridge *b, struct h2_stream *s)
{
    if (!s->rst_after_resp || !s->end_sent[DOWN] || !s->open[DOWN] || b->closed[DOWN])
        return 0;
    if (s->discarded < b->cfg.stream_window)
        return 0;
    if (nghttp2_session_get_stream_remote_close(b->sess[DOWN], s->id[DOWN]))
        return 0;
    return h2_reset_leg(b, s, DOWN, NGHTTP2_NO_ERROR);
}

/* The request body will not reach the upstream (blocked, answered locally, or the upstream
 * stopped reading it): drop it, keep the client's window open, stop it after the response. */
int h2_abandon_request(struct h2_bridge *b, struct h2_stream *s)
{
    if (h2_body_drop(b, s, DOWN) != 0)
        return -1;
    s->rst_after_resp = true;
    return h2_maybe_rst_after(b, s);
}

void h2_wake(struct h2_bridge *b, struct h2_stream *s, int to)
{
    if (s->open[to] && s->id[to] > 0 && !b->closed[to])
        nghttp2_session_resume_data(b->sess[to], s->id[to]); /* may have nothing deferred */
}

/* --- data providers ---------------------------------------------------------------------- */

/* Feeds a DATA frame on session `to` from the stream's buffer of the other leg. Bytes taken
 * here are consumed on their source leg: end-to-end flow control. */
ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                     uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct h2_bridge *b = ud;
    struct h2_stream *s = source->ptr;
    int to = session == b->sess[UP] ? UP : DOWN;
    int from = OTHER(to);
    struct h2_body *body = &s->body[from];
    size_t n = h2_sbuf_take(b, &body->buf, buf, length);
    if (!body->local && consume_body(b, s, from, n) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (body->buf.len == 0 && body->eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (body->has_trailers) {
            nghttp2_nv *nva = h2_head_nva(b, &body->trailers);
            if (!nva)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            int rv = nghttp2_submit_trailer(session, stream_id, nva, body->trailers.n);
            h2_mem_free(b, nva);
            h2_head_free(b, &body->trailers);
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

/* Answers the client's stream with the gateway's own response (403 page, 431, 502) instead of
 * the upstream's: the upstream stream, if any, is reset and the request body abandoned. If a
 * response head already went out, the client's stream is reset instead. */
int h2_reply_local(struct h2_bridge *b, struct h2_stream *s, int status)
{
    if (h2_reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
        return -1;
    if (s->resp_started) {
        if (h2_body_drop(b, s, UP) != 0)
            return -1;
        return h2_reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
    }
    if (!s->open[DOWN] || b->closed[DOWN])
        return h2_body_drop(b, s, UP);
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
            blen = html_default_block_page(body, sizeof(body), x.authority, x.rule, x.ref);
        ctype = "text/html; charset=utf-8";
    } else {
        int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, reason(status),
                         s->why ? s->why : "");
        blen = n > 0 ? ((size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1) : 0;
    }
    if (h2_body_drop(b, s, UP) != 0)
        return -1;
    struct h2_body *out = &s->body[UP];
    out->local = true;
    out->eof = true;
    if (!s->is_head && h2_sbuf_add(b, &out->buf, (const uint8_t *)body, blen) != 0)
        return -1;
    char st[4], clen[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(clen, sizeof(clen), "%zu", blen);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {NV(":status", st), NV("content-type", ctype), NV("content-length", clen),
                        NV("cache-control", "no-store")};
#undef NV
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = h2_read_body};
    int rv = nghttp2_submit_response(b->sess[DOWN], s->id[DOWN], nva, 4, out->buf.len ? &dp : NULL);
    if (nghttp2_is_fatal(rv))
        return -1;
    s->resp_started = true;
    s->local_reply = true;
    return h2_abandon_request(b, s);
}

/* Refuses a request that will not be processed: the client may retry it elsewhere. */
int h2_refuse(struct h2_bridge *b, struct h2_stream *s, const char *why)
{
    h2_set_end(s, H2_END_REFUSED, NGHTTP2_REFUSED_STREAM, why);
    if (h2_body_drop(b, s, DOWN) != 0)
        return -1;
    return h2_reset_leg(b, s, DOWN, NGHTTP2_REFUSED_STREAM);
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
    const char *v[4] = {h2_head_get(h, ":method"), h2_head_get(h, ":scheme"),
                        h2_head_get(h, ":authority"), h2_head_get(h, ":path")};
    if (!v[2])
        v[2] = h2_head_get(h, "host");
    size_t len[4], total = 0;
    for (int i = 0; i < 4; i++) {
        if (!v[i])
            v[i] = "";
        len[i] = strlen(v[i]);
        total += len[i] + 1;
    }
    s->meta = h2_mem_alloc(b, total);
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

/* What the hooks see of a request head; req->headers must be freed with h2_mem_free. -1 on OOM. */
int h2_request_view(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                    bool end, struct h2_request_info *req)
{
    *req = (struct h2_request_info){
        .stream_id = s->id[DOWN],
        .seq = s->seq,
        .method = s->method,
        .scheme = s->scheme,
        .authority = s->authority,
        .path = s->path,
        .content_length = end ? 0 : parse_length(h2_head_get(h, "content-length")),
    };
    struct h2_header *hv = h2_head_regular(b, h, &req->n_headers);
    req->headers = hv;
    return hv ? 0 : -1;
}

/* Asks on_request; 1 when blocked (rule and ref copied), 0 when allowed, -1 on OOM. */
static int ask_request(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h, bool end)
{
    if (!b->hooks || !b->hooks->on_request)
        return 0;
    struct h2_request_info req;
    if (h2_request_view(b, s, h, end, &req) != 0)
        return -1;
    struct h2_block blk = {0};
    int action = b->hooks->on_request(b->arg, &req, &blk);
    h2_mem_free(b, (void *)req.headers);
    if (action != H2_BLOCK)
        return 0;
    h2_copy_trunc(s->rule, sizeof(s->rule), blk.rule);
    h2_copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    return 1;
}

/* Opens the upstream stream for the request head h (borrowed). 0, or -1 on OOM. */
int h2_open_upstream(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h, bool end)
{
    nghttp2_nv *nva = h2_head_nva(b, h);
    if (!nva)
        return -1;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = h2_read_body};
    int32_t id = nghttp2_submit_request(b->sess[UP], NULL, nva, h->n, end ? NULL : &dp, s);
    h2_mem_free(b, nva);
    if (nghttp2_is_fatal(id))
        return -1;
    if (id < 0)
        return h2_refuse(b, s, "no upstream stream available");
    s->id[UP] = id;
    s->open[UP] = true;
    return 0;
}

/* A held request whose client waits for 100 Continue gets one from the gateway (the
 * upstream's own may follow; clients take several). */
static int continue_held(struct h2_bridge *b, struct h2_stream *s)
{
    const char *expect = h2_head_get(&s->held, "expect");
    if (!expect || strcasecmp(expect, "100-continue") != 0)
        return 0;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    int rv =
        nghttp2_submit_headers(b->sess[DOWN], NGHTTP2_FLAG_NONE, s->id[DOWN], NULL, &nv, 1, NULL);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* A request head is complete: refuse, block, or open the mapped stream upstream. */
int h2_request_head(struct h2_bridge *b, struct h2_stream *s, bool end)
{
    struct h2_head *h = &s->rx[DOWN];
    s->head_done = true;
    s->body[DOWN].eof = end;
    int rv = 0;
    if (request_meta(b, s, h) != 0)
        goto oom;
    if (h->too_big) {
        h2_set_end(s, H2_END_BAD_REQUEST, 0, "request head too large");
        rv = h2_reply_local(b, s, 431);
        goto out;
    }
    if (b->stopping || b->closed[UP] || !nghttp2_session_check_request_allowed(b->sess[UP])) {
        rv = h2_refuse(b, s, "upstream connection going away");
        goto out;
    }
    int blocked = ask_request(b, s, h, end);
    if (blocked < 0)
        goto oom;
    if (blocked) {
        h2_set_end(s, H2_END_BLOCKED, 0, "request blocked by policy");
        rv = h2_reply_local(b, s, 403);
        goto out;
    }
    if (!end && h2_inspect_request(b, s, h) != 0)
        goto oom;
    if (s->body[DOWN].holding) {
        s->held = *h; /* the head waits for its body's inspection */
        memset(h, 0, sizeof(*h));
        rv = continue_held(b, s);
        goto out;
    }
    rv = h2_open_upstream(b, s, h, end);
out:
    h2_head_free(b, h);
    return rv;
oom:
    h2_head_free(b, h);
    return -1;
}

/* Trailers from leg: kept until the body before them has been passed on. */
int h2_trailers_in(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    struct h2_head *h = &s->rx[leg];
    struct h2_body *body = &s->body[leg];
    if (body->drop) {
        h2_head_free(b, h);
        return 0;
    }
    if (h->too_big) {
        h2_head_free(b, h);
        if (leg == DOWN) {
            h2_set_end(s, H2_END_BAD_REQUEST, NGHTTP2_ENHANCE_YOUR_CALM,
                       "request trailers too large");
            if (h2_body_drop(b, s, DOWN) != 0 || h2_reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
                return -1;
            return h2_reset_leg(b, s, DOWN, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        h2_set_end(s, H2_END_BAD_RESPONSE, NGHTTP2_INTERNAL_ERROR, "response trailers too large");
        if (h2_body_drop(b, s, UP) != 0 || h2_reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0)
            return -1;
        return h2_reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
    }
    h2_head_free(b, &body->trailers);
    body->trailers = *h;
    memset(h, 0, sizeof(*h));
    body->has_trailers = true;
    return 0;
}

/* --- the upstream's leg: response heads -------------------------------------------------- */

/* What the hooks see of a response head, with *x the exchange so far; resp->headers must be
 * freed with h2_mem_free. -1 on OOM. */
int h2_response_view(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                     struct h2_exchange *x, struct h2_response_info *resp)
{
    exchange_view(s, x);
    x->status = x->upstream_status = 0;
    *resp = (struct h2_response_info){
        .req = x, .status = s->upstream_status, .content_type = s->content_type};
    struct h2_header *hv = h2_head_regular(b, h, &resp->n_headers);
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
    if (h2_response_view(b, s, h, &x, &resp) != 0)
        return -1;
    struct h2_block blk = {0};
    int action = b->hooks->on_response(b->arg, &resp, &blk);
    h2_mem_free(b, (void *)resp.headers);
    if (action != H2_BLOCK)
        return 0;
    h2_copy_trunc(s->rule, sizeof(s->rule), blk.rule);
    h2_copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    return 1;
}

int h2_submit_head_down(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h,
                        bool final, bool end)
{
    nghttp2_nv *nva = h2_head_nva(b, h);
    if (!nva)
        return -1;
    int rv;
    if (final) {
        nghttp2_data_provider dp = {.source.ptr = s, .read_callback = h2_read_body};
        rv = nghttp2_submit_response(b->sess[DOWN], s->id[DOWN], nva, h->n, end ? NULL : &dp);
    } else {
        rv = nghttp2_submit_headers(b->sess[DOWN], NGHTTP2_FLAG_NONE, s->id[DOWN], NULL, nva, h->n,
                                    NULL);
    }
    h2_mem_free(b, nva);
    return nghttp2_is_fatal(rv) ? -1 : 0;
}

/* A response head (1xx or final) or trailers arrived from the upstream. */
int h2_response_head(struct h2_bridge *b, struct h2_stream *s, bool end)
{
    struct h2_head *h = &s->rx[UP];
    if (s->body[UP].drop) {
        h2_head_free(b, h);
        return 0;
    }
    if (s->final_in)
        return h2_trailers_in(b, s, UP);
    const char *st = h2_head_get(h, ":status");
    int status = st ? atoi(st) : 0;
    int rv = 0;
    if (status >= 100 && status < 200) { /* interim: passed on as is, not asked about */
        if (!h->too_big)
            rv = h2_submit_head_down(b, s, h, false, false);
        goto out;
    }
    s->final_in = true;
    s->upstream_status = status;
    h2_copy_trunc(s->content_type, sizeof(s->content_type), h2_head_get(h, "content-type"));
    s->body[UP].eof = end;
    if (h->too_big || status < 200 || status > 599) { /* nghttp2 lets "053" through */
        h2_set_end(s, H2_END_BAD_RESPONSE, 0,
                   h->too_big ? "response head too large" : "invalid response status");
        rv = h2_reply_local(b, s, 502);
        goto out;
    }
    int blocked = ask_response(b, s, h);
    if (blocked < 0) {
        rv = -1;
        goto out;
    }
    if (blocked) {
        h2_set_end(s, H2_END_BLOCKED, 0, "response blocked by policy");
        rv = h2_reply_local(b, s, 403);
        goto out;
    }
    if (!end && h2_inspect_response(b, s, h) != 0) {
        rv = -1;
        goto out;
    }
    if (s->body[UP].holding) {
        s->held = *h; /* the head waits for its body's inspection */
        memset(h, 0, sizeof(*h));
        goto out;
    }
    rv = h2_submit_head_down(b, s, h, true, end);
    s->status = status;
    s->resp_started = true;
out:
    h2_head_free(b, h);
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
            return h2_abandon_request(b, s);
        return 0;
    }
    if (s->reset[UP]) /* we reset it: the client's side was dealt with already */
        return 0;
    if (s->body[UP].eof) /* complete response, then a reset: deliver it */
        return h2_abandon_request(b, s);
    if (h2_body_drop(b, s, DOWN) != 0 || h2_body_drop(b, s, UP) != 0)
        return -1;
    if (s->rst_in[UP]) {
        h2_set_end(s, code == NGHTTP2_REFUSED_STREAM ? H2_END_REFUSED : H2_END_RESET_BY_UPSTREAM,
                   code, "upstream reset the stream");
        return h2_reset_leg(b, s, DOWN, code);
    }
    if (code == NGHTTP2_REFUSED_STREAM) {
        h2_set_end(s, H2_END_REFUSED, code, "upstream refused the stream (GOAWAY)");
        return h2_reset_leg(b, s, DOWN, NGHTTP2_REFUSED_STREAM);
    }
    h2_set_end(s, H2_END_BAD_RESPONSE, code, "malformed response from upstream");
    if (!s->resp_started)
        return h2_reply_local(b, s, 502);
    return h2_reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
}

/* The client's stream closed: the exchange is over for the client. */
static int down_closed(struct h2_bridge *b, struct h2_stream *s, uint32_t code)
{
    int rv = 0;
    if (code == NGHTTP2_NO_ERROR && s->end_sent[DOWN]) {
        /* The client has the whole response. Request bytes still buffered go on upstream;
         * a request it stopped sending (RST NO_ERROR) will not complete there. */
        if (!s->body[DOWN].eof &&
            (h2_body_drop(b, s, DOWN) != 0 || h2_reset_leg(b, s, UP, NGHTTP2_CANCEL) != 0))
            rv = -1;
    } else {
        if (s->rst_in[DOWN])
            h2_set_end(s, H2_END_RESET_BY_CLIENT, code, "client reset the stream");
        else if (code == NGHTTP2_REFUSED_STREAM)
            h2_set_end(s, H2_END_REFUSED, code, "refused (GOAWAY)");
        else if (!s->head_done)
            h2_set_end(s, H2_END_BAD_REQUEST, code, "malformed request");
        else
            h2_set_end(s, H2_END_INCOMPLETE, code, "stream reset");
        if (h2_body_drop(b, s, DOWN) != 0 || h2_body_drop(b, s, UP) != 0)
            return -1;
        rv = h2_reset_leg(b, s, UP, s->rst_in[DOWN] ? code : NGHTTP2_CANCEL);
    }
    h2_stream_report(b, s);
    return rv;
}

int h2_leg_closed(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code)
{
    if (!s->open[leg])
        return 0;
    s->open[leg] = false;
    int rv = leg == UP ? up_closed(b, s, code) : down_closed(b, s, code);
    h2_stream_maybe_free(b, s);
    return rv;
}
