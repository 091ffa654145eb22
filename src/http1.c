/* http1: streaming HTTP/1.1 inspector for one intercepted connection (see http1.h and
 * docs/HTTP1.md). This file is its core: the feeding calls and their verdicts, the pending
 * queues, and the client and server sides' state machines. Heads are parsed and checked in
 * http1_head.c, bodies framed and inspected in http1_body.c, exchanges recorded and answered
 * in http1_exchange.c; http1_int.h holds the state they share. */
#include "http1_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ----------------------------------------------------------------------------- */

int h1_buf_append(struct h1_buf *b, const void *data, size_t n)
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
    int rc = h1_buf_append(&s->pend, s->hold.p, s->hold.len);
    buf_free(&s->hold);
    return rc;
}

/* ---- ending ------------------------------------------------------------------------------ */

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
        h1_reply_build(h, r, status, why);
    h->closed = true;
    for (int i = 0; i < 2; i++) {
        h->side[i].state = S_DEAD;
        buf_free(&h->side[i].hold);
        h1_body_reset(h, (enum http1_side)i);
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
    h1_rec_finish(h, (enum http1_end)r->end);
    return true;
}

/* ---- feeds ------------------------------------------------------------------------------- */

/* The complete head in *hd may be forwarded. A head that began in an earlier chunk goes out as
 * pending bytes, and so does everything forwardable after it in this chunk (to_pend mode),
 * which keeps *forward a prefix of the caller's chunk. */
int h1_feed_release_head(struct h1_side *s, struct h1_feed *f, const struct h1_head *hd)
{
    if (!hd->held) {
        f->fwd = f->pos;
        return 0;
    }
    /* what was forwardable before the hold goes first (a body hold may end in the chunk its
     * head completed in, after the end of an earlier message) */
    if (f->fwd > f->emit && h1_buf_append(&s->pend, f->buf + f->emit, f->fwd - f->emit) != 0)
        return -1;
    f->to_pend = true;
    f->emit = f->fwd = f->pos;
    return pend_take_hold(s);
}

/* Moves the forwardable bytes of f to the side's pending queue when in to_pend mode. Returns
 * the *forward count for the caller's chunk. */
static size_t feed_finish(struct http1 *h, enum http1_side side, struct h1_feed *f)
{
    struct h1_side *s = &h->side[side];
    if (!f->to_pend)
        return f->fwd;
    if (f->fwd > f->emit && h1_buf_append(&s->pend, f->buf + f->emit, f->fwd - f->emit) != 0)
        h1_close(h, NULL, 0, "out of memory");
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
    h1_body_reset(h, HTTP1_CLIENT);
    f->stop = true;
}

/* A refusal that has no parsed request to attach to (a broken head, too much held data). */
static void client_refuse_new(struct http1 *h, struct h1_feed *f, int status, const char *why)
{
    struct h1_rec *r = h1_rec_push(h);
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
    struct h1_rec *b = h1_rec_back(h);
    return h->n_recs >= HTTP1_MAX_INFLIGHT || (b && (b->flags & R_UPGRADE));
}

static void client_message_done(struct http1 *h)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    struct h1_rec *r = h1_rec_back(h);
    h1_body_reset(h, HTTP1_CLIENT);
    r->flags |= R_REQ_DONE;
    s->state = S_HEAD;
    s->in_head = false;
    if (r->flags & R_RESP_DONE) /* the server answered before the body ended: r is the front */
        h1_rec_finish(h, HTTP1_END_COMPLETE);
}

/* What the hooks see of a request head. */
static struct http1_request_info request_info(const struct h1_rec *r, const struct h1_side *s,
                                              const struct h1_scan *sc)
{
    return (struct http1_request_info){
        .seq = r->seq,
        .method = http_method_str(r->method),
        .scheme = "https",
        .authority = h1_rec_authority(r),
        .path = h1_rec_path(r),
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
        h1_body_begin(h, &(struct http1_body_info){.side = HTTP1_CLIENT, .req = &req});
    }
    if (!h->body[HTTP1_CLIENT].holding)
        return h1_feed_release_head(s, f, hd);
    if (h1_body_hold_head(s, hd) != 0)
        return -1;
    if (sc->expect_continue && h->n_recs == 1 && r->http_minor == 1 && srv->state == S_HEAD &&
        !srv->in_head && pend_count(srv) == 0)
        return h1_buf_append(&srv->pend, cont, sizeof(cont) - 1);
    return 0;
}

