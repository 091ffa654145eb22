/* Unit tests for http1: the streaming HTTP/1.1 inspector. A small simulated relay applies the
 * header's contract (forward prefix, then pending bytes, then the reply) and records what
 * would have gone to the server ("up") and to the client ("down"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define MAX_X 64
#define SINK_MAX (1 << 20)

struct xcopy {
    unsigned seq;
    char method[16], authority[300], path[300], content_type[128], upgrade[32];
    char rule[64], ref[48], error[128];
    size_t path_len;
    int http_minor, status, upstream_status;
    uint64_t req_bytes, resp_bytes;
    int64_t start_us, end_us;
    enum http1_end end;
};

struct sink {
    char *p;
    size_t len;
};

struct sim {
    struct http1 *h;
    struct http1_hooks hooks;
    struct sink up, down;
    enum http1_verdict last;
    /* hook behaviour */
    const char *block_path;  /* on_request blocks this path */
    const char *block_ctype; /* on_response blocks this content type */
    int response_calls;
    /* what the hooks saw */
    int n_req;
    char req_paths[MAX_X][300];
    char req_auth[MAX_X][300];
    int req_minor[MAX_X], req_upgrade[MAX_X];
    int64_t req_cl[MAX_X];
    size_t req_nhdr[MAX_X];
    char req_hdr0[MAX_X][64];
    int n_x;
    struct xcopy x[MAX_X];
    int64_t clock;
    /* body hooks (enabled by sim_body) */
    const char *body_keyword; /* on_body blocks once the body so far contains it */
    unsigned body_sides;      /* 1 << side: bodies offered are inspected */
    uint64_t body_hold;       /* plan.hold */
    uint64_t body_done_after; /* on_body says DONE past this many bytes; 0: never */
    bool body_match_at_end;   /* the keyword blocks only when the body ends (like `$`) */
    int n_body_begin, n_body_end, n_body_calls;
    char body_got[2][4096]; /* the payload each side's last inspected body delivered */
    size_t body_got_len[2];
    bool body_got_end[2];
};

struct tbody {
    struct sim *m;
    enum http1_side side;
    size_t len;
    bool end;
    char buf[4096];
};

static void sink_add(struct sink *s, const void *p, size_t n)
{
    if (n == 0)
        return;
    assert_true(s->len + n <= SINK_MAX);
    memcpy(s->p + s->len, p, n);
    s->len += n;
}

