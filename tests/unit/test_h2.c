/* Unit tests for h2: the HTTP/2 bridge. A real nghttp2 client session (the "browser") and a
 * real nghttp2 server session (the "origin") are joined through the bridge in memory; a pump
 * moves bytes the way the relay would (honouring h2_bridge_wants_from_* and writing straight
 * from the bridge's pending output), optionally with a slow browser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four above first */
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "h2.h"

#define MAXS 256
#define KEEP 65536 /* body bytes each record keeps for comparison */

/* One stream as a peer sees it. */
struct rec {
    bool used, headers, trailers, end, closed, rst_in, interim;
    uint32_t close_code;
    int status;
    char method[16], scheme[16], authority[128], path[256], ctype[128], xtest[64];
    char trailer[64];
    uint8_t body[KEEP];
    size_t kept;
    uint64_t total;
    bool pattern_bad;
    uint64_t unconsumed; /* browser with manual flow control: received, not consumed yet */
    /* what this peer sends on the stream: pattern bytes, or src */
    uint64_t out_len, out_off;
    const uint8_t *src;
    bool pattern, send_trailers;
    int32_t id;
};

struct peer {
    nghttp2_session *s;
    struct rec r[MAXS];
    int requests, open, max_open;
    int goaways;
    int32_t goaway_last;
    uint32_t goaway_code;
    int pings, ping_acks;
    int rst_sent_proto; /* RST_STREAM/GOAWAY with PROTOCOL_ERROR sent: must not happen */
};

struct xcopy {
    int32_t stream_id;
    unsigned seq;
    char method[16], scheme[16], authority[128], path[256], ctype[128], rule[64], ref[48];
    char error[128];
    int status, upstream_status;
    uint64_t req_bytes, resp_bytes;
    int64_t start_us, end_us;
    enum h2_end end;
    uint32_t error_code;
};

struct q {
    uint8_t *p;
    size_t len, cap;
};

struct world {
    struct h2_bridge *b;
    struct peer browser, origin;
    struct q c2b, o2b;   /* bytes on their way to the bridge (the sockets) */
    size_t read_limit;   /* bytes per step the browser takes from the bridge; 0: all */
    size_t consume_step; /* browser with manual flow control: bytes consumed per step */
    bool manual;
    bool origin_manual; /* the origin's application reads slowly too */
    size_t origin_consume_step;
    uint32_t origin_max_streams;
    bool defer; /* the origin answers only when told */
    const char *block_path, *block_ctype;
    int n_req;
    char req_path[MAXS][256];
    char req_ua[64];
    int64_t req_cl;
    int n_x;
    struct xcopy x[MAXS];
    int64_t clock;
    size_t mem_max;  /* largest h2_bridge_memory seen between steps */
    double bridge_s; /* time spent inside h2_bridge_* calls */
    int last_rv;
    /* body hooks (world_new_body) */
    const char *body_kw; /* on_body blocks when the body holds it */
    unsigned body_sides; /* 1: request bodies, 2: response bodies */
    uint64_t body_hold;
    int n_body_begin, n_body_end;
    uint64_t body_seen[2]; /* bytes delivered, request and response bodies */
    uint64_t body_max_hold;
};

/* --- helpers --------------------------------------------------------------------------- */

static void q_add(struct q *q, const uint8_t *p, size_t n)
{
    if (q->len + n > q->cap) {
        q->cap = (q->len + n) * 2;
        q->p = realloc(q->p, q->cap);
        assert_non_null(q->p);
    }
    memcpy(q->p + q->len, p, n);
    q->len += n;
}

static void q_drop(struct q *q, size_t n)
{
    memmove(q->p, q->p + n, q->len - n);
    q->len -= n;
}

static uint8_t pat(uint64_t i)
{
    return (uint8_t)(i * 31 + (i >> 12) + 7);
}

static struct rec *rec_of(struct peer *p, int32_t id)
{
    assert_true(id > 0 && (id - 1) / 2 < MAXS);
    struct rec *r = &p->r[(id - 1) / 2];
    r->used = true;
    r->id = id;
    return r;
}

static void copy_str(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    snprintf(dst, cap, "%.*s", (int)n, (const char *)v);
}

static void body_in(struct rec *r, const uint8_t *data, size_t len, bool check_pattern)
{
    for (size_t i = 0; i < len && r->kept < KEEP; i++)
        r->body[r->kept++] = data[i];
    if (check_pattern)
        for (size_t i = 0; i < len; i++)
            if (data[i] != pat(r->total + i))
                r->pattern_bad = true;
    r->total += len;
}

/* --- the peers' callbacks ----------------------------------------------------------------- */

static struct world *W; /* the callbacks' world (one test at a time) */

static bool is_browser(nghttp2_session *s)
{
    return s == W->browser.s;
}

static struct peer *peer_of(nghttp2_session *s)
{
    return is_browser(s) ? &W->browser : &W->origin;
}

static int p_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type == NGHTTP2_HEADERS && !is_browser(s) && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        struct peer *p = peer_of(s);
        rec_of(p, f->hd.stream_id);
        p->requests++;
        if (++p->open > p->max_open)
            p->max_open = p->open;
    }
    return 0;
}

static int p_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct rec *r = rec_of(peer_of(s), f->hd.stream_id);
    char n[64];
    copy_str(n, sizeof(n), name, nl);
    if (r->headers && !r->interim) { /* trailers */
        char v[32];
        copy_str(v, sizeof(v), value, vl);
        snprintf(r->trailer, sizeof(r->trailer), "%.31s=%s", n, v);
        return 0;
    }
    if (!strcmp(n, ":status")) {
        char v[8];
        copy_str(v, sizeof(v), value, vl);
        r->status = atoi(v);
        r->interim = r->status < 200;
    } else if (!strcmp(n, ":method"))
        copy_str(r->method, sizeof(r->method), value, vl);
    else if (!strcmp(n, ":scheme"))
        copy_str(r->scheme, sizeof(r->scheme), value, vl);
    else if (!strcmp(n, ":authority"))
        copy_str(r->authority, sizeof(r->authority), value, vl);
    else if (!strcmp(n, ":path"))
        copy_str(r->path, sizeof(r->path), value, vl);
    else if (!strcmp(n, "content-type"))
        copy_str(r->ctype, sizeof(r->ctype), value, vl);
    else if (!strcmp(n, "x-test"))
        copy_str(r->xtest, sizeof(r->xtest), value, vl);
    return 0;
}

static int p_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *ud)
{
    (void)flags;
    (void)ud;
    struct rec *r = rec_of(peer_of(s), id);
    body_in(r, data, len, is_browser(s) && strncmp(r->ctype, "application/octet", 17) == 0);
    if ((is_browser(s) && W->manual) || (!is_browser(s) && W->origin_manual))
        r->unconsumed += len;
    return 0;
}