static void client_head_done(struct http1 *h, struct h1_feed *f, const struct h1_head *hd)
{
    struct h1_side *s = &h->side[HTTP1_CLIENT];
    struct http1_header hdrs[HTTP1_MAX_HEADERS];
    struct h1_scan sc = {.hdr = hdrs, .status = 400};
    struct h1_target tg = {0};
    struct h1_rec *r = h1_rec_push(h);
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
    const char *why = h1_head_scan(hd->p, hd->n, &sc);
    if (why)
        status = sc.status;
    else
        why = h1_request_check(s, &sc, &tg, &status);
    if (!why && h1_rec_set_strs(r, tg.auth, tg.alen, tg.path, tg.plen, tg.slash) != 0) {
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
    switch (h1_head_step(s, f, &hd, &why, &status)) {
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
    struct h1_rec *r = h1_rec_back(h);
    struct h1_span span = {0};
    size_t start = f->pos;
    const char *why = NULL;
    int rc = h1_body_feed(s, f->buf, f->len, &f->pos, &r->req_bytes, &why,
                          h->body[HTTP1_CLIENT].state ? &span : NULL);
    if (rc < 0) {
        client_refuse(h, f, r, 400, HTTP1_END_BAD_REQUEST, why);
        return;
    }
    if (h1_body_deliver(h, HTTP1_CLIENT, f->buf + span.off, span.len, rc == 1) ==
        HTTP1_BODY_BLOCK) {
        client_body_blocked(h, f, r);
        return;
    }
    if (h1_body_after_step(h, HTTP1_CLIENT, f, start, rc == 1) != 0) {
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
    if (h1_buf_append(&s->hold, f->buf + f->pos, n) != 0) {
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
    struct h1_rec *r = h1_rec_awaiting(h);
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
        h1_rec_finish(h, HTTP1_END_BAD_RESPONSE);
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
    h1_body_reset(h, HTTP1_SERVER);
    r->flags |= R_RESP_DONE;
    s->state = S_HEAD;
    s->in_head = false;
    if (r->flags & R_REQ_DONE) {
        enum http1_end end = HTTP1_END_COMPLETE;
        if (r->flags & R_REFUSED)
            end = (enum http1_end)r->end;
        else if (r->flags & R_REQ_CUT)
            end = HTTP1_END_INCOMPLETE;
        h1_rec_finish(h, end);
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
    h1_rec_finish(h, HTTP1_END_UPGRADED);
    if (c->hold.len && pend_take_hold(c) != 0) {
        h1_close(h, NULL, 0, "out of memory");
        f->stop = true;
        return;
    }
    c->state = S_DEAD;
    h->tunnel = true;
    f->fwd = f->pos = f->len;
}

/* What the hooks see of a response head; *x receives the exchange so far. */
static struct http1_response_info response_info(const struct http1 *h, const struct h1_rec *r,
                                                const struct h1_side *s, const struct h1_scan *sc,
                                                struct http1_exchange *x)
{
    h1_rec_view(h, r, x);
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

/* An allowed final response head goes on to the client, unless its body is to be inspected
 * first: then it is held with the body (h1_body_release sends it). */
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
        h1_body_begin(h, &(struct http1_body_info){.side = HTTP1_SERVER, .resp = &resp});
    }
    if (h->body[HTTP1_SERVER].holding)
        return h1_body_hold_head(s, hd);
    r->status = (uint16_t)st;
    r->flags |= R_RESP_STARTED;
    return h1_feed_release_head(s, f, hd);
}

static void server_head_done(struct http1 *h, struct h1_feed *f, const struct h1_head *hd)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    struct http1_header hdrs[HTTP1_MAX_HEADERS];
    struct h1_scan sc = {.hdr = hdrs, .status = 400};
    struct h1_rec *r = h1_rec_awaiting(h);
    unsigned st = s->hp.status_code;
    s->in_head = false;
    if (!r) {
        server_refuse(h, f, 0, "response with no request outstanding");
        return;
    }
    const char *why = h1_head_scan(hd->p, hd->n, &sc);
    if (!why)
        why = h1_response_check(r, s, &sc);
    if (why) {
        server_refuse(h, f, 502, why);
        return;
    }
    if (st < 200 && st != 101) { /* interim (100 Continue, 103): the final response follows */
        if (h1_feed_release_head(s, f, hd) != 0)
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
        h1_rec_finish(h, HTTP1_END_BLOCKED);
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
    switch (h1_head_step(s, f, &hd, &why, &status)) {
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
    h1_rec_finish(h, HTTP1_END_BLOCKED);
    f->stop = true;
}

static void server_body_step(struct http1 *h, struct h1_feed *f)
{
    struct h1_side *s = &h->side[HTTP1_SERVER];
    struct h1_rec *r = &h->rec0;
    struct h1_span span = {0};
    size_t start = f->pos;
    const char *why = NULL;
    int rc = h1_body_feed(s, f->buf, f->len, &f->pos, &r->resp_bytes, &why,
                          h->body[HTTP1_SERVER].state ? &span : NULL);
    if (rc < 0) {
        server_refuse(h, f, 502, why);
        return;
    }
    if (h1_body_deliver(h, HTTP1_SERVER, f->buf + span.off, span.len, rc == 1) ==
        HTTP1_BODY_BLOCK) {
        server_body_blocked(h, f);
        return;
    }
    if (h1_body_after_step(h, HTTP1_SERVER, f, start, rc == 1) != 0) {
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
    if (h1_body_deliver(h, HTTP1_SERVER, f->buf + start, f->len - start, false) ==
        HTTP1_BODY_BLOCK) {
        server_body_blocked(h, f);
        return;
    }
    if (h1_body_after_step(h, HTTP1_SERVER, f, start, false) != 0)
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
    h1_body_reset(h, HTTP1_CLIENT);
    h1_body_reset(h, HTTP1_SERVER);
    while (h->n_recs) {
        struct h1_rec *r = &h->rec0;
        enum http1_end end = HTTP1_END_INCOMPLETE;
        if (r->flags & R_REFUSED)
            end = (enum http1_end)r->end;
        else if (!r->why)
            r->why = (r->flags & R_REQ_DONE) ? "connection closed before the response ended"
                                             : "connection closed before the request ended";
        h1_rec_finish(h, end);
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
    if (h1_body_deliver(h, side, NULL, 0, true) == HTTP1_BODY_BLOCK) {
        if (side == HTTP1_CLIENT) {
            client_body_blocked(h, f, h1_rec_back(h));
            refusal_due(h);
        } else {
            server_body_blocked(h, f);
        }
        return true;
    }
    if (h->body[side].holding && h1_body_release(h, side, f) != 0)
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
        struct h1_rec *b = h1_rec_back(h);
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