static int on_request(void *arg, const struct http1_request_info *req, struct http1_block *blk)
{
    struct sim *m = arg;
    assert_true(m->n_req < MAX_X);
    snprintf(m->req_paths[m->n_req], 300, "%s", req->path);
    snprintf(m->req_auth[m->n_req], 300, "%s", req->authority);
    m->req_minor[m->n_req] = req->http_minor;
    m->req_upgrade[m->n_req] = req->upgrade;
    m->req_cl[m->n_req] = req->content_length;
    m->req_nhdr[m->n_req] = req->n_headers;
    if (req->n_headers)
        snprintf(m->req_hdr0[m->n_req], 64, "%.*s=%.*s", (int)req->headers[0].name_len,
                 req->headers[0].name, (int)req->headers[0].value_len, req->headers[0].value);
    assert_string_equal(req->scheme, "https");
    m->n_req++;
    if (m->block_path && strcmp(req->path, m->block_path) == 0) {
        blk->rule = "no-<evil>-paths";
        blk->ref = "ref-42";
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static int on_response(void *arg, const struct http1_response_info *resp, struct http1_block *blk)
{
    struct sim *m = arg;
    m->response_calls++;
    if (m->block_ctype && strcmp(resp->content_type, m->block_ctype) == 0) {
        blk->rule = "no-evil-types";
        blk->ref = "ref-7";
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static void on_exchange(void *arg, const struct http1_exchange *x)
{
    struct sim *m = arg;
    assert_true(m->n_x < MAX_X);
    struct xcopy *c = &m->x[m->n_x++];
    c->seq = x->seq;
    snprintf(c->method, sizeof(c->method), "%s", x->method);
    snprintf(c->authority, sizeof(c->authority), "%s", x->authority);
    snprintf(c->path, sizeof(c->path), "%s", x->path);
    c->path_len = strlen(x->path);
    snprintf(c->content_type, sizeof(c->content_type), "%s", x->content_type);
    snprintf(c->upgrade, sizeof(c->upgrade), "%s", x->upgrade);
    snprintf(c->rule, sizeof(c->rule), "%s", x->rule);
    snprintf(c->ref, sizeof(c->ref), "%s", x->ref);
    snprintf(c->error, sizeof(c->error), "%s", x->error);
    c->http_minor = x->http_minor;
    c->status = x->status;
    c->upstream_status = x->upstream_status;
    c->req_bytes = x->req_bytes;
    c->resp_bytes = x->resp_bytes;
    c->start_us = x->start_us;
    c->end_us = x->end_us;
    c->end = x->end;
    assert_string_equal(x->scheme, "https");
}

static int64_t now_us(void *arg)
{
    struct sim *m = arg;
    return m->clock += 1000;
}

static void body_begin(void *arg, const struct http1_body_info *info, struct http1_body_plan *plan)
{
    struct sim *m = arg;
    assert_true((info->side == HTTP1_CLIENT) == (info->req != NULL));
    assert_true((info->side == HTTP1_SERVER) == (info->resp != NULL));
    assert_int_equal(plan->hold, 0);
    assert_null(plan->body);
    if (!(m->body_sides & (1u << info->side)))
        return;
    struct tbody *b = calloc(1, sizeof(*b));
    b->m = m;
    b->side = info->side;
    m->n_body_begin++;
    plan->body = b;
    plan->hold = m->body_hold;
}

static int on_body(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                   struct http1_block *blk)
{
    struct sim *m = arg;
    struct tbody *b = body;
    assert_ptr_equal(b->m, m);
    assert_false(b->end);
    assert_true(len > 0 || end);
    m->n_body_calls++;
    assert_true(b->len + len < sizeof(b->buf));
    if (len)
        memcpy(b->buf + b->len, data, len);
    b->len += len;
    b->buf[b->len] = '\0';
    b->end = end;
    if (m->body_keyword && (end || !m->body_match_at_end) &&
        memmem(b->buf, b->len, m->body_keyword, strlen(m->body_keyword))) {
        blk->rule = "body-rule";
        blk->ref = "ref-body";
        return HTTP1_BODY_BLOCK;
    }
    if (m->body_done_after && b->len >= m->body_done_after)
        return HTTP1_BODY_DONE;
    return HTTP1_BODY_MORE;
}

static void body_end(void *arg, void *body)
{
    struct sim *m = arg;
    struct tbody *b = body;
    m->n_body_end++;
    memcpy(m->body_got[b->side], b->buf, b->len);
    m->body_got_len[b->side] = b->len;
    m->body_got_end[b->side] = b->end;
    free(b);
}

static struct sim *sim_new(void)
{
    struct sim *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    m->up.p = malloc(SINK_MAX);
    m->down.p = malloc(SINK_MAX);
    m->hooks = (struct http1_hooks){.on_request = on_request,
                                    .on_response = on_response,
                                    .on_exchange = on_exchange,
                                    .now_us = now_us};
    m->h = http1_new(&m->hooks, m);
    assert_non_null(m->h);
    return m;
}

static void sim_free(struct sim *m)
{
    http1_free(m->h);
    assert_int_equal(m->n_body_begin, m->n_body_end);
    free(m->up.p);
    free(m->down.p);
    free(m);
}

/* Drains both pending queues, the way the relay would. */
static void sim_drain(struct sim *m)
{
    const uint8_t *d;
    size_t n;
    while ((n = http1_pending(m->h, HTTP1_CLIENT, &d)) > 0) {
        sink_add(&m->up, d, n);
        http1_pending_consume(m->h, HTTP1_CLIENT, n);
    }
    while ((n = http1_pending(m->h, HTTP1_SERVER, &d)) > 0) {
        sink_add(&m->down, d, n);
        http1_pending_consume(m->h, HTTP1_SERVER, n);
    }
}

static void sim_after(struct sim *m, enum http1_verdict v)
{
    sim_drain(m);
    if (v == HTTP1_REPLY_AND_CLOSE) {
        const uint8_t *d;
        size_t n;
        http1_reply(m->h, &d, &n);
        sink_add(&m->down, d, n);
    }
    m->last = v;
}

static enum http1_verdict feed_n(struct sim *m, enum http1_side side, const char *s, size_t len)
{
    size_t fwd = 12345;
    enum http1_verdict v = side == HTTP1_CLIENT
                               ? http1_from_client(m->h, (const uint8_t *)s, len, &fwd)
                               : http1_from_server(m->h, (const uint8_t *)s, len, &fwd);
    assert_true(fwd <= len);
    if (v == HTTP1_TUNNEL)
        assert_int_equal(fwd, len);
    sink_add(side == HTTP1_CLIENT ? &m->up : &m->down, s, fwd);
    sim_after(m, v);
    return v;
}

static enum http1_verdict client(struct sim *m, const char *s)
{
    return feed_n(m, HTTP1_CLIENT, s, strlen(s));
}

static enum http1_verdict server(struct sim *m, const char *s)
{
    return feed_n(m, HTTP1_SERVER, s, strlen(s));
}

static enum http1_verdict eof(struct sim *m, enum http1_side side)
{
    enum http1_verdict v = http1_eof(m->h, side);
    sim_after(m, v);
    return v;
}

static bool sink_is(const struct sink *s, const char *want)
{
    return s->len == strlen(want) && memcmp(s->p, want, s->len) == 0;
}

static bool sink_has(const struct sink *s, const char *needle)
{
    return memmem(s->p, s->len, needle, strlen(needle)) != NULL;
}

#define ASSERT_SINK(s, want)                                                                       \
    do {                                                                                           \
        if (!sink_is(s, want))                                                                     \
            fail_msg("got [%.*s]\nwant [%s]", (int)(s)->len, (s)->p, want);                        \
    } while (0)

/* ---- keep-alive, pipelining, splitting ---------------------------------------------------- */

static const char *REQ_A = "GET /a?x=1 HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n";
static const char *RESP_A = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n"
                            "\r\nhello";
static const char *REQ_B = "POST /b HTTP/1.1\r\nHost: example.org\r\nContent-Length: 3\r\n\r\nxyz";
static const char *RESP_B = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
static const char *REQ_C = "GET /c HTTP/1.1\r\nHost: example.org:443\r\n\r\n";
static const char *RESP_C = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n";

static void test_keepalive_sequence(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    assert_int_equal(client(m, REQ_A), HTTP1_FORWARD);
    assert_int_equal(server(m, RESP_A), HTTP1_FORWARD);
    assert_int_equal(client(m, REQ_B), HTTP1_FORWARD);
    assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
    assert_int_equal(client(m, REQ_C), HTTP1_FORWARD);
    assert_int_equal(server(m, RESP_C), HTTP1_FORWARD);
    char up[1024], down[1024];
    snprintf(up, sizeof(up), "%s%s%s", REQ_A, REQ_B, REQ_C);
    snprintf(down, sizeof(down), "%s%s%s", RESP_A, RESP_B, RESP_C);
    ASSERT_SINK(&m->up, up);
    ASSERT_SINK(&m->down, down);
    assert_int_equal(m->n_x, 3);
    assert_int_equal(m->x[0].seq, 1);
    assert_string_equal(m->x[0].method, "GET");
    assert_string_equal(m->x[0].authority, "example.org");
    assert_string_equal(m->x[0].path, "/a?x=1");
    assert_int_equal(m->x[0].status, 200);
    assert_int_equal(m->x[0].upstream_status, 200);
    assert_string_equal(m->x[0].content_type, "text/html");
    assert_int_equal(m->x[0].resp_bytes, 5);
    assert_int_equal(m->x[0].req_bytes, 0);
    assert_int_equal(m->x[0].http_minor, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    assert_true(m->x[0].end_us > m->x[0].start_us);
    assert_string_equal(m->x[1].method, "POST");
    assert_int_equal(m->x[1].req_bytes, 3);
    assert_int_equal(m->x[1].status, 201);
    assert_string_equal(m->x[1].content_type, "");
    assert_string_equal(m->x[2].authority, "example.org:443");
    assert_int_equal(m->x[2].status, 404);
    assert_int_equal(m->x[2].resp_bytes, 4);
    assert_int_equal(m->x[2].seq, 3);
    assert_null(http1_error(m->h));
    sim_free(m);
}

static void test_pipelined_requests_in_one_chunk(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char up[1024], down[1024];
    snprintf(up, sizeof(up), "%s%s%s", REQ_A, REQ_B, REQ_C);
    snprintf(down, sizeof(down), "%s%s%s", RESP_A, RESP_B, RESP_C);
    assert_int_equal(client(m, up), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, up);
    assert_int_equal(m->n_req, 3);
    assert_int_equal(m->n_x, 0);
    assert_int_equal(server(m, down), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, down);
    assert_int_equal(m->n_x, 3);
    /* FIFO: each response is matched to its request */
    assert_string_equal(m->x[0].path, "/a?x=1");
    assert_int_equal(m->x[0].status, 200);
    assert_string_equal(m->x[1].path, "/b");
    assert_int_equal(m->x[1].status, 201);
    assert_string_equal(m->x[2].path, "/c");
    assert_int_equal(m->x[2].status, 404);
    sim_free(m);
}

static void test_head_split_at_every_offset(void **state)
{
    (void)state;
    const char *req = "POST /upload HTTP/1.1\r\nHost: example.org\r\nContent-Length: 4\r\n"
                      "X-Long: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nbody";
    size_t head_len = strlen(req) - 4;
    for (size_t k = 1; k < strlen(req); k++) {
        struct sim *m = sim_new();
        size_t fwd;
        assert_int_equal(http1_from_client(m->h, (const uint8_t *)req, k, &fwd), HTTP1_FORWARD);
        const uint8_t *d;
        if (k < head_len) {
            /* the incomplete head is held: nothing reaches the server, nothing is pending */
            assert_int_equal(fwd, 0);
            assert_int_equal(http1_pending(m->h, HTTP1_CLIENT, &d), 0);
            assert_int_equal(m->n_req, 0);
        } else {
            assert_int_equal(fwd, k);
            assert_int_equal(m->n_req, 1);
        }
        sink_add(&m->up, req, fwd);
        sim_drain(m);
        assert_int_equal(client(m, req + k), HTTP1_FORWARD);
        ASSERT_SINK(&m->up, req);
        assert_int_equal(m->n_req, 1);
        assert_string_equal(m->req_paths[0], "/upload");
        assert_int_equal(m->req_cl[0], 4);
        assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
        assert_int_equal(m->n_x, 1);
        assert_int_equal(m->x[0].req_bytes, 4);
        sim_free(m);
    }
}

static void test_head_split_into_single_bytes(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char all[512];
    snprintf(all, sizeof(all), "%s%s", REQ_A, REQ_C);
    for (size_t i = 0; i < strlen(all); i++)
        assert_int_equal(feed_n(m, HTTP1_CLIENT, all + i, 1), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, all);
    assert_int_equal(m->n_req, 2);
    char down[512];
    snprintf(down, sizeof(down), "%s%s", RESP_A, RESP_C);
    for (size_t i = 0; i < strlen(down); i++)
        assert_int_equal(feed_n(m, HTTP1_SERVER, down + i, 1), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, down);
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[1].resp_bytes, 4);
    sim_free(m);
}

static void test_held_head_then_body_in_same_chunk_keeps_order(void **state)
{
    (void)state;
    /* the head completes in a later chunk that also carries body and the next request: the
     * inspector releases all of it, in order, through the pending queue */
    struct sim *m = sim_new();
    const char *p1 = "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Len";
    const char *p2 = "gth: 5\r\n\r\n12345GET /q HTTP/1.1\r\nHost: a.test\r\n\r\n";
    size_t fwd;
    assert_int_equal(http1_from_client(m->h, (const uint8_t *)p1, strlen(p1), &fwd), HTTP1_FORWARD);
    assert_int_equal(fwd, 0);
    assert_int_equal(http1_from_client(m->h, (const uint8_t *)p2, strlen(p2), &fwd), HTTP1_FORWARD);
    assert_int_equal(fwd, 0);
    const uint8_t *d;
    size_t n = http1_pending(m->h, HTTP1_CLIENT, &d);
    char want[256];
    snprintf(want, sizeof(want), "%s%s", p1, p2);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(d, want, n);
    /* the relay may send it in pieces */
    http1_pending_consume(m->h, HTTP1_CLIENT, 10);
    assert_int_equal(http1_pending(m->h, HTTP1_CLIENT, &d), n - 10);
    assert_memory_equal(d, want + 10, n - 10);
    http1_pending_consume(m->h, HTTP1_CLIENT, n);
    assert_int_equal(http1_pending(m->h, HTTP1_CLIENT, &d), 0);
    assert_int_equal(m->n_req, 2);
    sim_free(m);
}

static void test_feeding_while_pending_queues_behind(void **state)
{
    (void)state;
    /* a relay that feeds again before sending pending bytes gets forward 0 and order kept */
    struct sim *m = sim_new();
    const char *p1 = "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n";
    const char *p2 = "\r\nabc";
    const char *p3 = "def";
    size_t fwd;
    http1_from_client(m->h, (const uint8_t *)p1, strlen(p1), &fwd);
    http1_from_client(m->h, (const uint8_t *)p2, strlen(p2), &fwd);
    assert_int_equal(fwd, 0);
    http1_from_client(m->h, (const uint8_t *)p3, strlen(p3), &fwd);
    assert_int_equal(fwd, 0);
    sim_drain(m);
    char want[256];
    snprintf(want, sizeof(want), "%s%s%s", p1, p2, p3);
    ASSERT_SINK(&m->up, want);
    /* once drained, body bytes flow as the *forward prefix again */
    assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
    assert_int_equal(m->x[0].req_bytes, 6);
    sim_free(m);
}

/* ---- bodies -------------------------------------------------------------------------------- */

static void test_chunked_request_split_everywhere(void **state)
{
    (void)state;
    const char *req = "POST /c HTTP/1.1\r\nHost: example.org\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5;name=\"va;l\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                      "0\r\nX-Trailer: yes\r\n\r\n";
    size_t head_len = strstr(req, "\r\n\r\n") - req + 4;
    for (size_t k = head_len; k < strlen(req); k++) {
        for (size_t j = k + 1; j <= strlen(req); j += 7) {
            struct sim *m = sim_new();
            assert_int_equal(feed_n(m, HTTP1_CLIENT, req, k), HTTP1_FORWARD);
            assert_int_equal(feed_n(m, HTTP1_CLIENT, req + k, j - k), HTTP1_FORWARD);
            if (j < strlen(req))
                assert_int_equal(feed_n(m, HTTP1_CLIENT, req + j, strlen(req) - j), HTTP1_FORWARD);
            ASSERT_SINK(&m->up, req);
            assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
            assert_int_equal(m->n_x, 1);
            assert_int_equal(m->x[0].req_bytes, 5 + 26);
            assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
            assert_int_equal(m->req_cl[0], -1);
            sim_free(m);
        }
    }
}

static void test_chunked_response_split_everywhere(void **state)
{
    (void)state;
    const char *resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       "10\r\n0123456789abcdef\r\n3\r\nxyz\r\n0\r\n\r\n";
    for (size_t k = 1; k < strlen(resp); k++) {
        struct sim *m = sim_new();
        client(m, REQ_A);
        assert_int_equal(feed_n(m, HTTP1_SERVER, resp, k), HTTP1_FORWARD);
        assert_int_equal(feed_n(m, HTTP1_SERVER, resp + k, strlen(resp) - k), HTTP1_FORWARD);
        ASSERT_SINK(&m->down, resp);
        assert_int_equal(m->n_x, 1);
        assert_int_equal(m->x[0].resp_bytes, 19);
        /* the connection goes on */
        client(m, REQ_C);
        server(m, RESP_C);
        assert_int_equal(m->n_x, 2);
        sim_free(m);
    }
}

static void test_head_response_has_no_body(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "HEAD /big HTTP/1.1\r\nHost: example.org\r\n\r\n");
    client(m, REQ_A);
    /* the HEAD response announces 1234 bytes but carries none; the next response follows */
    char down[512];
    snprintf(down, sizeof(down),
             "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n"
             "Content-Type: video/mp4\r\n\r\n%s",
             RESP_A);
    assert_int_equal(server(m, down), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, down);
    assert_int_equal(m->n_x, 2);
    assert_string_equal(m->x[0].method, "HEAD");
    assert_int_equal(m->x[0].resp_bytes, 0);
    assert_string_equal(m->x[0].content_type, "video/mp4");
    assert_int_equal(m->x[1].resp_bytes, 5);
    sim_free(m);
}

static void test_204_and_304_have_no_body(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, REQ_A);
    client(m, REQ_C);
    client(m, REQ_A);
    char down[512];
    snprintf(down, sizeof(down),
             "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
             "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n%s",
             RESP_A);
    assert_int_equal(server(m, down), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, down);
    assert_int_equal(m->n_x, 3);
    assert_int_equal(m->x[0].status, 204);
    assert_int_equal(m->x[1].status, 304);
    assert_int_equal(m->x[1].resp_bytes, 0);
    assert_int_equal(m->x[2].status, 200);
    sim_free(m);
}

static void test_expect_100_continue(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    const char *head = "PUT /f HTTP/1.1\r\nHost: example.org\r\nExpect: 100-continue\r\n"
                       "Content-Length: 10\r\n\r\n";
    assert_int_equal(client(m, head), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, head);
    assert_int_equal(server(m, "HTTP/1.1 100 Continue\r\n\r\n"), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_int_equal(m->response_calls, 0); /* interim: not a response decision */
    assert_int_equal(client(m, "0123456789"), HTTP1_FORWARD);
    assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].status, 201);
    assert_int_equal(m->x[0].req_bytes, 10);
    sim_free(m);
}

static void test_early_response_before_request_body_ends(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "POST /big HTTP/1.1\r\nHost: example.org\r\nContent-Length: 6\r\n\r\nabc");
    assert_int_equal(server(m, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"),
                     HTTP1_FORWARD);
    assert_int_equal(m->n_x, 0); /* the request is not over yet */
    assert_int_equal(client(m, "def"), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].status, 413);
    assert_int_equal(m->x[0].req_bytes, 6);
    sim_free(m);
}