static ssize_t p_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    (void)ud;
    struct rec *r = src->ptr;
    uint64_t left = r->out_len - r->out_off;
    size_t n = left < length ? (size_t)left : length;
    for (size_t i = 0; i < n; i++)
        buf[i] = r->pattern ? pat(r->out_off + i) : r->src[r->out_off + i];
    r->out_off += n;
    if (r->out_off == r->out_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (r->send_trailers) {
            nghttp2_nv t[] = {{(uint8_t *)"x-checksum", (uint8_t *)"abc123", 10, 6, 0}};
            assert_int_equal(nghttp2_submit_trailer(s, id, t, 1), 0);
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* The origin's answer, chosen by path. */
static void origin_respond(struct world *w, int32_t id)
{
    struct rec *r = rec_of(&w->origin, id);
    const char *ctype = "text/plain";
    static const char hello[] = "hello world";
    r->pattern = false;
    if (!strncmp(r->path, "/big/", 5) || !strcmp(r->path, "/evil")) {
        r->pattern = true;
        r->out_len = r->path[1] == 'e' ? 4 << 20 : strtoull(r->path + 5, NULL, 10);
        ctype = r->path[1] == 'e' ? "application/x-evil" : "application/octet-stream";
    } else if (!strncmp(r->path, "/echo", 5) || !strcmp(r->path, "/trailers")) {
        r->src = r->body;
        r->out_len = r->kept;
        r->send_trailers = !strcmp(r->path, "/trailers");
    } else {
        r->src = (const uint8_t *)hello;
        r->out_len = sizeof(hello) - 1;
    }
    if (!strcmp(r->path, "/bad-status")) {
        nghttp2_nv bad[] = {NV(":status", "053")};
        assert_int_equal(nghttp2_submit_response(w->origin.s, id, bad, 1, NULL), 0);
        return;
    }
    if (!strcmp(r->path, "/interim")) {
        nghttp2_nv eh[] = {NV(":status", "103"), NV("link", "</s.css>; rel=preload")};
        assert_int_equal(nghttp2_submit_headers(w->origin.s, 0, id, NULL, eh, 2, NULL), 0);
    }
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", ctype), NV("x-test", "origin")};
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = p_read};
    assert_int_equal(nghttp2_submit_response(w->origin.s, id, nva, 3, &dp), 0);
}

static int p_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    struct peer *p = peer_of(s);
    switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
        struct rec *r = rec_of(p, f->hd.stream_id);
        if (r->interim)
            r->interim = false; /* a 1xx: the next HEADERS is the final head */
        else
            r->headers = true;
        break;
    }
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            p->ping_acks++;
        else
            p->pings++;
        return 0;
    case NGHTTP2_GOAWAY:
        p->goaways++;
        p->goaway_last = f->goaway.last_stream_id;
        p->goaway_code = f->goaway.error_code;
        return 0;
    case NGHTTP2_RST_STREAM:
        rec_of(p, f->hd.stream_id)->rst_in = true;
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && !is_browser(s) &&
        !strcmp(rec_of(p, f->hd.stream_id)->path, "/early") && !rec_of(p, f->hd.stream_id)->end) {
        /* answers at once and stops the upload (RFC 9113 §8.1) */
        origin_respond(W, f->hd.stream_id);
        return 0;
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct rec *r = rec_of(p, f->hd.stream_id);
        r->end = true;
        if (!is_browser(s) && !W->defer && strncmp(r->path, "/hold", 5) != 0)
            origin_respond(W, f->hd.stream_id);
    }
    return 0;
}

static int p_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (!is_browser(s) && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        !strcmp(rec_of(&W->origin, f->hd.stream_id)->path, "/early") &&
        !rec_of(&W->origin, f->hd.stream_id)->end)
        assert_int_equal(nghttp2_submit_rst_stream(s, 0, f->hd.stream_id, NGHTTP2_NO_ERROR), 0);
    if ((f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR) ||
        (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code == NGHTTP2_PROTOCOL_ERROR))
        peer_of(s)->rst_sent_proto++;
    return 0;
}

static int p_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)ud;
    struct peer *p = peer_of(s);
    struct rec *r = rec_of(p, id);
    r->closed = true;
    r->close_code = code;
    if (!is_browser(s))
        p->open--;
    return 0;
}

static void peer_init(struct world *w, struct peer *p, bool browser, uint32_t window)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, p_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, p_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, p_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, p_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, p_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, p_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    if ((browser && w->manual) || (!browser && w->origin_manual))
        nghttp2_option_set_no_auto_window_update(opt, 1);
    if (browser)
        assert_int_equal(nghttp2_session_client_new2(&p->s, cb, w, opt), 0);
    else
        assert_int_equal(nghttp2_session_server_new2(&p->s, cb, w, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    uint32_t max = !browser && w->origin_max_streams ? w->origin_max_streams : 1000;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max}};
    assert_int_equal(nghttp2_submit_settings(p->s, 0, iv, 2), 0);
}

/* --- the bridge's hooks ------------------------------------------------------------------- */

