/* libFuzzer harness: h2, the HTTP/2 bridge, driven like the relay drives it. The first byte
 * picks a mode, the rest is a script of steps, each a control byte c and its data:
 *   c == 0xff: the client's leg hits EOF; 0xfe: the upstream's; 0xfd: graceful shutdown;
 *   otherwise the side is c & 1 (0 client, 1 upstream) and k = c >> 1 gives the chunk length,
 *   k + 1 for k < 120 (1..120 bytes), 2^(k - 113) above (128..4096 bytes), taken from the
 *   bytes that follow.
 * The first byte also picks the bridge's memory cap ((byte >> 2) % 4): 8 MiB, or one small
 * enough (60..150 KB) that allocations fail somewhere, to exercise every failure path.
 * Modes (first byte % 4):
 *   0: both legs raw: client chunks go to the bridge after the client preface magic (so the
 *      fuzzer need not find it), upstream chunks as they are.
 *   1: raw client, real origin: a real nghttp2 server session answers every request; upstream
 *      chunks are ignored. Oracle: the origin never finds a protocol error in what the bridge
 *      sends it.
 *   2: real browser, raw upstream: a real nghttp2 client session submits a request for every
 *      client step (its first byte picks GET, POST with a body, POST with trailers, or a
 *      reset of the previous request). Oracle: the browser never finds a protocol error in
 *      what the bridge sends it.
 *   3: both legs raw, without the magic (the preface check itself).
 * Invariants, besides the sanitizers: -1 exactly when h2_bridge_error() is set, and then for
 * good; output backlogs and memory stay within their bounds; every exchange is reported
 * exactly once, with end >= start. Output is drained in odd piece sizes, as short writes
 * would. Body hooks are on: every body is inspected, a request held for (seq % 3) * 700 bytes
 * and a response for 2000 when its status is even; the bodies of every fourth request block
 * after 1500 bytes (or at "EVIL"); each body state ends exactly once, never fed after. */
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MEM_LIMIT (8 * 1024 * 1024)
#define MAX_SEQ 4096

struct fuzz {
    struct h2_bridge *b;
    int mode;
    size_t mem_limit;
    nghttp2_session *peer; /* the real browser (mode 2) or origin (mode 1), or NULL */
    bool failed, eof[2];
    unsigned reported[MAX_SEQ / 32];
    unsigned max_seq, n_reported;
    int64_t clock;
    unsigned piece;
    int32_t last_req;
    uint8_t body[3000];
    int bodies; /* body states alive */
};

static volatile unsigned sink;

static unsigned touch(const char *p, size_t n)
{
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += (unsigned char)p[i];
    return s;
}