static void test_close_delimited_response(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "GET /old HTTP/1.0\r\n\r\n");
    assert_int_equal(server(m, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome "),
                     HTTP1_FORWARD);
    assert_int_equal(server(m, "bytes"), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 0);
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].resp_bytes, 10);
    assert_int_equal(m->x[0].http_minor, 0);
    assert_string_equal(m->x[0].authority, ""); /* HTTP/1.0 without Host */
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    sim_free(m);
}

/* ---- protocol switches ---------------------------------------------------------------------- */

static void test_websocket_upgrade_becomes_tunnel(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    const char *req = "GET /chat HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(client(m, req), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, req);
    assert_int_equal(m->req_upgrade[0], 1);
    /* a client that does not wait: its frame is held, not parsed as HTTP, not forwarded */
    assert_int_equal(client(m, "\x81\x85 early"), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, req);
    const char *resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\n\r\n\x81\x02hi";
    assert_int_equal(server(m, resp), HTTP1_TUNNEL);
    ASSERT_SINK(&m->down, resp);
    char up[512];
    snprintf(up, sizeof(up), "%s\x81\x85 early", req);
    ASSERT_SINK(&m->up, up);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_UPGRADED);
    assert_int_equal(m->x[0].status, 101);
    assert_string_equal(m->x[0].upgrade, "websocket");
    /* from now on everything passes */
    assert_int_equal(client(m, "GET /x HTTP/1.1\r\n\r\n"), HTTP1_TUNNEL);
    assert_int_equal(server(m, "\x00\xff"), HTTP1_TUNNEL);
    assert_int_equal(eof(m, HTTP1_CLIENT), HTTP1_TUNNEL);
    sim_free(m);
}