static int h_request(void *arg, const struct h2_request_info *req, struct h2_block *blk)
{
    struct world *w = arg;
    assert_true(w->n_req < MAXS);
    snprintf(w->req_path[w->n_req++], 256, "%s", req->path);
    w->req_cl = req->content_length;
    for (size_t i = 0; i < req->n_headers; i++)
        if (req->headers[i].name_len == 10 && !memcmp(req->headers[i].name, "user-agent", 10))
            snprintf(w->req_ua, sizeof(w->req_ua), "%.*s", (int)req->headers[i].value_len,
                     req->headers[i].value);
    if (w->block_path && !strcmp(req->path, w->block_path)) {
        blk->rule = "test-rule";
        blk->ref = "ref-42";
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static int h_response(void *arg, const struct h2_response_info *resp, struct h2_block *blk)
{
    struct world *w = arg;
    assert_true(resp->status >= 200);
    if (w->block_ctype && !strcmp(resp->content_type, w->block_ctype)) {
        blk->rule = "ctype-rule";
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static void h_exchange(void *arg, const struct h2_exchange *x)
{
    struct world *w = arg;
    assert_true(w->n_x < MAXS);
    struct xcopy *c = &w->x[w->n_x++];
    c->stream_id = x->stream_id;
    c->seq = x->seq;
    snprintf(c->method, sizeof(c->method), "%s", x->method);
    snprintf(c->scheme, sizeof(c->scheme), "%s", x->scheme);
    snprintf(c->authority, sizeof(c->authority), "%s", x->authority);
    snprintf(c->path, sizeof(c->path), "%s", x->path);
    snprintf(c->ctype, sizeof(c->ctype), "%s", x->content_type);
    snprintf(c->rule, sizeof(c->rule), "%s", x->rule);
    snprintf(c->ref, sizeof(c->ref), "%s", x->ref);
    snprintf(c->error, sizeof(c->error), "%s", x->error);
    c->status = x->status;
    c->upstream_status = x->upstream_status;
    c->req_bytes = x->req_bytes;
    c->resp_bytes = x->resp_bytes;
    c->start_us = x->start_us;
    c->end_us = x->end_us;
    c->end = x->end;
    c->error_code = x->error_code;
}

static int64_t h_now(void *arg)
{
    struct world *w = arg;
    return w->clock += 1000;
}

static const struct h2_hooks hooks = {
    .on_request = h_request,
    .on_response = h_response,
    .on_exchange = h_exchange,
    .now_us = h_now,
};

/* A body being inspected: a tail kept so that a keyword split between DATA frames is found. */
struct tbody {
    bool response;
    char tail[64];
    size_t tail_len;
};

static void h_body_begin(void *arg, const struct h2_body_info *info, struct h2_body_plan *plan)
{
    struct world *w = arg;
    assert_true(info->response == (info->resp != NULL));
    assert_true(info->response == (info->req == NULL));
    assert_null(plan->body);
    w->body_max_hold = info->max_hold;
    if (!(w->body_sides & (info->response ? 2u : 1u)))
        return;
    struct tbody *t = calloc(1, sizeof(*t));
    t->response = info->response;
    plan->body = t;
    plan->hold = w->body_hold;
    w->n_body_begin++;
}

static int h_on_body(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                     struct h2_block *blk)
{
    struct world *w = arg;
    struct tbody *t = body;
    assert_true(len > 0 || end);
    w->body_seen[t->response] += len;
    uint8_t *all = malloc(t->tail_len + len + 1);
    memcpy(all, t->tail, t->tail_len);
    if (len)
        memcpy(all + t->tail_len, data, len);
    size_t n = t->tail_len + len;
    bool hit = w->body_kw && memmem(all, n, w->body_kw, strlen(w->body_kw));
    size_t keep = n < sizeof(t->tail) ? n : sizeof(t->tail);
    memcpy(t->tail, all + n - keep, keep);
    t->tail_len = keep;
    free(all);
    if (hit) {
        blk->rule = "body-rule";
        blk->ref = "ref-body";
        return H2_BODY_BLOCK;
    }
    return H2_BODY_MORE;
}

static void h_body_end(void *arg, void *body)
{
    struct world *w = arg;
    w->n_body_end++;
    free(body);
}

static const struct h2_hooks body_hooks = {
    .on_request = h_request,
    .on_response = h_response,
    .on_exchange = h_exchange,
    .now_us = h_now,
    .body_begin = h_body_begin,
    .on_body = h_on_body,
    .body_end = h_body_end,
};

static const struct h2_hooks *next_hooks; /* for the next world_new; NULL: hooks */

/* --- the world ---------------------------------------------------------------------------- */

/* Origin settings for the next world_new. */
static struct {
    uint32_t max_streams, window;
    bool manual;
    size_t consume_step;
} next_origin;

static struct world *world_new(const struct h2_config *cfg, uint32_t browser_window, bool manual)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    W = w;
    w->manual = manual;
    w->origin_manual = next_origin.manual;
    w->origin_consume_step = next_origin.consume_step;
    w->origin_max_streams = next_origin.max_streams;
    w->b = h2_bridge_new(next_hooks ? next_hooks : &hooks, w, cfg);
    next_hooks = NULL;
    assert_non_null(w->b);
    peer_init(w, &w->browser, true, browser_window);
    peer_init(w, &w->origin, false, next_origin.window ? next_origin.window : 1 << 20);
    memset(&next_origin, 0, sizeof(next_origin));
    return w;
}

static void world_free(struct world *w)
{
    h2_bridge_free(w->b);
    assert_int_equal(w->n_body_begin, w->n_body_end);
    nghttp2_session_del(w->browser.s);
    nghttp2_session_del(w->origin.s);
    free(w->c2b.p);
    free(w->o2b.p);
    free(w);
    W = NULL;
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Output of a peer session into its socket (bounded, like a socket buffer). */
static bool peer_send(nghttp2_session *s, struct q *q)
{
    bool progress = false;
    while (q->len < 256 * 1024) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(s, &p);
        assert_true(n >= 0);
        if (n == 0)
            break;
        q_add(q, p, (size_t)n);
        progress = true;
    }
    return progress;
}

/* Bridge output into a peer session, written straight from the bridge's buffer. */
static bool bridge_to(struct world *w, bool to_client, size_t limit)
{
    const uint8_t *d;
    size_t n =
        to_client ? h2_bridge_pending_to_client(w->b, &d) : h2_bridge_pending_to_upstream(w->b, &d);
    if (n == 0)
        return false;
    if (limit && n > limit)
        n = limit;
    ssize_t r = nghttp2_session_mem_recv(to_client ? w->browser.s : w->origin.s, d, n);
    assert_int_equal(r, (ssize_t)n);
    double t = mono();
    if (to_client)
        h2_bridge_sent_to_client(w->b, n);
    else
        h2_bridge_sent_to_upstream(w->b, n);
    w->bridge_s += mono() - t;
    return true;
}

static bool step(struct world *w)
{
    bool progress = false;
    progress |= peer_send(w->browser.s, &w->c2b);
    if (w->c2b.len && h2_bridge_wants_from_client(w->b)) {
        size_t n = w->c2b.len < 16384 ? w->c2b.len : 16384;
        double t = mono();
        w->last_rv = h2_bridge_from_client(w->b, w->c2b.p, n);
        w->bridge_s += mono() - t;
        q_drop(&w->c2b, n);
        progress = true;
    }
    progress |= bridge_to(w, true, w->read_limit);
    progress |= bridge_to(w, false, 0);
    progress |= peer_send(w->origin.s, &w->o2b);
    if (w->o2b.len && h2_bridge_wants_from_upstream(w->b)) {
        size_t n = w->o2b.len < 16384 ? w->o2b.len : 16384;
        double t = mono();
        w->last_rv = h2_bridge_from_upstream(w->b, w->o2b.p, n);
        w->bridge_s += mono() - t;
        q_drop(&w->o2b, n);
        progress = true;
    }
    if (w->manual) { /* the browser's application reads slowly */
        size_t budget = w->consume_step;
        for (int i = 0; i < MAXS && budget; i++) {
            struct rec *r = &w->browser.r[i];
            size_t k = r->unconsumed < budget ? (size_t)r->unconsumed : budget;
            if (!k)
                continue;
            assert_int_equal(nghttp2_session_consume(w->browser.s, r->id, k), 0);
            r->unconsumed -= k;
            budget -= k;
            progress = true;
        }
    }
    if (w->origin_manual) { /* the origin's application reads slowly */
        size_t budget = w->origin_consume_step;
        for (int i = 0; i < MAXS && budget; i++) {
            struct rec *r = &w->origin.r[i];
            size_t k = r->unconsumed < budget ? (size_t)r->unconsumed : budget;
            if (!k)
                continue;
            assert_int_equal(nghttp2_session_consume(w->origin.s, r->id, k), 0);
            r->unconsumed -= k;
            budget -= k;
            progress = true;
        }
    }
    if (h2_bridge_memory(w->b) > w->mem_max)
        w->mem_max = h2_bridge_memory(w->b);
    return progress;
}

static void pump(struct world *w)
{
    for (long i = 0; i < 10000000 && step(w); i++)
        ;
}

/* The browser submits a request; body (may be NULL) is borrowed until sent. */
static int32_t request(struct world *w, const char *method, const char *path, const uint8_t *body,
                       size_t len, bool trailers)
{
    nghttp2_nv nva[] = {NV(":method", method),           NV(":scheme", "https"),
                        NV(":authority", "example.org"), NV(":path", path),
                        NV("user-agent", "test/1.0"),    NV("x-test", "browser")};
    static struct rec src[MAXS]; /* providers' sources, by order of submission */
    static int n_src;
    struct rec *r = &src[n_src++ % MAXS];
    memset(r, 0, sizeof(*r));
    r->src = body;
    r->out_len = len;
    r->send_trailers = trailers;
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = p_read};
    int32_t id = nghttp2_submit_request(w->browser.s, NULL, nva, 6, body ? &dp : NULL, NULL);
    assert_true(id > 0);
    return id;
}

/* Everything of the finished streams was freed: the bridge is back to its size after the
 * handshake, give or take its HPACK tables (which hold the fields of recent heads). */
static void assert_back_to(struct world *w, size_t base)
{
    assert_true(h2_bridge_memory(w->b) <= base + 4096);
}

static struct rec *got(struct world *w, int32_t id)
{
    return rec_of(&w->browser, id);
}

static const struct xcopy *exchange_for(struct world *w, int32_t id)
{
    for (int i = 0; i < w->n_x; i++)
        if (w->x[i].stream_id == id)
            return &w->x[i];
    fail_msg("no exchange reported for stream %d", id);
    return NULL;
}

/* --- tests ------------------------------------------------------------------------------- */

static void test_get(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->ctype, "text/plain");
    assert_string_equal(r->xtest, "origin");
    assert_int_equal(r->kept, 11);
    assert_memory_equal(r->body, "hello world", 11);
    /* what the origin saw: the head as the browser sent it */
    struct rec *o = rec_of(&w->origin, 1);
    assert_string_equal(o->method, "GET");
    assert_string_equal(o->scheme, "https");
    assert_string_equal(o->authority, "example.org");
    assert_string_equal(o->path, "/hello");
    assert_string_equal(o->xtest, "browser");
    assert_string_equal(w->req_ua, "test/1.0");
    assert_int_equal(w->req_cl, 0);
    assert_int_equal(w->browser.rst_sent_proto + w->origin.rst_sent_proto, 0);
    assert_null(h2_bridge_error(w->b));
    world_free(w);
}

static void test_exchange_fields(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    static uint8_t body[5000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)i;
    int32_t a = request(w, "GET", "/hello", NULL, 0, false);
    int32_t b = request(w, "POST", "/echo?x=1", body, sizeof(body), false);
    pump(w);
    assert_int_equal(w->n_x, 2);
    const struct xcopy *x = exchange_for(w, a);
    assert_int_equal(x->seq, 1);
    assert_string_equal(x->method, "GET");
    assert_string_equal(x->scheme, "https");
    assert_string_equal(x->authority, "example.org");
    assert_string_equal(x->path, "/hello");
    assert_int_equal(x->status, 200);
    assert_int_equal(x->upstream_status, 200);
    assert_string_equal(x->ctype, "text/plain");
    assert_int_equal(x->req_bytes, 0);
    assert_int_equal(x->resp_bytes, 11);
    assert_int_equal(x->end, H2_END_COMPLETE);
    assert_true(x->end_us > x->start_us);
    x = exchange_for(w, b);
    assert_int_equal(x->stream_id, 3);
    assert_int_equal(x->seq, 2);
    assert_string_equal(x->method, "POST");
    assert_string_equal(x->path, "/echo?x=1");
    assert_int_equal(x->req_bytes, sizeof(body));
    assert_int_equal(x->resp_bytes, sizeof(body));
    assert_int_equal(x->end, H2_END_COMPLETE);
    assert_int_equal(w->req_cl, -1); /* no content-length sent */
    assert_int_equal(got(w, b)->kept, sizeof(body));
    assert_memory_equal(got(w, b)->body, body, sizeof(body));
    world_free(w);
}

static void test_upload_intact(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    size_t n = 3 * 1024 * 1024;
    uint8_t *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = pat(i);
    int32_t id = request(w, "PUT", "/up", body, n, false);
    pump(w);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->end);
    assert_int_equal(o->total, n);
    assert_memory_equal(o->body, body, KEEP);
    assert_int_equal(got(w, id)->status, 200);
    assert_int_equal(exchange_for(w, id)->req_bytes, n);
    free(body);
    world_free(w);
}