static int on_request(void *arg, const struct h2_request_info *req, struct h2_block *blk)
{
    (void)arg;
    for (size_t i = 0; i < req->n_headers; i++)
        sink += touch(req->headers[i].name, req->headers[i].name_len) +
                touch(req->headers[i].value, req->headers[i].value_len);
    sink += (unsigned)(strlen(req->method) + strlen(req->scheme) + strlen(req->authority));
    if (strstr(req->path, "block")) {
        blk->rule = "fuzz-rule";
        blk->ref = "ref";
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static int on_response(void *arg, const struct h2_response_info *resp, struct h2_block *blk)
{
    (void)arg;
    CHECK(resp->status >= 200);
    for (size_t i = 0; i < resp->n_headers; i++)
        sink += touch(resp->headers[i].value, resp->headers[i].value_len);
    sink += (unsigned)strlen(resp->req->path);
    if (resp->status == 418 || strcmp(resp->content_type, "evil") == 0) {
        blk->rule = "fuzz-response-rule";
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static void on_exchange(void *arg, const struct h2_exchange *x)
{
    struct fuzz *f = arg;
    CHECK(x->seq >= 1 && x->seq < MAX_SEQ);
    CHECK(!(f->reported[x->seq / 32] & (1u << (x->seq % 32))));
    f->reported[x->seq / 32] |= 1u << (x->seq % 32);
    f->n_reported++;
    if (x->seq > f->max_seq)
        f->max_seq = x->seq;
    CHECK(x->end_us >= x->start_us);
    CHECK(x->end >= H2_END_COMPLETE && x->end <= H2_END_INCOMPLETE);
    sink +=
        (unsigned)(strlen(x->method) + strlen(x->authority) + strlen(x->path) +
                   strlen(x->content_type) + strlen(x->rule) + strlen(x->ref) + strlen(x->error));
}

static int64_t now_us(void *arg)
{
    struct fuzz *f = arg;
    return f->clock += 7;
}

struct fbody {
    bool ended, blocks;
    uint64_t seen;
};

static void body_begin(void *arg, const struct h2_body_info *info, struct h2_body_plan *plan)
{
    struct fuzz *f = arg;
    unsigned seq = info->req ? info->req->seq : info->resp->req->seq;
    CHECK(info->max_hold > 0);
    struct fbody *b = calloc(1, sizeof(*b));
    if (!b)
        return;
    f->bodies++;
    b->blocks = seq % 4 == 3;
    plan->body = b;
    plan->hold = info->req ? (seq % 3) * 700 : (info->resp->status % 2 ? 0 : 2000);
}

static int on_body(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                   struct h2_block *blk)
{
    struct fbody *b = body;
    CHECK(!b->ended && (len > 0 || end));
    b->ended = end;
    b->seen += len;
    sink += touch((const char *)data, len);
    if ((b->blocks && b->seen >= 1500) || (len >= 4 && memmem(data, len, "EVIL", 4))) {
        blk->rule = "body-rule";
        blk->ref = "ref";
        b->ended = true;
        return H2_BODY_BLOCK;
    }
    return H2_BODY_MORE;
}

static void body_end(void *arg, void *body)
{
    struct fuzz *f = arg;
    f->bodies--;
    free(body);
}

static const struct h2_hooks hooks = {
    .on_request = on_request,
    .on_response = on_response,
    .on_exchange = on_exchange,
    .now_us = now_us,
    .body_begin = body_begin,
    .on_body = on_body,
    .body_end = body_end,
};

/* --- the real peer (modes 1 and 2) ------------------------------------------------------- */

static int peer_frame_send(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    (void)s;
    (void)ud;
    /* The bridge only ever sends what nghttp2 accepted: a real peer must never find a
     * protocol violation in it. */
    if (fr->hd.type == NGHTTP2_GOAWAY)
        CHECK(fr->goaway.error_code != NGHTTP2_PROTOCOL_ERROR &&
              fr->goaway.error_code != NGHTTP2_COMPRESSION_ERROR &&
              fr->goaway.error_code != NGHTTP2_FRAME_SIZE_ERROR &&
              fr->goaway.error_code != NGHTTP2_FLOW_CONTROL_ERROR &&
              fr->goaway.error_code != NGHTTP2_STREAM_CLOSED);
    if (fr->hd.type == NGHTTP2_RST_STREAM)
        CHECK(fr->rst_stream.error_code != NGHTTP2_PROTOCOL_ERROR &&
              fr->rst_stream.error_code != NGHTTP2_FLOW_CONTROL_ERROR);
    return 0;
}

static ssize_t peer_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct fuzz *f = ud;
    size_t want = (size_t)src->fd; /* bytes still to send, kept in the source */
    size_t n = want < len ? want : len;
    memcpy(buf, f->body, n);
    src->fd = (int)(want - n);
    if (src->fd == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (id % 4 == 3) { /* some streams end with trailers */
            nghttp2_nv t = {(uint8_t *)"x-trailer", (uint8_t *)"1", 9, 1, 0};
            if (nghttp2_submit_trailer(s, id, &t, 1) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

static int origin_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    (void)ud;
    if ((fr->hd.type != NGHTTP2_HEADERS && fr->hd.type != NGHTTP2_DATA) ||
        !(fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    int32_t id = fr->hd.stream_id;
    static const char *const st[] = {"200", "204", "404", "418"};
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)st[id % 4], 7, 3, 0},
        {(uint8_t *)"content-type", (uint8_t *)(id % 5 == 0 ? "evil" : "text/plain"), 12,
         id % 5 == 0 ? 4 : 10, 0},
    };
    nghttp2_data_provider dp = {.source.fd = (id * 977) % 3000, .read_callback = peer_read};
    nghttp2_submit_response(s, id, nva, 2, id % 4 == 1 ? NULL : &dp);
    return 0;
}

static nghttp2_session *peer_new(struct fuzz *f, bool browser)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, peer_frame_send);
    if (!browser)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, origin_frame_recv);
    nghttp2_session *s = NULL;
    int rv =
        browser ? nghttp2_session_client_new(&s, cb, f) : nghttp2_session_server_new(&s, cb, f);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return NULL;
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 8192};
    nghttp2_submit_settings(s, 0, &iv, 1);
    return s;
}

static void browser_request(struct fuzz *f, uint8_t what)
{
    if (what % 4 == 3) {
        if (f->last_req > 0)
            nghttp2_submit_rst_stream(f->peer, 0, f->last_req, NGHTTP2_CANCEL);
        return;
    }
    static const char *const paths[] = {"/", "/block", "/a?b=c", "/big"};
    const char *path = paths[(what >> 2) % 4];
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)(what % 4 ? "POST" : "GET"), 7, what % 4 ? 4 : 3, 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":authority", (uint8_t *)"example.org", 10, 11, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
    };
    /* ids 4k+3 end with trailers (peer_read) */
    nghttp2_data_provider dp = {.source.fd = 100 + what * 11, .read_callback = peer_read};
    int32_t id = nghttp2_submit_request(f->peer, NULL, nva, 4, what % 4 ? &dp : NULL, NULL);
    if (id > 0)
        f->last_req = id;
}

/* --- driving ------------------------------------------------------------------------------ */