static void test_upgrade_declined_releases_held_requests(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    const char *req = "GET /ws HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n"
                      "Connection: upgrade\r\n\r\n";
    client(m, req);
    client(m, REQ_C); /* pipelined behind an upgrade: held until the server answers */
    ASSERT_SINK(&m->up, req);
    assert_int_equal(m->n_req, 1);
    assert_int_equal(server(m, RESP_A), HTTP1_FORWARD); /* declined: a plain 200 */
    char up[512];
    snprintf(up, sizeof(up), "%s%s", req, REQ_C);
    ASSERT_SINK(&m->up, up);
    assert_int_equal(m->n_req, 2);
    assert_int_equal(server(m, RESP_C), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    assert_int_equal(m->x[1].status, 404);
    sim_free(m);
}

static void test_connect_inside_becomes_tunnel(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    const char *req = "CONNECT inner.example:8443 HTTP/1.1\r\nHost: inner.example:8443\r\n\r\n";
    assert_int_equal(client(m, req), HTTP1_FORWARD);
    assert_string_equal(m->req_auth[0], "inner.example:8443");
    assert_string_equal(m->req_paths[0], "");
    assert_int_equal(server(m, "HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01"),
                     HTTP1_TUNNEL);
    assert_int_equal(m->x[0].end, HTTP1_END_UPGRADED);
    assert_string_equal(m->x[0].upgrade, "CONNECT");
    sim_free(m);
}

static void test_101_without_upgrade_request_is_502(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, REQ_A);
    assert_int_equal(server(m, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: upgrade\r\n\r\n"),
                     HTTP1_REPLY_AND_CLOSE);
    assert_true(sink_has(&m->down, "HTTP/1.1 502 Bad Gateway\r\n"));
    assert_string_equal(http1_error(m->h), "101 Switching Protocols without an Upgrade request");
    sim_free(m);
}

/* ---- refusals: the client's framing -----------------------------------------------------------
 */

struct bad_case {
    const char *name, *input, *why;
    int status;
};

static const struct bad_case bad_requests[] = {
    {"CL then TE",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     "Content-Length", 400},
    {"TE then CL",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 5\r\n\r\n",
     "Content-Length", 400},
    {"CL + TE gzip",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: gzip\r\n\r\n",
     "Content-Length", 400},
    {"repeated CL, same",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     "Content-Length: 5\r\n\r\nhello",
     "repeated Content-Length", 400},
    {"repeated CL, different",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     "Content-Length: 6\r\n\r\n",
     "repeated Content-Length", 400},
    {"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
     "invalid Content-Length", 400},
    {"CL sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
     "invalid Content-Length", 400},
    {"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "invalid Content-Length",
     400},
    {"CL huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
     "Content-Length", 400},
    {"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
     "invalid header name", 400},
    {"space in name", "GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", "invalid header name", 400},
    {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", "", 400},
    {"bare CR in value", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "bare CR", 400},
    {"bare CR before LF", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", "bare CR", 400},
    {"bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", "bare LF", 400},
    {"bare LF one header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", "bare LF", 400},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", "line folding", 400},
    {"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tz\r\n\r\n", "line folding", 400},
    {"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\001b\r\n\r\n", "invalid character", 400},
    {"TE not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
     "final chunked", 400},
    {"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
     "final chunked", 400},
    {"TE chunked not last",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n"
     "\r\n",
     "final chunked", 400},
    {"TE chunked twice",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n"
     "\r\n",
     "final chunked", 400},
    {"TE over two lines",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: gzip\r\n\r\n",
     "final chunked", 400},
    {"TE with parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
     "Transfer-Encoding", 400},
    {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
     "HTTP/1.0", 400},
    {"bad chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "zz\r\n",
     "invalid chunk size", 400},
    {"empty chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "\r\n",
     "invalid chunk size", 400},
    {"chunk size overflow",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "fffffffffffffffff\r\n",
     "too large", 400},
    {"LF in chunk extension",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0;\n\nGET /smuggled HTTP/1.1\nHost: a\n\n\r\n\r\n",
     "control character in a chunk extension", 400},
    {"bare LF after chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "\r\n5\nhello\r\n0\r\n\r\n",
     "invalid chunk size", 400},
    {"space after chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "\r\n5 \r\nhello\r\n0\r\n\r\n",
     "chunk extension", 400},
    {"chunk data too long",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\nhello\r\n0\r\n\r\n",
     "not followed by CRLF", 400},
    {"obs-fold in trailer",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\nX: a\r\n b\r\n\r\n",
     "line folding in a trailer", 400},
    {"bare LF in trailer",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\nX: a\nGET / HTTP/1.1\r\n\r\n",
     "invalid character", 400},
    {"two spaces in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "request line", 400},
    {"unknown method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", "method", 400},
    {"HTTP/1.9", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", "version", 505},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version", 505},
    {"missing Host", "GET / HTTP/1.1\r\n\r\n", "missing Host", 400},
    {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host", 400},
    {"Host with userinfo", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", "invalid Host", 400},
    {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host", 400},
    {"Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "invalid Host", 400},
    {"Host vs absolute-form", "GET https://good.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
     "does not match", 400},
    {"userinfo in target", "GET https://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", "user information", 400},
    {"other scheme", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "scheme", 400},
    {"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", "fragment", 400},
    {"asterisk outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", "", 400},
    {"CONNECT without port", "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n", "host:port", 400},
    {"CONNECT with body",
     "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n"
     "Content-Length: 5\r\n\r\nhello",
     "CONNECT with a body", 400},
};

static void test_client_framing_attacks_get_400(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
        const struct bad_case *c = &bad_requests[i];
        struct sim *m = sim_new();
        enum http1_verdict v = client(m, c->input);
        if (v != HTTP1_REPLY_AND_CLOSE)
            fail_msg("%s: verdict %d, forwarded [%.*s]", c->name, v, (int)m->up.len, m->up.p);
        char want[64];
        snprintf(want, sizeof(want), "HTTP/1.1 %d ", c->status);
        if (m->down.len < strlen(want) || memcmp(m->down.p, want, strlen(want)) != 0)
            fail_msg("%s: reply [%.*s]", c->name, (int)m->down.len, m->down.p);
        assert_true(sink_has(&m->down, "\r\nConnection: close\r\n"));
        const char *err = http1_error(m->h);
        if (!err || !strstr(err, c->why))
            fail_msg("%s: error [%s], want [%s]", c->name, err ? err : "(null)", c->why);
        /* the refused request's head never reached the server... unless its head was fine and
         * the body broke, in which case nothing past the breaking point did */
        if (!strstr(c->why, "chunk") && !strstr(c->why, "trailer") && !strstr(c->why, "CRLF"))
            assert_int_equal(m->up.len, 0);
        assert_false(sink_has(&m->up, "smuggled"));
        /* the refusal is logged as an exchange */
        assert_int_equal(m->n_x, 1);
        assert_int_equal(m->x[0].end, HTTP1_END_BAD_REQUEST);
        assert_int_equal(m->x[0].status, c->status);
        assert_string_equal(m->x[0].error, err);
        /* later bytes change nothing */
        size_t fwd = 1;
        assert_int_equal(http1_from_client(m->h, (const uint8_t *)"GET", 3, &fwd),
                         HTTP1_REPLY_AND_CLOSE);
        assert_int_equal(fwd, 0);
        sim_free(m);
    }
}

static void test_smuggling_via_chunk_extension_split_never_forwarded(void **state)
{
    (void)state;
    /* a lenient server would end the chunk line at the first LF and see a second request; the
     * attack is sent one byte at a time so that the inspector cannot wait for the CR */
    const char *head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *body = "0;\n\nGET /smuggled HTTP/1.1\nHost: a\n\n\r\n\r\n";
    struct sim *m = sim_new();
    client(m, head);
    enum http1_verdict v = HTTP1_FORWARD;
    for (size_t i = 0; body[i] && v == HTTP1_FORWARD; i++)
        v = feed_n(m, HTTP1_CLIENT, body + i, 1);
    assert_int_equal(v, HTTP1_REPLY_AND_CLOSE);
    assert_false(sink_has(&m->up, "\n\n"));
    assert_false(sink_has(&m->up, "smuggled"));
    sim_free(m);
}

static void test_head_too_large_is_431(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "GET / HTTP/1.1\r\nHost: a\r\n");
    char line[1100];
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    memcpy(line + sizeof(line) - 3, "\r\n", 3);
    enum http1_verdict v = HTTP1_FORWARD;
    for (int i = 0; i < 70 && v == HTTP1_FORWARD; i++)
        v = client(m, line);
    assert_int_equal(v, HTTP1_REPLY_AND_CLOSE);
    assert_int_equal(m->up.len, 0);
    assert_true(sink_has(&m->down, "HTTP/1.1 431 "));
    assert_string_equal(http1_error(m->h), "head too large");
    sim_free(m);
}

static void test_too_many_headers_is_431(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char req[8192];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < HTTP1_MAX_HEADERS; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    assert_int_equal(client(m, req), HTTP1_REPLY_AND_CLOSE);
    assert_true(sink_has(&m->down, "HTTP/1.1 431 "));
    sim_free(m);
}

static void test_bad_pipelined_request_answered_after_earlier_response(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char in[512];
    snprintf(in, sizeof(in), "%sGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", REQ_A);
    assert_int_equal(client(m, in), HTTP1_FORWARD); /* A still awaits its response */
    ASSERT_SINK(&m->up, REQ_A);
    assert_int_equal(m->down.len, 0);
    size_t fwd;
    assert_int_equal(http1_from_client(m->h, (const uint8_t *)"more", 4, &fwd), HTTP1_FORWARD);
    assert_int_equal(fwd, 0);
    /* A's response is relayed whole, then the 400, then the connection closes */
    assert_int_equal(server(m, RESP_A), HTTP1_REPLY_AND_CLOSE);
    assert_true(m->down.len > strlen(RESP_A));
    assert_memory_equal(m->down.p, RESP_A, strlen(RESP_A));
    assert_memory_equal(m->down.p + strlen(RESP_A), "HTTP/1.1 400 Bad Request\r\n", 26);
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[0].status, 200);
    assert_int_equal(m->x[1].status, 400);
    assert_int_equal(m->x[1].end, HTTP1_END_BAD_REQUEST);
    sim_free(m);
}

/* ---- refusals: the server's framing ------------------------------------------------------------
 */

static const struct bad_case bad_responses[] = {
    {"CL + TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Content-Length", 502},
    {"repeated CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
     "Content-Length", 502},
    {"TE gzip only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "final chunked", 502},
    {"TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.0",
     502},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF", 502},
    {"bare CR in status line", "HTTP/1.1 200 O\rK\r\n\r\n", "", 502},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", "folding", 502},
    {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "header name", 502},
    {"status 099", "HTTP/1.1 099 Odd\r\n\r\n", "status", 502},
    {"status 20", "HTTP/1.1 20 OK\r\n\r\n", "status", 502},
    {"HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "version", 502},
    {"two Content-Types",
     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
     "Content-Type: text/html\r\nContent-Length: 0\r\n\r\n",
     "conflicting Content-Type", 502},
    {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk", 0},
    {"LF in chunk ext", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n",
     "chunk extension", 0},
};

static void test_server_framing_attacks_get_502(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_responses) / sizeof(bad_responses[0]); i++) {
        const struct bad_case *c = &bad_responses[i];
        struct sim *m = sim_new();
        client(m, REQ_A);
        enum http1_verdict v = server(m, c->input);
        if (v != HTTP1_REPLY_AND_CLOSE)
            fail_msg("%s: verdict %d", c->name, v);
        const char *err = http1_error(m->h);
        if (!err || !strstr(err, c->why))
            fail_msg("%s: error [%s], want [%s]", c->name, err ? err : "(null)", c->why);
        const uint8_t *reply;
        size_t rlen;
        http1_reply(m->h, &reply, &rlen);
        if (c->status) {
            /* nothing of the response reached the client: it gets a 502 instead */
            assert_true(rlen > 0);
            assert_int_equal(m->down.len, rlen);
            assert_memory_equal(m->down.p, reply, rlen);
            assert_memory_equal(reply, "HTTP/1.1 502 Bad Gateway\r\n", 26);
            assert_true(sink_has(&m->down, "\r\nConnection: close\r\n"));
        } else {
            /* the head was relayed already: the cut is the signal, no reply */
            assert_int_equal(rlen, 0);
            assert_true(m->down.len > 0);
        }
        assert_int_equal(m->n_x, 1);
        assert_int_equal(m->x[0].end, HTTP1_END_BAD_RESPONSE);
        sim_free(m);
    }
}

static void test_unsolicited_response_closes_quietly(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    assert_int_equal(server(m, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"),
                     HTTP1_REPLY_AND_CLOSE);
    assert_int_equal(m->down.len, 0); /* neither the 408 nor a reply */
    assert_string_equal(http1_error(m->h), "response with no request outstanding");
    sim_free(m);
}

/* ---- blocking -----------------------------------------------------------------------------------
 */

static void test_blocked_request_gets_403_and_never_reaches_server(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_path = "/secret";
    const char *req = "POST /secret HTTP/1.1\r\nHost: example.org\r\nContent-Length: 11\r\n"
                      "Expect: 100-continue\r\n\r\nconfidental";
    /* split so the head arrives in pieces and the body after */
    assert_int_equal(feed_n(m, HTTP1_CLIENT, req, 20), HTTP1_FORWARD);
    assert_int_equal(feed_n(m, HTTP1_CLIENT, req + 20, strlen(req) - 20), HTTP1_REPLY_AND_CLOSE);
    assert_int_equal(m->up.len, 0);
    assert_true(sink_has(&m->down, "HTTP/1.1 403 Forbidden\r\n"));
    assert_true(sink_has(&m->down, "Connection: close\r\n"));
    assert_true(sink_has(&m->down, "text/html"));
    assert_true(sink_has(&m->down, "no-&lt;evil&gt;-paths")); /* rule, HTML-escaped */
    assert_true(sink_has(&m->down, "ref-42"));
    assert_true(sink_has(&m->down, "example.org"));
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
    assert_int_equal(m->x[0].status, 403);
    assert_int_equal(m->x[0].upstream_status, 0);
    assert_string_equal(m->x[0].rule, "no-<evil>-paths");
    assert_string_equal(m->x[0].ref, "ref-42");
    assert_string_equal(m->x[0].path, "/secret");
    assert_string_equal(http1_error(m->h), "request blocked by policy");
    sim_free(m);
}

static void test_blocked_pipelined_request_waits_for_earlier_response(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_path = "/secret";
    char in[512];
    snprintf(in, sizeof(in), "%sGET /secret HTTP/1.1\r\nHost: example.org\r\n\r\n%s", REQ_A, REQ_C);
    assert_int_equal(client(m, in), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, REQ_A); /* neither the blocked request nor what follows it */
    assert_int_equal(m->n_req, 2);
    assert_int_equal(server(m, RESP_A), HTTP1_REPLY_AND_CLOSE);
    assert_memory_equal(m->down.p, RESP_A, strlen(RESP_A));
    assert_true(sink_has(&m->down, "HTTP/1.1 403 Forbidden"));
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[1].end, HTTP1_END_BLOCKED);
    sim_free(m);
}

static void test_blocked_head_request_reply_has_no_body(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_path = "/secret";
    assert_int_equal(client(m, "HEAD /secret HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP1_REPLY_AND_CLOSE);
    const char *end = memmem(m->down.p, m->down.len, "\r\n\r\n", 4);
    assert_non_null(end);
    assert_int_equal((size_t)(end + 4 - m->down.p), m->down.len);
    assert_true(sink_has(&m->down, "Content-Length: "));
    sim_free(m);
}

static size_t custom_page(void *arg, const struct http1_exchange *x, char *buf, size_t cap)
{
    (void)arg;
    return (size_t)snprintf(buf, cap, "<p>nope: %s %s</p>", x->rule, x->ref);
}

static void test_block_page_hook(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->hooks.block_page = custom_page;
    m->block_path = "/x";
    client(m, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_true(sink_has(&m->down, "\r\n\r\n<p>nope: no-<evil>-paths ref-42</p>"));
    assert_true(sink_has(&m->down, "Content-Length: 35\r\n"));
    sim_free(m);
}

static void test_blocked_response_gets_403_instead(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_ctype = "application/x-evil";
    client(m, REQ_A);
    assert_int_equal(server(m, "HTTP/1.1 200 OK\r\nContent-Type: application/x-evil\r\n"
                               "Content-Length: 6\r\n\r\nEVIL!!"),
                     HTTP1_REPLY_AND_CLOSE);
    assert_false(sink_has(&m->down, "EVIL!!"));
    assert_false(sink_has(&m->down, "200 OK"));
    assert_true(sink_has(&m->down, "HTTP/1.1 403 Forbidden"));
    assert_true(sink_has(&m->down, "ref-7"));
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
    assert_int_equal(m->x[0].upstream_status, 200);
    assert_int_equal(m->x[0].status, 403);
    assert_string_equal(m->x[0].content_type, "application/x-evil");
    assert_string_equal(m->x[0].rule, "no-evil-types");
    sim_free(m);
}

/* ---- targets, limits, lifecycle
 * ------------------------------------------------------------------ */

static void test_absolute_form_and_options_star(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "GET https://Example.ORG:443/p/q?r=1 HTTP/1.1\r\nHost: example.org\r\n\r\n");
    client(m, "OPTIONS * HTTP/1.1\r\nHost: example.org\r\n\r\n");
    client(m, "GET https://example.org?only=query HTTP/1.1\r\nHost: example.org\r\n\r\n");
    client(m, "\r\nGET /after-crlf HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n");
    assert_int_equal(m->last, HTTP1_FORWARD);
    assert_int_equal(m->n_req, 4);
    assert_string_equal(m->req_auth[0], "Example.ORG:443");
    assert_string_equal(m->req_paths[0], "/p/q?r=1");
    assert_string_equal(m->req_paths[1], "*");
    assert_string_equal(m->req_paths[2], "/?only=query");
    assert_string_equal(m->req_paths[3], "/after-crlf");
    assert_string_equal(m->req_auth[3], "[2001:db8::1]:8443");
    assert_string_equal(m->req_hdr0[0], "Host=example.org");
    sim_free(m);
}

static void test_long_path_kept_whole(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char req[6000], path[5000];
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path);
    client(m, req);
    server(m, RESP_B);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].path_len, strlen(path)); /* kept whole (the heap copy) */
    assert_memory_equal(m->x[0].path, path, sizeof(m->x[0].path) - 1);
    sim_free(m);
}

static void test_pipeline_limit_holds_then_releases(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    char in[4096] = "", one[64];
    int n = HTTP1_MAX_INFLIGHT + 4;
    for (int i = 0; i < n; i++) {
        snprintf(one, sizeof(one), "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i);
        strcat(in, one);
    }
    assert_int_equal(client(m, in), HTTP1_FORWARD);
    assert_int_equal(m->n_req, HTTP1_MAX_INFLIGHT);
    for (int i = 0; i < n; i++)
        assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, in);
    assert_int_equal(m->n_req, n);
    assert_int_equal(m->n_x, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(m->x[i].seq, (unsigned)i + 1);
    sim_free(m);
}

static void test_free_reports_unfinished_exchanges(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, REQ_A);
    client(m, "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n1234");
    assert_int_equal(eof(m, HTTP1_CLIENT), HTTP1_FORWARD);
    assert_int_equal(m->n_x, 0);
    http1_free(m->h);
    m->h = NULL;
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[0].end, HTTP1_END_INCOMPLETE);
    assert_int_equal(m->x[0].status, 0);
    assert_string_equal(m->x[0].error, "connection closed before the response ended");
    assert_int_equal(m->x[1].end, HTTP1_END_INCOMPLETE);
    assert_int_equal(m->x[1].req_bytes, 4);
    assert_string_equal(m->x[1].error, "client closed before the request ended");
    sim_free(m);
}

static void test_server_cut_mid_body(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, REQ_A);
    server(m, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_FORWARD);
    http1_free(m->h);
    m->h = NULL;
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_INCOMPLETE);
    assert_int_equal(m->x[0].resp_bytes, 3);
    assert_string_equal(m->x[0].error, "server closed before the response ended");
    sim_free(m);
}

static void test_idle_state_is_small(void **state)
{
    (void)state;
    struct http1 *h = http1_new(NULL, NULL);
    assert_true(malloc_usable_size(h) < 1024);
    /* after a complete exchange it holds nothing more */
    size_t fwd;
    http1_from_client(h, (const uint8_t *)REQ_A, strlen(REQ_A), &fwd);
    http1_from_server(h, (const uint8_t *)RESP_A, strlen(RESP_A), &fwd);
    const uint8_t *d;
    assert_int_equal(http1_pending(h, HTTP1_CLIENT, &d), 0);
    assert_int_equal(http1_pending(h, HTTP1_SERVER, &d), 0);
    http1_free(h);
    http1_free(NULL);
}

static void test_split_response_head_blocked_leaks_nothing(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_ctype = "application/x-evil";
    client(m, REQ_A);
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Type: application/x-evil\r\n"
                       "Content-Length: 6\r\n\r\nEVIL!!";
    for (size_t i = 0; i + 1 < strlen(resp) && m->last == HTTP1_FORWARD; i++)
        feed_n(m, HTTP1_SERVER, resp + i, 1);
    assert_int_equal(m->last, HTTP1_REPLY_AND_CLOSE);
    assert_memory_equal(m->down.p, "HTTP/1.1 403 Forbidden\r\n", 24);
    assert_false(sink_has(&m->down, "200 OK"));
    sim_free(m);
}

static void test_deferred_block_sent_when_close_delimited_response_ends(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    m->block_path = "/secret";
    client(m, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /secret HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(server(m, "HTTP/1.1 200 OK\r\n\r\nuntil the end"), HTTP1_FORWARD);
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_REPLY_AND_CLOSE);
    assert_true(sink_has(&m->down, "until the endHTTP/1.1 403 Forbidden\r\n"));
    assert_int_equal(m->n_x, 2);
    assert_int_equal(m->x[0].resp_bytes, 13);
    assert_int_equal(m->x[1].end, HTTP1_END_BLOCKED);
    sim_free(m);
}

static void test_deferred_refusal_closes_when_server_cuts(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\n\n");
    server(m, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    /* the 400 can never follow a cut response: just close */
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_REPLY_AND_CLOSE);
    const uint8_t *d;
    size_t n;
    http1_reply(m->h, &d, &n);
    assert_int_equal(n, 0);
    sim_free(m);
}

static void test_transfer_coding_names_are_case_insensitive(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tChunked \r\n\r\n"
                      "3\r\nabc\r\n0\r\n\r\n";
    assert_int_equal(client(m, req), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, req);
    server(m, RESP_B);
    assert_int_equal(m->x[0].req_bytes, 3);
    sim_free(m);
}

static void test_client_eof_while_stalled_drops_held_bytes(void **state)
{
    (void)state;
    struct sim *m = sim_new();
    client(m, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    client(m, "early");
    assert_int_equal(eof(m, HTTP1_CLIENT), HTTP1_FORWARD);
    assert_false(sink_has(&m->up, "early"));
    assert_int_equal(server(m, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: upgrade\r\n\r\n"),
                     HTTP1_TUNNEL);
    assert_false(sink_has(&m->up, "early"));
    sim_free(m);
}

/* ---- body inspection ------------------------------------------------------------------------ */

static void sim_body(struct sim *m, unsigned sides, uint64_t hold, const char *keyword)
{
    m->hooks.body_begin = body_begin;
    m->hooks.on_body = on_body;
    m->hooks.body_end = body_end;
    m->body_sides = sides;
    m->body_hold = hold;
    m->body_keyword = keyword;
}

#define SIDE_C (1u << HTTP1_CLIENT)
#define SIDE_S (1u << HTTP1_SERVER)

static const char *POST_CL = "POST /up HTTP/1.1\r\nHost: example.org\r\nContent-Length: 20\r\n\r\n"
                             "0123456789abcdefghij";
static const char *POST_CHUNKED = "POST /up HTTP/1.1\r\nHost: example.org\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "a;ext=1\r\n0123456789\r\n7\r\nabcdefg\r\n3\r\nhij\r\n0\r\n"
                                  "X-T: 1\r\n\r\n";

/* A held request reaches the server only whole, byte-exact, after its body was inspected. */
static void test_body_request_held_until_inspected(void **state)
{
    const char *reqs[] = {POST_CL, POST_CHUNKED};
    for (size_t r = 0; r < 2; r++) {
        size_t n = strlen(reqs[r]);
        for (size_t k = 1; k < n; k++) {
            struct sim *m = sim_new();
            sim_body(m, SIDE_C, 1 << 20, "never");
            assert_int_equal(feed_n(m, HTTP1_CLIENT, reqs[r], k), HTTP1_FORWARD);
            assert_int_equal(m->up.len, 0); /* nothing until the body was inspected */
            assert_int_equal(feed_n(m, HTTP1_CLIENT, reqs[r] + k, n - k), HTTP1_FORWARD);
            ASSERT_SINK(&m->up, reqs[r]);
            assert_int_equal(m->body_got_len[HTTP1_CLIENT], 20);
            assert_memory_equal(m->body_got[HTTP1_CLIENT], "0123456789abcdefghij", 20);
            assert_true(m->body_got_end[HTTP1_CLIENT]);
            assert_int_equal(server(m, RESP_B), HTTP1_FORWARD);
            assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
            sim_free(m);
        }
    }
}

/* A match in a held request body: the server sees nothing of it, the client gets the 403
 * page, the exchange names the rule; wherever the body is split. */
static void test_body_request_match_never_forwarded(void **state)
{
    const char *reqs[] = {POST_CL, POST_CHUNKED};
    for (size_t r = 0; r < 2; r++) {
        size_t n = strlen(reqs[r]);
        for (size_t k = 1; k < n; k++) {
            struct sim *m = sim_new();
            sim_body(m, SIDE_C, 1 << 20, "9abc");
            feed_n(m, HTTP1_CLIENT, reqs[r], k);
            if (m->last == HTTP1_FORWARD)
                feed_n(m, HTTP1_CLIENT, reqs[r] + k, n - k);
            assert_int_equal(m->last, HTTP1_REPLY_AND_CLOSE);
            assert_int_equal(m->up.len, 0);
            assert_memory_equal(m->down.p, "HTTP/1.1 403 Forbidden\r\n", 24);
            assert_true(sink_has(&m->down, "body-rule"));
            sim_free(m);
        }
    }
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 1 << 20, "9abc");
    client(m, POST_CHUNKED);
    http1_free(m->h);
    m->h = NULL;
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
    assert_int_equal(m->x[0].status, 403);
    assert_string_equal(m->x[0].rule, "body-rule");
    assert_string_equal(m->x[0].ref, "ref-body");
    m->h = http1_new(&m->hooks, m);
    sim_free(m);
}

/* Past the hold, the request goes on as it comes; a later match cuts the connection without
 * sending the piece that matched. */
static void test_body_request_match_after_hold_cuts(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 5, "hij");
    const char *head = "POST /up HTTP/1.1\r\nHost: example.org\r\nContent-Length: 20\r\n\r\n";
    assert_int_equal(client(m, head), HTTP1_FORWARD);
    assert_int_equal(m->up.len, 0);
    assert_int_equal(client(m, "0123"), HTTP1_FORWARD);
    assert_int_equal(m->up.len, 0);
    assert_int_equal(client(m, "456789"), HTTP1_FORWARD); /* 10 >= 5: released */
    char want[256];
    snprintf(want, sizeof(want), "%s0123456789", head);
    ASSERT_SINK(&m->up, want);
    assert_int_equal(client(m, "abcdefg"), HTTP1_FORWARD);
    assert_int_equal(client(m, "hij"), HTTP1_REPLY_AND_CLOSE);
    snprintf(want, sizeof(want), "%s0123456789abcdefg", head);
    ASSERT_SINK(&m->up, want);
    const uint8_t *d;
    size_t n;
    http1_reply(m->h, &d, &n);
    assert_int_equal(n, 0);
    http1_free(m->h);
    m->h = http1_new(&m->hooks, m);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
    assert_string_equal(m->x[0].rule, "body-rule");
    sim_free(m);
}

/* A held request that waits for 100 Continue gets one from the gateway. */
static void test_body_expect_continue_answered_while_held(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 1 << 20, "never");
    const char *head = "POST /up HTTP/1.1\r\nHost: example.org\r\nExpect: 100-continue\r\n"
                       "Content-Length: 4\r\n\r\n";
    assert_int_equal(client(m, head), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_int_equal(m->up.len, 0);
    client(m, "data");
    char want[256];
    snprintf(want, sizeof(want), "%sdata", head);
    ASSERT_SINK(&m->up, want);
    server(m, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    ASSERT_SINK(&m->down, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
                          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    sim_free(m);
}

/* A blocked body behind a pipelined request is answered after that request's response. */
static void test_body_block_in_pipeline_waits(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 1 << 20, "abc");
    char both[512];
    snprintf(both, sizeof(both), "%s%s", REQ_A, POST_CL);
    assert_int_equal(client(m, both), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, REQ_A);
    assert_int_equal(server(m, RESP_A), HTTP1_REPLY_AND_CLOSE);
    assert_memory_equal(m->down.p, RESP_A, strlen(RESP_A));
    assert_true(sink_has(&m->down, "403 Forbidden"));
    ASSERT_SINK(&m->up, REQ_A);
    sim_free(m);
}

static const char *RESP_TXT = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "5\r\n<html\r\n6\r\n>SECRE\r\n5\r\nT</ht\r\n2\r\nml\r\n0\r\n\r\n";

/* A held response with a match: the client gets the page, never the response head. */
static void test_body_response_match_while_held_gets_page(void **state)
{
    size_t n = strlen(RESP_TXT);
    for (size_t k = 1; k < n; k++) {
        struct sim *m = sim_new();
        sim_body(m, SIDE_S, 65536, "SECRET");
        client(m, REQ_A);
        feed_n(m, HTTP1_SERVER, RESP_TXT, k);
        if (m->last == HTTP1_FORWARD)
            feed_n(m, HTTP1_SERVER, RESP_TXT + k, n - k);
        assert_int_equal(m->last, HTTP1_REPLY_AND_CLOSE);
        assert_memory_equal(m->down.p, "HTTP/1.1 403 Forbidden\r\n", 24);
        assert_false(sink_has(&m->down, "200 OK"));
        assert_int_equal(m->n_x, 1);
        assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
        assert_int_equal(m->x[0].status, 403);
        assert_int_equal(m->x[0].upstream_status, 200);
        assert_string_equal(m->x[0].rule, "body-rule");
        sim_free(m);
    }
    /* no match: byte-exact, whatever the split */
    for (size_t k = 1; k < n; k++) {
        struct sim *m = sim_new();
        sim_body(m, SIDE_S, 65536, "NOT-THERE");
        client(m, REQ_A);
        feed_n(m, HTTP1_SERVER, RESP_TXT, k);
        assert_int_equal(m->down.len, 0);
        feed_n(m, HTTP1_SERVER, RESP_TXT + k, n - k);
        ASSERT_SINK(&m->down, RESP_TXT);
        assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
        assert_int_equal(m->x[0].status, 200);
        assert_int_equal(m->body_got_len[HTTP1_SERVER], 18);
        sim_free(m);
    }
}

/* Past the response hold, a match cuts the connection: the client has the head and the bytes
 * before the matching piece, and no reply. */
static void test_body_response_match_after_head_sent_cuts(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_S, 4, "SECRET");
    client(m, REQ_A);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 20\r\n\r\n";
    assert_int_equal(server(m, head), HTTP1_FORWARD);
    assert_int_equal(m->down.len, 0);
    assert_int_equal(server(m, "<html>"), HTTP1_FORWARD);
    char want[256];
    snprintf(want, sizeof(want), "%s<html>", head);
    ASSERT_SINK(&m->down, want);
    assert_int_equal(server(m, "SECRET</html"), HTTP1_REPLY_AND_CLOSE);
    ASSERT_SINK(&m->down, want);
    assert_int_equal(m->n_x, 1);
    assert_int_equal(m->x[0].end, HTTP1_END_BLOCKED);
    assert_int_equal(m->x[0].status, 200);
    assert_string_equal(m->x[0].rule, "body-rule");
    assert_string_equal(http1_error(m->h),
                        "response body blocked by policy after part of it was forwarded");
    sim_free(m);
}

/* A body delimited by the server's close is judged at the close. */
static void test_body_close_delimited_response(void **state)
{
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    struct sim *m = sim_new();
    sim_body(m, SIDE_S, 65536, "the end");
    m->body_match_at_end = true;
    client(m, REQ_A);
    assert_int_equal(server(m, resp), HTTP1_FORWARD);
    assert_int_equal(m->down.len, 0);
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_REPLY_AND_CLOSE);
    assert_memory_equal(m->down.p, "HTTP/1.1 403 Forbidden\r\n", 24);
    sim_free(m);
    m = sim_new();
    sim_body(m, SIDE_S, 65536, "nothing");
    client(m, REQ_A);
    server(m, resp);
    assert_int_equal(eof(m, HTTP1_SERVER), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, resp);
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    assert_true(m->body_got_end[HTTP1_SERVER]);
    sim_free(m);
}

/* DONE: the rest of the body goes on unseen. */
static void test_body_done_releases(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C | SIDE_S, 1 << 20, "abc");
    m->body_done_after = 5;
    const char *req = "POST /up HTTP/1.1\r\nHost: example.org\r\nContent-Length: 20\r\n\r\n";
    client(m, req);
    client(m, "01234");
    char want[256];
    snprintf(want, sizeof(want), "%s01234", req);
    ASSERT_SINK(&m->up, want);
    client(m, "56789abcdefghij");
    assert_int_equal(m->last, HTTP1_FORWARD);
    assert_int_equal(m->body_got_len[HTTP1_CLIENT], 5);
    assert_false(m->body_got_end[HTTP1_CLIENT]);
    server(m, RESP_B);
    assert_int_equal(m->x[0].end, HTTP1_END_COMPLETE);
    sim_free(m);
}