static void test_concurrent_100(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 1 << 20, false);
    w->defer = true;
    int32_t ids[100];
    char path[32];
    for (int i = 0; i < 100; i++) {
        snprintf(path, sizeof(path), "/big/%d", 1000 + i * 997);
        ids[i] = request(w, "GET", path, NULL, 0, false);
    }
    pump(w);
    assert_int_equal(w->origin.requests, 100);
    assert_int_equal(w->origin.max_open, 100); /* all in flight at once */
    for (int i = 0; i < 100; i++)
        origin_respond(w, 2 * i + 1);
    pump(w);
    for (int i = 0; i < 100; i++) {
        struct rec *r = got(w, ids[i]);
        assert_true(r->end);
        assert_int_equal(r->status, 200);
        assert_int_equal(r->total, 1000 + (uint64_t)i * 997);
        assert_false(r->pattern_bad);
    }
    assert_int_equal(w->n_x, 100);
    world_free(w);
}

/* 10 MiB to a browser with a 16 KiB window that reads 4 KiB and consumes 8 KiB per step: the
 * bridge holds at most about one stream window, whatever the response size. */
static void run_backpressure(uint32_t stream_window)
{
    struct h2_config cfg = {.stream_window = stream_window};
    struct world *w = world_new(&cfg, 16384, true);
    w->read_limit = 4096;
    w->consume_step = 8192;
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    w->mem_max = base;
    int32_t id = request(w, "GET", "/big/10485760", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->total, 10485760);
    assert_false(r->pattern_bad);
    size_t held = w->mem_max - base;
    printf("# stream window %u KiB: bridge memory %zu KiB at start, peak +%zu KiB for 10 MiB\n",
           stream_window / 1024, base / 1024, held / 1024);
    assert_true(held <= stream_window + 2 * H2_OUT_HIGH + 64 * 1024);
    assert_true(held >= stream_window / 2); /* the window was used: the origin ran ahead */
    /* the buffers went away with the data (HPACK tables hold the exchange's fields) */
    assert_true(h2_bridge_memory(w->b) <= base + 4096);
    world_free(w);
}

static void test_backpressure_10mib(void **state)
{
    (void)state;
    run_backpressure(H2_STREAM_WINDOW);
    run_backpressure(64 * 1024);
}

static void test_throughput(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 1 << 24, false);
    pump(w);
    w->bridge_s = 0;
    double t0 = mono();
    int32_t id = request(w, "GET", "/big/67108864", NULL, 0, false);
    pump(w);
    double s = mono() - t0;
    assert_int_equal(got(w, id)->total, 67108864);
    assert_false(got(w, id)->pattern_bad);
    printf("# 64 MiB download: %.3f s in all (browser + bridge + origin on one core), %.3f s in "
           "the bridge: %.0f MiB/s through it\n",
           s, w->bridge_s, 64 / w->bridge_s);
    world_free(w);
}

static void test_trailers_both_ways(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    static const uint8_t body[] = "request body with trailers";
    int32_t id = request(w, "POST", "/trailers", body, sizeof(body) - 1, true);
    pump(w);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->end);
    assert_int_equal(o->kept, sizeof(body) - 1);
    assert_string_equal(o->trailer, "x-checksum=abc123"); /* request trailers reached it */
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->kept, sizeof(body) - 1);
    assert_memory_equal(r->body, body, sizeof(body) - 1);
    assert_string_equal(r->trailer, "x-checksum=abc123"); /* response trailers reached it */
    assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(exchange_for(w, id)->end, H2_END_COMPLETE);
    world_free(w);
}

static void test_interim_response(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/interim", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->kept, 11);
    assert_int_equal(exchange_for(w, id)->status, 200);
    world_free(w);
}

static void test_rst_from_client(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    assert_int_equal(w->origin.requests, 1);
    assert_int_equal(nghttp2_submit_rst_stream(w->browser.s, 0, id, NGHTTP2_CANCEL), 0);
    pump(w);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->closed);
    assert_true(o->rst_in);
    assert_int_equal(o->close_code, NGHTTP2_CANCEL);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_RESET_BY_CLIENT);
    assert_int_equal(x->error_code, NGHTTP2_CANCEL);
    /* a stream reset mid-body: the rest of the connection carries on */
    int32_t id2 = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    assert_int_equal(got(w, id2)->kept, 11);
    assert_back_to(w, base);
    world_free(w);
}

static void test_rst_from_upstream(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    assert_int_equal(nghttp2_submit_rst_stream(w->origin.s, 0, 1, NGHTTP2_ENHANCE_YOUR_CALM), 0);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->closed);
    assert_true(r->rst_in);
    assert_int_equal(r->close_code, NGHTTP2_ENHANCE_YOUR_CALM);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_RESET_BY_UPSTREAM);
    assert_int_equal(x->error_code, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_back_to(w, base);
    world_free(w);
}

/* The upstream resets mid-download while the browser is slow: the buffered part is dropped
 * and the connection's windows stay whole (the next download completes). */