static void check_state(struct fuzz *f, int rv)
{
    const char *err = h2_bridge_error(f->b);
    CHECK((rv == -1) == (err != NULL));
    if (f->failed)
        CHECK(err != NULL);
    f->failed = err != NULL;
    const uint8_t *d;
    CHECK(h2_bridge_pending_to_client(f->b, &d) <= H2_OUT_HIGH + 70000);
    CHECK(h2_bridge_pending_to_upstream(f->b, &d) <= H2_OUT_HIGH + 70000);
    CHECK(h2_bridge_memory(f->b) <= f->mem_limit);
    if (f->failed)
        CHECK(!h2_bridge_wants_from_client(f->b) && !h2_bridge_wants_from_upstream(f->b));
}

/* Writes the bridge's output: to the real peer in full, elsewhere in odd pieces. */
static void drain(struct fuzz *f)
{
    for (int round = 0; round < 64; round++) {
        bool moved = false;
        for (int side = 0; side < 2; side++) {
            const uint8_t *d;
            size_t n = side == 0 ? h2_bridge_pending_to_client(f->b, &d)
                                 : h2_bridge_pending_to_upstream(f->b, &d);
            if (n == 0)
                continue;
            bool to_peer = (f->mode == 1 && side == 1) || (f->mode == 2 && side == 0);
            if (to_peer) {
                CHECK(nghttp2_session_mem_recv(f->peer, d, n) == (ssize_t)n);
            } else {
                f->piece = f->piece * 1103515245u + 12345u;
                size_t piece = 1 + (f->piece >> 16) % 5000;
                n = piece < n ? piece : n;
            }
            if (side == 0)
                h2_bridge_sent_to_client(f->b, n);
            else
                h2_bridge_sent_to_upstream(f->b, n);
            check_state(f, h2_bridge_error(f->b) ? -1 : 0);
            moved = true;
        }
        if (f->peer && !f->eof[f->mode == 1 ? 1 : 0]) { /* the peer's own output */
            const uint8_t *p;
            ssize_t n;
            while ((n = nghttp2_session_mem_send(f->peer, &p)) > 0) {
                int rv = f->mode == 1 ? h2_bridge_from_upstream(f->b, p, (size_t)n)
                                      : h2_bridge_from_client(f->b, p, (size_t)n);
                check_state(f, rv);
                moved = true;
            }
        }
        if (!moved)
            break;
    }
}

static void feed(struct fuzz *f, int side, const uint8_t *p, size_t n)
{
    if (f->eof[side])
        return;
    if ((f->mode == 1 && side == 1))
        return;
    if (f->mode == 2 && side == 0) {
        browser_request(f, p[0]);
        return;
    }
    int rv = side == 0 ? h2_bridge_from_client(f->b, p, n) : h2_bridge_from_upstream(f->b, p, n);
    check_state(f, rv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct fuzz f = {0};
    f.mode = data[0] % 4;
    memset(f.body, 'x', sizeof(f.body));
    static const size_t limits[] = {MEM_LIMIT, 60000, 90000, 150000};
    f.mem_limit = limits[(data[0] >> 2) % 4];
    struct h2_config cfg = {
        .stream_window = 65535, .conn_window = 262144, .mem_limit = f.mem_limit};
    f.b = h2_bridge_new(&hooks, &f, &cfg);
    if (!f.b)
        return 0;
    if (f.mode == 1 || f.mode == 2) {
        f.peer = peer_new(&f, f.mode == 2);
        if (!f.peer)
            goto out;
    }
    if (f.mode == 0 || f.mode == 1)
        check_state(&f, h2_bridge_from_client(f.b, (const uint8_t *)NGHTTP2_CLIENT_MAGIC,
                                              NGHTTP2_CLIENT_MAGIC_LEN));
    size_t i = 1;
    while (i < size) {
        uint8_t c = data[i++];
        if (c >= 0xfd) {
            if (c == 0xfd) {
                h2_bridge_shutdown(f.b);
                check_state(&f, h2_bridge_error(f.b) ? -1 : 0);
            } else {
                int side = c == 0xff ? 0 : 1;
                if (!f.eof[side]) {
                    f.eof[side] = true;
                    check_state(&f, side == 0 ? h2_bridge_eof_from_client(f.b)
                                              : h2_bridge_eof_from_upstream(f.b));
                }
            }
        } else {
            unsigned k = c >> 1;
            size_t n = k < 120 ? k + 1 : (size_t)1 << (k - 113);
            if (n > size - i)
                n = size - i;
            if (n == 0)
                break;
            feed(&f, c & 1, data + i, n);
            i += n;
        }
        drain(&f);
    }
    drain(&f);
out:
    h2_bridge_free(f.b);
    /* every stream whose head began was reported, once; every body state was ended */
    CHECK(f.n_reported == f.max_seq);
    CHECK(f.bodies == 0);
    if (f.peer)
        nghttp2_session_del(f.peer);
    return 0;
}