/* A client that closes in the middle of a held body: the cut request is judged and, when it
 * passes, sent on (as it would have been without inspection). */
static void test_body_client_eof_mid_held_body(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 1 << 20, "never");
    client(m, "POST /up HTTP/1.1\r\nHost: example.org\r\nContent-Length: 20\r\n\r\n0123");
    assert_int_equal(m->up.len, 0);
    assert_int_equal(eof(m, HTTP1_CLIENT), HTTP1_FORWARD);
    assert_true(sink_has(&m->up, "\r\n\r\n0123"));
    assert_true(m->body_got_end[HTTP1_CLIENT]);
    sim_free(m);
    m = sim_new();
    sim_body(m, SIDE_C, 1 << 20, "0123");
    client(m, "POST /up HTTP/1.1\r\nHost: example.org\r\nContent-Length: 20\r\n\r\n012");
    assert_int_equal(client(m, "3"), HTTP1_REPLY_AND_CLOSE);
    assert_int_equal(m->up.len, 0);
    sim_free(m);
}

/* The hold is bounded by the framing too: tiny chunks with long extensions end it. */
static void test_body_hold_bounded_by_framing(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C, 1000, "never");
    client(m, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[4200];
    memset(chunk, 'e', sizeof(chunk));
    memcpy(chunk, "1;x=", 4);
    memcpy(chunk + 4000, "\r\nZ\r\n", 5);
    for (int i = 0; i < 40 && m->up.len == 0; i++)
        feed_n(m, HTTP1_CLIENT, chunk, 4005);
    assert_true(m->up.len > 0);
    assert_true(m->up.len <= 2 * 1000 + 64 * 1024 + 4005 + 100);
    sim_free(m);
}