static void test_rst_mid_body_keeps_windows(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 16384, true);
    w->read_limit = 4096;
    w->consume_step = 4096;
    int32_t id = request(w, "GET", "/big/4000000", NULL, 0, false);
    for (int i = 0; i < 200; i++)
        step(w);
    assert_false(got(w, id)->end);
    assert_int_equal(nghttp2_submit_rst_stream(w->origin.s, 0, 1, NGHTTP2_INTERNAL_ERROR), 0);
    pump(w);
    assert_true(got(w, id)->closed);
    assert_int_equal(got(w, id)->close_code, NGHTTP2_INTERNAL_ERROR);
    w->read_limit = 0;
    w->consume_step = 1 << 30;
    int32_t id2 = request(w, "GET", "/big/6000000", NULL, 0, false);
    pump(w);
    assert_true(got(w, id2)->end);
    assert_int_equal(got(w, id2)->total, 6000000);
    world_free(w);
}

static void test_ping(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    pump(w);
    assert_int_equal(nghttp2_submit_ping(w->browser.s, 0, NULL), 0);
    assert_int_equal(nghttp2_submit_ping(w->origin.s, 0, NULL), 0);
    pump(w);
    assert_int_equal(w->browser.ping_acks, 1); /* answered by the bridge's server session */
    assert_int_equal(w->origin.ping_acks, 1);  /* answered by the bridge's client session */
    assert_int_equal(w->origin.pings, 0);      /* PINGs are per leg: none crossed */
    assert_int_equal(w->browser.pings, 0);
    world_free(w);
}

static void test_goaway_from_upstream(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    w->defer = true;
    int32_t a = request(w, "GET", "/a", NULL, 0, false);
    int32_t b = request(w, "GET", "/b", NULL, 0, false);
    pump(w);
    assert_int_equal(w->origin.requests, 2);
    /* the origin will process stream 1 only */
    assert_int_equal(nghttp2_submit_goaway(w->origin.s, 0, 1, NGHTTP2_NO_ERROR, NULL, 0), 0);
    pump(w);
    assert_int_equal(w->browser.goaways, 1);
    assert_int_equal(w->browser.goaway_last, a);
    assert_int_equal(w->browser.goaway_code, NGHTTP2_NO_ERROR);
    assert_true(got(w, b)->closed);
    assert_int_equal(got(w, b)->close_code, NGHTTP2_REFUSED_STREAM);
    assert_int_equal(exchange_for(w, b)->end, H2_END_REFUSED);
    assert_false(got(w, a)->closed);
    origin_respond(w, 1);
    pump(w);
    assert_true(got(w, a)->end);
    assert_int_equal(got(w, a)->kept, 11);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_goaway_from_client(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    assert_true(got(w, id)->end);
    assert_false(h2_bridge_done(w->b));
    assert_int_equal(nghttp2_submit_goaway(w->browser.s, 0, 0, NGHTTP2_NO_ERROR, NULL, 0), 0);
    pump(w);
    assert_int_equal(w->origin.goaways, 1);
    assert_int_equal(w->origin.goaway_code, NGHTTP2_NO_ERROR);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_block_request(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    w->block_path = "/blocked";
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    static const uint8_t body[40000];
    int32_t a = request(w, "GET", "/blocked", NULL, 0, false);
    int32_t b = request(w, "POST", "/blocked", body, sizeof(body), false);
    int32_t c = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    for (int32_t id = a; id <= b; id += 2) {
        struct rec *r = got(w, id);
        assert_true(r->end);
        assert_int_equal(r->status, 403);
        assert_string_equal(r->ctype, "text/html; charset=utf-8");
        assert_non_null(memmem(r->body, r->kept, "test-rule", 9));
        assert_non_null(memmem(r->body, r->kept, "ref-42", 6));
        assert_non_null(memmem(r->body, r->kept, "example.org", 11));
        const struct xcopy *x = exchange_for(w, id);
        assert_int_equal(x->end, H2_END_BLOCKED);
        assert_int_equal(x->status, 403);
        assert_int_equal(x->upstream_status, 0);
        assert_string_equal(x->rule, "test-rule");
        assert_string_equal(x->ref, "ref-42");
    }
    /* the blocked requests never reached the origin; the allowed one did */
    assert_int_equal(w->origin.requests, 1);
    assert_string_equal(rec_of(&w->origin, 1)->path, "/hello");
    assert_int_equal(got(w, c)->kept, 11);
    assert_back_to(w, base);
    world_free(w);
}

static void test_block_response(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    w->block_ctype = "application/x-evil";
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    int32_t id = request(w, "GET", "/evil", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_int_equal(r->status, 403);
    assert_non_null(memmem(r->body, r->kept, "ctype-rule", 10));
    assert_true(r->kept < 2000); /* the page, none of the origin's 4 MiB */
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->closed);
    assert_true(o->rst_in);
    assert_int_equal(o->close_code, NGHTTP2_CANCEL);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_BLOCKED);
    assert_int_equal(x->status, 403);
    assert_int_equal(x->upstream_status, 200);
    assert_string_equal(x->ctype, "application/x-evil");
    assert_int_equal(x->resp_bytes, 0);
    assert_back_to(w, base);
    world_free(w);
}

static void test_request_head_too_large(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    nghttp2_nv nva[140];
    char names[140][16];
    nva[0] = (nghttp2_nv)NV(":method", "GET");
    nva[1] = (nghttp2_nv)NV(":scheme", "https");
    nva[2] = (nghttp2_nv)NV(":authority", "example.org");
    nva[3] = (nghttp2_nv)NV(":path", "/many");
    for (int i = 4; i < 140; i++) {
        snprintf(names[i], sizeof(names[i]), "x-h-%d", i);
        nva[i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)"v", strlen(names[i]), 1, 0};
    }
    int32_t id = nghttp2_submit_request(w->browser.s, NULL, nva, 140, NULL, NULL);
    pump(w);
    assert_int_equal(got(w, id)->status, 431);
    assert_int_equal(w->origin.requests, 0);
    assert_int_equal(exchange_for(w, id)->end, H2_END_BAD_REQUEST);
    world_free(w);
}

static void test_bad_preface(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    static const char h1[] = "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n";
    assert_int_equal(h2_bridge_from_client(w->b, (const uint8_t *)h1, sizeof(h1) - 1), -1);
    assert_non_null(h2_bridge_error(w->b));
    assert_non_null(strstr(h2_bridge_error(w->b), "preface"));
    assert_false(h2_bridge_wants_from_client(w->b));
    assert_false(h2_bridge_wants_from_upstream(w->b));
    assert_int_equal(h2_bridge_from_client(w->b, (const uint8_t *)"x", 1), -1);
    /* what is left to write (the upstream's preface and GOAWAY) drains, then it is done */
    const uint8_t *d;
    size_t n;
    while ((n = h2_bridge_pending_to_upstream(w->b, &d)) > 0)
        h2_bridge_sent_to_upstream(w->b, n);
    while ((n = h2_bridge_pending_to_client(w->b, &d)) > 0)
        h2_bridge_sent_to_client(w->b, n);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_client_protocol_error(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    /* a WINDOW_UPDATE of 0 on the connection: a connection error */
    static const uint8_t bad[] = {0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    int rv = h2_bridge_from_client(w->b, bad, sizeof(bad));
    assert_int_equal(rv, -1);
    assert_non_null(h2_bridge_error(w->b));
    pump(w);
    assert_int_equal(w->browser.goaways, 1);
    assert_int_equal(w->browser.goaway_code, NGHTTP2_PROTOCOL_ERROR);
    assert_true(rec_of(&w->origin, 1)->rst_in); /* the upstream stream was cancelled */
    assert_int_equal(w->origin.goaways, 1);
    assert_int_equal(exchange_for(w, id)->end, H2_END_INCOMPLETE);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_upstream_eof(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    assert_int_equal(h2_bridge_eof_from_upstream(w->b), 0);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->status, 502);
    assert_int_equal(w->browser.goaways, 1);
    assert_int_equal(exchange_for(w, id)->end, H2_END_BAD_RESPONSE);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_client_eof(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    assert_int_equal(h2_bridge_eof_from_client(w->b), 0);
    pump(w);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->rst_in);
    assert_int_equal(o->close_code, NGHTTP2_CANCEL);
    assert_int_equal(w->origin.goaways, 1);
    assert_int_equal(exchange_for(w, id)->end, H2_END_INCOMPLETE);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

static void test_shutdown(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    h2_bridge_shutdown(w->b);
    pump(w);
    assert_int_equal(w->browser.goaways, 1);
    assert_int_equal(w->browser.goaway_last, id);
    assert_int_equal(w->origin.goaways, 1);
    assert_false(h2_bridge_done(w->b)); /* the stream in flight finishes first */
    origin_respond(w, 1);
    pump(w);
    assert_int_equal(got(w, id)->kept, 11);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

/* Streams freed, buffers released: an idle bridge is back to its size after the handshake. */
static void test_idle_memory(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 1 << 20, false);
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    for (int i = 0; i < 20; i++)
        request(w, "GET", "/big/300000", NULL, 0, false);
    pump(w);
    assert_int_equal(w->n_x, 20);
    printf("# idle bridge: %zu bytes after the handshake, %zu after 20 exchanges\n", base,
           h2_bridge_memory(w->b));
    assert_true(h2_bridge_memory(w->b) <= base + 2048);
    world_free(w);
}

/* Exchanges still open at free are reported once, as incomplete. */
static void test_free_reports_open(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    request(w, "GET", "/hold", NULL, 0, false);
    pump(w);
    assert_int_equal(w->n_x, 0);
    h2_bridge_free(w->b);
    w->b = NULL;
    assert_int_equal(w->n_x, 1);
    assert_int_equal(w->x[0].end, H2_END_INCOMPLETE);
    world_free(w);
}

/* The origin allows one stream at a time: the bridge queues the client's other requests. One
 * is cancelled by the client while still queued: it never reaches the origin. */
static void test_cancel_queued_request(void **state)
{
    (void)state;
    next_origin.max_streams = 1;
    struct world *w = world_new(NULL, 65535, false);
    w->defer = true;
    pump(w); /* settings first */
    size_t base = h2_bridge_memory(w->b);
    int32_t a = request(w, "GET", "/a", NULL, 0, false);
    int32_t b = request(w, "GET", "/b", NULL, 0, false);
    int32_t c = request(w, "GET", "/c", NULL, 0, false);
    pump(w);
    assert_int_equal(w->origin.requests, 1);
    assert_int_equal(nghttp2_submit_rst_stream(w->browser.s, 0, b, NGHTTP2_CANCEL), 0);
    pump(w);
    assert_int_equal(exchange_for(w, b)->end, H2_END_RESET_BY_CLIENT);
    origin_respond(w, 1);
    pump(w);
    assert_true(got(w, a)->end);
    assert_int_equal(w->origin.requests, 2); /* /a and /c, never /b (its id 3 went unused) */
    assert_false(rec_of(&w->origin, 3)->headers);
    assert_string_equal(rec_of(&w->origin, 5)->path, "/c");
    origin_respond(w, 5);
    pump(w);
    assert_true(got(w, c)->end);
    assert_int_equal(got(w, c)->kept, 11);
    assert_back_to(w, base);
    world_free(w);
}

/* A GOAWAY arrives while requests wait for a free stream upstream: they are refused, so the
 * client may retry them; the one in progress completes. */
static void test_goaway_refuses_queued(void **state)
{
    (void)state;
    next_origin.max_streams = 1;
    struct world *w = world_new(NULL, 65535, false);
    w->defer = true;
    pump(w);
    int32_t a = request(w, "GET", "/a", NULL, 0, false);
    int32_t b = request(w, "GET", "/b", NULL, 0, false);
    pump(w);
    assert_int_equal(w->origin.requests, 1);
    assert_int_equal(nghttp2_submit_goaway(w->origin.s, 0, 1, NGHTTP2_NO_ERROR, NULL, 0), 0);
    pump(w);
    assert_int_equal(w->browser.goaway_last, a);
    assert_true(got(w, b)->closed);
    assert_int_equal(got(w, b)->close_code, NGHTTP2_REFUSED_STREAM);
    assert_int_equal(exchange_for(w, b)->end, H2_END_REFUSED);
    origin_respond(w, 1);
    pump(w);
    assert_true(got(w, a)->end);
    assert_int_equal(w->origin.requests, 1);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

/* The origin answers before the upload is over and stops it with RST_STREAM(NO_ERROR): the
 * browser gets the whole response, then the same request to stop. */
static void test_upstream_stops_upload(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    size_t n = 4 << 20;
    uint8_t *body = calloc(1, n);
    int32_t id = request(w, "POST", "/early", body, n, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->kept, 11);
    assert_true(r->closed);
    assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
    assert_true(rec_of(&w->origin, 1)->total < n);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_COMPLETE);
    assert_true(x->req_bytes < n);
    /* the connection's windows were given back: another exchange goes through */
    int32_t id2 = request(w, "POST", "/echo", body, 60000, false);
    pump(w);
    assert_int_equal(got(w, id2)->total, 60000);
    assert_back_to(w, base);
    free(body);
    world_free(w);
}

/* 10 MiB upload to an origin that reads slowly: the bridge holds about one window. */
static void test_upload_backpressure(void **state)
{
    (void)state;
    next_origin.manual = true;
    next_origin.consume_step = 8192;
    next_origin.window = 16384;
    struct world *w = world_new(NULL, 65535, false);
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    w->mem_max = base;
    size_t n = 10 << 20;
    uint8_t *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = pat(i);
    int32_t id = request(w, "PUT", "/up", body, n, false);
    pump(w);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->end);
    assert_int_equal(o->total, n);
    assert_memory_equal(o->body, body, KEEP);
    assert_int_equal(got(w, id)->status, 200);
    size_t held = w->mem_max - base;
    printf("# upload: peak +%zu KiB for 10 MiB\n", held / 1024);
    assert_true(held <= H2_STREAM_WINDOW + 2 * H2_OUT_HIGH + 64 * 1024);
    free(body);
    world_free(w);
}

/* The upstream closes after sending a whole response the slow browser has not read yet: the
 * response is still delivered, then the browser is told to go away. */
static void test_upstream_eof_after_complete_response(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 16384, true);
    w->read_limit = 2048;
    w->consume_step = 2048;
    int32_t id = request(w, "GET", "/big/600000", NULL, 0, false);
    for (int i = 0; i < 100; i++)
        step(w);
    assert_true(rec_of(&w->origin, 1)->closed); /* all sent */
    assert_false(got(w, id)->end);
    assert_int_equal(h2_bridge_eof_from_upstream(w->b), 0);
    w->o2b.len = 0; /* the origin is gone */
    pump(w);
    struct rec *r = got(w, id);
    assert_true(r->end);
    assert_int_equal(r->total, 600000);
    assert_false(r->pattern_bad);
    assert_int_equal(w->browser.goaways, 1);
    assert_int_equal(exchange_for(w, id)->end, H2_END_COMPLETE);
    assert_true(h2_bridge_done(w->b));
    world_free(w);
}

/* The memory cap holds: past it the bridge fails cleanly instead of growing. */
static void test_memory_limit(void **state)
{
    (void)state;
    struct h2_config cfg = {.stream_window = 1 << 20, .mem_limit = 300 * 1024};
    struct world *w = world_new(&cfg, 16384, true);
    w->read_limit = 1024;
    w->consume_step = 1024;
    int32_t id = request(w, "GET", "/big/2000000", NULL, 0, false);
    pump(w);
    assert_non_null(h2_bridge_error(w->b));
    assert_non_null(strstr(h2_bridge_error(w->b), "memory"));
    assert_int_equal(w->last_rv, -1);
    assert_true(h2_bridge_memory_peak(w->b) <= 300 * 1024);
    assert_false(got(w, id)->end);
    world_free(w);
}

static void test_request_trailers_too_large(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    w->defer = true;
    nghttp2_nv nva[] = {NV(":method", "POST"), NV(":scheme", "https"),
                        NV(":authority", "example.org"), NV(":path", "/t")};
    int32_t id = nghttp2_submit_headers(w->browser.s, 0, -1, NULL, nva, 4, NULL);
    assert_true(id > 0);
    pump(w);
    nghttp2_nv t[140];
    char names[140][16];
    for (int i = 0; i < 140; i++) {
        snprintf(names[i], sizeof(names[i]), "x-t-%d", i);
        t[i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)"v", strlen(names[i]), 1, 0};
    }
    assert_int_equal(
        nghttp2_submit_headers(w->browser.s, NGHTTP2_FLAG_END_STREAM, id, NULL, t, 140, NULL), 0);
    pump(w);
    assert_true(got(w, id)->closed);
    assert_int_equal(got(w, id)->close_code, NGHTTP2_ENHANCE_YOUR_CALM);
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->closed);
    assert_int_equal(o->close_code, NGHTTP2_CANCEL);
    assert_string_equal(o->trailer, "");
    assert_int_equal(exchange_for(w, id)->end, H2_END_BAD_REQUEST);
    world_free(w);
}