/* Regression (found by fuzz_http1): a hold that begins and ends in one chunk, after the end
 * of an earlier message in that chunk, lost the earlier message's bytes. */
static void test_body_hold_released_in_the_chunk_after_another_message(void **state)
{
    char both[512];
    snprintf(both, sizeof(both), "%s%s", RESP_B, RESP_TXT);
    struct sim *m = sim_new();
    sim_body(m, SIDE_S, 4, "NOT-THERE");
    client(m, REQ_A);
    client(m, REQ_A);
    assert_int_equal(server(m, both), HTTP1_FORWARD);
    ASSERT_SINK(&m->down, both);
    sim_free(m);
    snprintf(both, sizeof(both), "%s%s", REQ_A, POST_CL);
    m = sim_new();
    sim_body(m, SIDE_C, 5, "NOT-THERE");
    assert_int_equal(client(m, both), HTTP1_FORWARD);
    ASSERT_SINK(&m->up, both);
    sim_free(m);
}

/* Bodies not offered, or declined, are not delivered; bodyless messages are not offered. */
static void test_body_not_offered_without_body(void **state)
{
    struct sim *m = sim_new();
    sim_body(m, SIDE_C | SIDE_S, 1 << 20, "x");
    client(m, REQ_A);
    server(m, "HTTP/1.1 204 No Content\r\n\r\n");
    client(m, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    server(m, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    client(m, REQ_B);
    server(m, RESP_B);
    assert_int_equal(m->n_body_begin, 1); /* REQ_B's body only */
    assert_int_equal(m->n_x, 3);
    sim_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_sequence),
        cmocka_unit_test(test_pipelined_requests_in_one_chunk),
        cmocka_unit_test(test_head_split_at_every_offset),
        cmocka_unit_test(test_head_split_into_single_bytes),
        cmocka_unit_test(test_held_head_then_body_in_same_chunk_keeps_order),
        cmocka_unit_test(test_feeding_while_pending_queues_behind),
        cmocka_unit_test(test_chunked_request_split_everywhere),
        cmocka_unit_test(test_chunked_response_split_everywhere),
        cmocka_unit_test(test_head_response_has_no_body),
        cmocka_unit_test(test_204_and_304_have_no_body),
        cmocka_unit_test(test_expect_100_continue),
        cmocka_unit_test(test_early_response_before_request_body_ends),
        cmocka_unit_test(test_close_delimited_response),
        cmocka_unit_test(test_websocket_upgrade_becomes_tunnel),
        cmocka_unit_test(test_upgrade_declined_releases_held_requests),
        cmocka_unit_test(test_connect_inside_becomes_tunnel),
        cmocka_unit_test(test_101_without_upgrade_request_is_502),
        cmocka_unit_test(test_client_framing_attacks_get_400),
        cmocka_unit_test(test_smuggling_via_chunk_extension_split_never_forwarded),
        cmocka_unit_test(test_head_too_large_is_431),
        cmocka_unit_test(test_too_many_headers_is_431),
        cmocka_unit_test(test_bad_pipelined_request_answered_after_earlier_response),
        cmocka_unit_test(test_server_framing_attacks_get_502),
        cmocka_unit_test(test_unsolicited_response_closes_quietly),
        cmocka_unit_test(test_blocked_request_gets_403_and_never_reaches_server),
        cmocka_unit_test(test_blocked_pipelined_request_waits_for_earlier_response),
        cmocka_unit_test(test_blocked_head_request_reply_has_no_body),
        cmocka_unit_test(test_block_page_hook),
        cmocka_unit_test(test_blocked_response_gets_403_instead),
        cmocka_unit_test(test_absolute_form_and_options_star),
        cmocka_unit_test(test_long_path_kept_whole),
        cmocka_unit_test(test_pipeline_limit_holds_then_releases),
        cmocka_unit_test(test_free_reports_unfinished_exchanges),
        cmocka_unit_test(test_server_cut_mid_body),
        cmocka_unit_test(test_idle_state_is_small),
        cmocka_unit_test(test_split_response_head_blocked_leaks_nothing),
        cmocka_unit_test(test_deferred_block_sent_when_close_delimited_response_ends),
        cmocka_unit_test(test_deferred_refusal_closes_when_server_cuts),
        cmocka_unit_test(test_transfer_coding_names_are_case_insensitive),
        cmocka_unit_test(test_client_eof_while_stalled_drops_held_bytes),
        cmocka_unit_test(test_body_request_held_until_inspected),
        cmocka_unit_test(test_body_request_match_never_forwarded),
        cmocka_unit_test(test_body_request_match_after_hold_cuts),
        cmocka_unit_test(test_body_expect_continue_answered_while_held),
        cmocka_unit_test(test_body_block_in_pipeline_waits),
        cmocka_unit_test(test_body_response_match_while_held_gets_page),
        cmocka_unit_test(test_body_response_match_after_head_sent_cuts),
        cmocka_unit_test(test_body_close_delimited_response),
        cmocka_unit_test(test_body_done_releases),
        cmocka_unit_test(test_body_client_eof_mid_held_body),
        cmocka_unit_test(test_body_hold_bounded_by_framing),
        cmocka_unit_test(test_body_not_offered_without_body),
        cmocka_unit_test(test_body_hold_released_in_the_chunk_after_another_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