static size_t custom_page(void *arg, const struct h2_exchange *x, char *buf, size_t cap)
{
    (void)arg;
    int n = snprintf(buf, cap, "custom page for %s, rule %s", x->authority, x->rule);
    return n > 0 ? (size_t)n : 0;
}

static void test_block_page_hook(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    struct h2_hooks hk = hooks;
    hk.block_page = custom_page;
    h2_bridge_free(w->b);
    w->b = h2_bridge_new(&hk, w, NULL);
    w->block_path = "/x";
    int32_t id = request(w, "GET", "/x", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_int_equal(r->status, 403);
    assert_int_equal(r->kept, strlen("custom page for example.org, rule test-rule"));
    assert_memory_equal(r->body, "custom page for example.org, rule test-rule", r->kept);
    world_free(w);
}

/* Found by fuzz_h2 (corpus/h2/regression-status-053): nghttp2 accepts ":status: 053" from the
 * upstream; the bridge answers 502 instead of passing on (or asking hooks about) a status HTTP does
 * not have. */
static void test_regression_status_053(void **state)
{
    (void)state;
    struct world *w = world_new(NULL, 65535, false);
    int32_t id = request(w, "GET", "/bad-status", NULL, 0, false);
    pump(w);
    assert_int_equal(got(w, id)->status, 502);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_BAD_RESPONSE);
    assert_int_equal(x->upstream_status, 53);
    world_free(w);
}

/* --- body inspection ---------------------------------------------------------------------- */

static struct world *world_new_body(unsigned sides, uint64_t hold, const char *kw)
{
    next_hooks = &body_hooks;
    struct world *w = world_new(NULL, 1 << 20, false);
    w->body_sides = sides;
    w->body_hold = hold;
    w->body_kw = kw;
    return w;
}

static uint8_t *pattern_body(size_t n, size_t kw_at, const char *kw)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)('a' + pat(i) % 20);
    if (kw)
        memcpy(b + kw_at, kw, strlen(kw));
    return b;
}

/* A match in a held request body: the upstream never sees the request, the client gets the
 * page, the window the held bytes took is given back. */
static void test_body_request_blocked_while_held(void **state)
{
    (void)state;
    struct world *w = world_new_body(1, 1 << 20, "EXFIL");
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    size_t n = 300000;
    uint8_t *body = pattern_body(n, 250000, "EXFIL");
    int32_t id = request(w, "POST", "/echo", body, n, false);
    int32_t ok = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_int_equal(r->status, 403);
    assert_non_null(memmem(r->body, r->kept, "body-rule", 9));
    assert_int_equal(w->origin.requests, 1); /* /hello only */
    assert_string_equal(rec_of(&w->origin, 1)->path, "/hello");
    assert_int_equal(got(w, ok)->kept, 11);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_BLOCKED);
    assert_int_equal(x->status, 403);
    assert_string_equal(x->rule, "body-rule");
    assert_string_equal(x->ref, "ref-body");
    assert_string_equal(x->error, "request body blocked by policy");
    assert_int_equal(w->body_max_hold, 1 << 20);
    /* the connection still carries traffic: its window was given back */
    int32_t again = request(w, "POST", "/echo", body, 200000, false);
    pump(w);
    assert_int_equal(got(w, again)->status, 200);
    assert_int_equal(rec_of(&w->origin, 3)->total, 200000); /* (the origin echoes 64 KiB) */
    assert_back_to(w, base);
    free(body);
    world_free(w);
}

/* After the page, the rest of a blocked upload is dropped (its windows given back) and the
 * client may end it: a 600 KB upload blocked at 100 KB gets no RST_STREAM (curl 7.88 drops a
 * response that a reset follows while it is still sending). One that goes on past a further
 * stream window (4 MiB here) is then told to stop with RST_STREAM(NO_ERROR). */
static void test_body_request_blocked_rest_dropped_then_reset(void **state)
{
    (void)state;
    struct world *w = world_new_body(1, 1 << 20, "EXFIL");
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    size_t sizes[2] = {600000, 4 << 20};
    for (int i = 0; i < 2; i++) {
        uint8_t *body = pattern_body(sizes[i], 100000, "EXFIL");
        int32_t id = request(w, "POST", "/echo", body, sizes[i], false);
        pump(w);
        struct rec *r = got(w, id);
        assert_true(r->end);
        assert_int_equal(r->status, 403);
        assert_non_null(memmem(r->body, r->kept, "body-rule", 9));
        const struct xcopy *x = exchange_for(w, id);
        assert_int_equal(x->end, H2_END_BLOCKED);
        if (i == 0) {
            assert_false(r->rst_in);
        } else {
            assert_true(r->rst_in);
            assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
        }
        free(body);
    }
    assert_int_equal(w->origin.requests, 0);
    int32_t ok = request(w, "GET", "/hello", NULL, 0, false);
    pump(w);
    assert_int_equal(got(w, ok)->kept, 11);
    assert_back_to(w, base);
    world_free(w);
}

/* Held requests reach the upstream intact, with trailers; several held at once do not stall
 * one another (the held bytes are given back to the connection window at once). */
static void test_body_request_held_then_sent(void **state)
{
    (void)state;
    struct world *w = world_new_body(1, 1 << 20, "NEVER");
    size_t n = 1536 * 1024;
    uint8_t *body = pattern_body(n, 0, NULL);
    int32_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = request(w, "PUT", "/echo", body, n, i == 1);
    int32_t small = request(w, "POST", "/trailers", body, 5000, true);
    pump(w);
    for (int i = 0; i < 3; i++) {
        struct rec *r = got(w, ids[i]);
        assert_true(r->end);
        assert_int_equal(r->status, 200);
        assert_int_equal(exchange_for(w, ids[i])->end, H2_END_COMPLETE);
        assert_int_equal(exchange_for(w, ids[i])->req_bytes, n);
    }
    /* upstream ids follow the order the holds ended in */
    int echoes = 0, trailers = 0;
    for (int i = 0; i < MAXS; i++) {
        struct rec *o = &w->origin.r[i];
        if (!o->used || !o->path[0])
            continue;
        assert_true(o->end);
        assert_memory_equal(o->body, body, !strcmp(o->path, "/echo") ? KEEP : 5000);
        assert_int_equal(o->total, !strcmp(o->path, "/echo") ? n : 5000);
        echoes += !strcmp(o->path, "/echo");
        trailers += !strcmp(o->trailer, "x-checksum=abc123");
    }
    assert_int_equal(echoes, 3);
    assert_int_equal(trailers, 2);
    assert_int_equal(got(w, small)->total, 5000);
    assert_string_equal(got(w, small)->trailer, "x-checksum=abc123");
    assert_int_equal(w->body_seen[0], 3 * n + 5000);
    assert_int_equal(w->browser.rst_sent_proto + w->origin.rst_sent_proto, 0);
    free(body);
    world_free(w);
}

/* A held request that waits for 100 Continue gets one from the gateway. */
static void test_body_request_expect_continue(void **state)
{
    (void)state;
    struct world *w = world_new_body(1, 1 << 20, "NEVER");
    nghttp2_nv nva[] = {NV(":method", "POST"), NV(":scheme", "https"),
                        NV(":authority", "example.org"), NV(":path", "/echo"),
                        NV("expect", "100-continue")};
    int32_t id = nghttp2_submit_headers(w->browser.s, 0, -1, NULL, nva, 5, NULL);
    assert_true(id > 0);
    pump(w);
    assert_int_equal(got(w, id)->status, 100);
    assert_int_equal(w->origin.requests, 0);
    static const uint8_t data[] = "payload";
    struct rec src = {.src = data, .out_len = 7};
    nghttp2_data_provider dp = {.source.ptr = &src, .read_callback = p_read};
    assert_int_equal(nghttp2_submit_data(w->browser.s, NGHTTP2_FLAG_END_STREAM, id, &dp), 0);
    pump(w);
    assert_int_equal(w->origin.requests, 1);
    assert_int_equal(got(w, id)->status, 200);
    assert_memory_equal(got(w, id)->body, "payload", 7);
    world_free(w);
}

/* A match in a held response: the page instead, the upstream's stream cancelled. */
static void test_body_response_blocked_while_held(void **state)
{
    (void)state;
    struct world *w = world_new_body(2, 65536, "SECRET");
    size_t n = 40000;
    uint8_t *body = pattern_body(n, 30000, "SECRET");
    int32_t id = request(w, "POST", "/echo", body, n, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_int_equal(r->status, 403);
    assert_null(memmem(r->body, r->kept, "SECRET", 6));
    struct rec *o = rec_of(&w->origin, 1);
    assert_true(o->closed);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_BLOCKED);
    assert_int_equal(x->status, 403);
    assert_int_equal(x->upstream_status, 200);
    assert_string_equal(x->rule, "body-rule");
    free(body);
    world_free(w);
}

/* Past the response hold, a match resets the client's stream after its head went out. */
static void test_body_response_blocked_after_head(void **state)
{
    (void)state;
    struct world *w = world_new_body(2, 1000, "SECRET");
    size_t n = 60000; /* the origin echoes up to 64 KiB */
    uint8_t *body = pattern_body(n, 50000, "SECRET");
    int32_t id = request(w, "POST", "/echo", body, n, false);
    pump(w);
    struct rec *r = got(w, id);
    assert_int_equal(r->status, 200);
    assert_true(r->rst_in);
    assert_int_equal(r->close_code, NGHTTP2_INTERNAL_ERROR);
    assert_true(r->total < 50000 + 6);
    assert_true(rec_of(&w->origin, 1)->closed);
    const struct xcopy *x = exchange_for(w, id);
    assert_int_equal(x->end, H2_END_BLOCKED);
    assert_int_equal(x->status, 200);
    assert_string_equal(x->rule, "body-rule");
    assert_string_equal(x->error, "response body blocked by policy after part of it was sent");
    free(body);
    world_free(w);
}

/* Inspected responses pass intact, held or streamed, big or small, with trailers. */
static void test_body_response_passes(void **state)
{
    (void)state;
    uint64_t holds[] = {0, 1000, 65536, 1 << 20};
    for (size_t k = 0; k < 4; k++) {
        struct world *w = world_new_body(3, holds[k], "NEVER");
        int32_t a = request(w, "GET", "/big/3000000", NULL, 0, false);
        int32_t b = request(w, "GET", "/hello", NULL, 0, false);
        uint8_t *body = pattern_body(60000, 0, NULL);
        int32_t c = request(w, "POST", "/trailers", body, 60000, true);
        pump(w);
        assert_int_equal(got(w, a)->total, 3000000);
        assert_false(got(w, a)->pattern_bad);
        assert_int_equal(got(w, b)->kept, 11);
        assert_int_equal(got(w, c)->total, 60000);
        assert_memory_equal(got(w, c)->body, body, 60000);
        assert_string_equal(got(w, c)->trailer, "x-checksum=abc123");
        assert_int_equal(w->body_seen[1], 3000000 + 11 + 60000);
        for (int i = 0; i < w->n_x; i++)
            assert_int_equal(w->x[i].end, H2_END_COMPLETE);
        free(body);
        world_free(w);
    }
}

/* The client leaves while its request is held: nothing reaches the upstream, nothing leaks. */
static void test_body_client_resets_held_request(void **state)
{
    (void)state;
    struct world *w = world_new_body(1, 1 << 20, "NEVER");
    pump(w);
    size_t base = h2_bridge_memory(w->b);
    uint8_t *body = pattern_body(100000, 0, NULL);
    int32_t id = request(w, "POST", "/echo", body, 100000, false);
    for (int i = 0; i < 3; i++)
        step(w);
    assert_int_equal(nghttp2_submit_rst_stream(w->browser.s, 0, id, NGHTTP2_CANCEL), 0);
    pump(w);
    assert_int_equal(w->origin.requests, 0);
    assert_int_equal(exchange_for(w, id)->end, H2_END_RESET_BY_CLIENT);
    assert_back_to(w, base);
    free(body);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_exchange_fields),
        cmocka_unit_test(test_upload_intact),
        cmocka_unit_test(test_concurrent_100),
        cmocka_unit_test(test_backpressure_10mib),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_trailers_both_ways),
        cmocka_unit_test(test_interim_response),
        cmocka_unit_test(test_rst_from_client),
        cmocka_unit_test(test_rst_from_upstream),
        cmocka_unit_test(test_rst_mid_body_keeps_windows),
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_goaway_from_upstream),
        cmocka_unit_test(test_goaway_from_client),
        cmocka_unit_test(test_block_request),
        cmocka_unit_test(test_block_response),
        cmocka_unit_test(test_request_head_too_large),
        cmocka_unit_test(test_bad_preface),
        cmocka_unit_test(test_client_protocol_error),
        cmocka_unit_test(test_upstream_eof),
        cmocka_unit_test(test_client_eof),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_idle_memory),
        cmocka_unit_test(test_free_reports_open),
        cmocka_unit_test(test_cancel_queued_request),
        cmocka_unit_test(test_goaway_refuses_queued),
        cmocka_unit_test(test_upstream_stops_upload),
        cmocka_unit_test(test_upload_backpressure),
        cmocka_unit_test(test_upstream_eof_after_complete_response),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_request_trailers_too_large),
        cmocka_unit_test(test_block_page_hook),
        cmocka_unit_test(test_regression_status_053),
        cmocka_unit_test(test_body_request_blocked_while_held),
        cmocka_unit_test(test_body_request_blocked_rest_dropped_then_reset),
        cmocka_unit_test(test_body_request_held_then_sent),
        cmocka_unit_test(test_body_request_expect_continue),
        cmocka_unit_test(test_body_response_blocked_while_held),
        cmocka_unit_test(test_body_response_blocked_after_head),
        cmocka_unit_test(test_body_response_passes),
        cmocka_unit_test(test_body_client_resets_held_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
