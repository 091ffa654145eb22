/* libFuzzer harness: http1, the streaming HTTP/1.1 inspector, driven like the relay drives it.
 * The input is a script of steps, each a control byte c and its data:
 *   c == 0xff: the client closes; c == 0xfe: the server closes (later data from a side that
 *   closed is skipped, as the relay would never read it);
 *   otherwise the side is c & 1 (0 client, 1 server) and k = c >> 1 gives the chunk length,
 *   k + 1 for k < 120 (1..120 bytes), 2^(k - 113) above (128..8192 bytes), taken from the
 *   bytes that follow (fewer at the end of the input).
 * Invariants, besides the sanitizers: what goes to each side is always a prefix of what the
 * other side sent (never reordered, duplicated or invented), *forward is within the chunk and
 * is the whole stream once tunnelling, nothing reaches the server after a REPLY_AND_CLOSE, a
 * closed inspector stays closed, replies are HTTP responses that close, and every exchange is
 * reported exactly once, in order.
 * Body hooks are on: every body is inspected (held for a few bytes when its request path or
 * response status says so), "EVIL" in a piece blocks, "/done" paths end the inspection early;
 * each body state is ended exactly once and never fed after its end. The one byte string the
 * inspector may invent, the gateway's "100 Continue" to a held request, is recognised. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"

struct stream {
    uint8_t *in;            /* everything the side sent */
    size_t in_len, out_len; /* bytes of it passed on so far */
};

struct fuzz {
    struct http1 *h;
    struct stream s[2];
    unsigned next_seq;
    int bodies;          /* body states alive */
    bool maybe_continue; /* a held request asked for 100 Continue */
    bool closed, tunnel;
    bool eof[2]; /* like the relay, the harness feeds nothing from a side after its EOF */
    int64_t clock;
};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static unsigned touch(const char *p, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (unsigned char)p[i];
    return sum;
}

static unsigned touch_headers(const struct http1_header *hd, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += touch(hd[i].name, hd[i].name_len) + touch(hd[i].value, hd[i].value_len);
    return sum;
}

static volatile unsigned sink;

static int on_request(void *arg, const struct http1_request_info *req, struct http1_block *blk)
{
    (void)arg;
    sink += touch_headers(req->headers, req->n_headers) + (unsigned)strlen(req->method) +
            (unsigned)strlen(req->authority);
    if (strstr(req->path, "block")) {
        blk->rule = "fuzz-rule";
        blk->ref = "ref";
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static int on_response(void *arg, const struct http1_response_info *resp, struct http1_block *blk)
{
    (void)arg;
    sink += touch_headers(resp->headers, resp->n_headers) + (unsigned)strlen(resp->req->path);
    CHECK(resp->status == 101 || (resp->status >= 200 && resp->status <= 599));
    if (resp->status == 418 || strcmp(resp->content_type, "evil") == 0) {
        blk->rule = "fuzz-response-rule";
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static void on_exchange(void *arg, const struct http1_exchange *x)
{
    struct fuzz *f = arg;
    CHECK(x->seq == ++f->next_seq);
    CHECK(x->end_us >= x->start_us);
    sink += (unsigned)(strlen(x->method) + strlen(x->authority) + strlen(x->path) +
                       strlen(x->content_type) + strlen(x->upgrade) + strlen(x->rule) +
                       strlen(x->ref) + strlen(x->error));
}

static int64_t now_us(void *arg)
{
    struct fuzz *f = arg;
    return ++f->clock;
}

struct fbody {
    bool ended;
    bool done_early;
    uint64_t seen;
};

static bool has_header(const struct http1_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == strlen(name) && strncasecmp(h[i].name, name, h[i].name_len) == 0)
            return true;
    return false;
}

static void body_begin(void *arg, const struct http1_body_info *info, struct http1_body_plan *plan)
{
    struct fuzz *f = arg;
    struct fbody *b = calloc(1, sizeof(*b));
    if (!b)
        return;
    f->bodies++;
    plan->body = b;
    if (info->req) {
        plan->hold = strstr(info->req->path, "hold") ? 40 : 0;
        b->done_early = strstr(info->req->path, "/done") != NULL;
        if (plan->hold && has_header(info->req->headers, info->req->n_headers, "expect"))
            f->maybe_continue = true;
    } else {
        plan->hold = info->resp->status % 2 ? 0 : 25;
        b->done_early = strstr(info->resp->req->path, "/done") != NULL;
    }
}

static int on_body(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                   struct http1_block *blk)
{
    struct fbody *b = body;
    CHECK(!b->ended && (len > 0 || end));
    b->ended = end;
    b->seen += len;
    sink += touch((const char *)data, len);
    if (len >= 4 && memmem(data, len, "EVIL", 4)) {
        blk->rule = "body-rule";
        blk->ref = "ref";
        b->ended = true;
        return HTTP1_BODY_BLOCK;
    }
    if (b->done_early && b->seen > 10) {
        b->ended = true;
        return HTTP1_BODY_DONE;
    }
    return HTTP1_BODY_MORE;
}

static void body_end(void *arg, void *body)
{
    struct fuzz *f = arg;
    f->bodies--;
    free(body);
}

static const struct http1_hooks hooks = {
    .on_request = on_request,
    .on_response = on_response,
    .on_exchange = on_exchange,
    .now_us = now_us,
    .body_begin = body_begin,
    .on_body = on_body,
    .body_end = body_end,
};

static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Bytes that came from side `from` are passed on: they must continue its stream exactly. */
static void emit(struct fuzz *f, int from, const uint8_t *p, size_t n)
{
    struct stream *s = &f->s[from];
    CHECK(s->out_len + n <= s->in_len);
    CHECK(n == 0 || memcmp(s->in + s->out_len, p, n) == 0);
    s->out_len += n;
}

/* Sends pending bytes in small pieces, as a relay facing short writes would. */
static void drain(struct fuzz *f)
{
    for (int side = 0; side < 2; side++) {
        const uint8_t *d;
        size_t n;
        while ((n = http1_pending(f->h, (enum http1_side)side, &d)) > 0) {
            size_t piece = n < 13 ? n : 13;
            struct stream *s = &f->s[side];
            if (side == HTTP1_SERVER && f->maybe_continue && n >= sizeof(cont) - 1 &&
                memcmp(d, cont, sizeof(cont) - 1) == 0 &&
                (s->in_len - s->out_len < sizeof(cont) - 1 ||
                 memcmp(s->in + s->out_len, cont, sizeof(cont) - 1) != 0)) {
                http1_pending_consume(f->h, HTTP1_SERVER, sizeof(cont) - 1); /* the gateway's */
                continue;
            }
            emit(f, side, d, piece);
            http1_pending_consume(f->h, (enum http1_side)side, piece);
        }
    }
}

static void after(struct fuzz *f, enum http1_verdict v, int side, size_t fwd)
{
    const uint8_t *reply;
    size_t rlen;
    http1_reply(f->h, &reply, &rlen);
    if (f->closed) {
        CHECK(v == HTTP1_REPLY_AND_CLOSE && fwd == 0);
        return;
    }
    if (v == HTTP1_REPLY_AND_CLOSE) {
        f->closed = true;
        CHECK(http1_error(f->h) != NULL || rlen == 0);
        if (rlen) {
            CHECK(rlen > 9 && memcmp(reply, "HTTP/1.1 ", 9) == 0);
            CHECK(memmem(reply, rlen, "\r\nConnection: close\r\n", 21) != NULL);
        }
        const uint8_t *d;
        CHECK(http1_pending(f->h, HTTP1_CLIENT, &d) == 0); /* nothing more to the server */
        if (side == HTTP1_CLIENT)
            CHECK(fwd == 0);
    } else {
        CHECK(rlen == 0);
    }
    if (v == HTTP1_TUNNEL)
        f->tunnel = true;
    else
        CHECK(!f->tunnel || f->closed);
    drain(f);
    /* a tunnel passes everything: held bytes were released, nothing is kept back */
    if (v == HTTP1_TUNNEL && !f->eof[HTTP1_CLIENT])
        CHECK(f->s[0].out_len == f->s[0].in_len && f->s[1].out_len == f->s[1].in_len);
}

static void feed(struct fuzz *f, int side, const uint8_t *p, size_t n)
{
    struct stream *s = &f->s[side];
    memcpy(s->in + s->in_len, p, n);
    s->in_len += n;
    size_t fwd = (size_t)-1;
    enum http1_verdict v = side == HTTP1_CLIENT ? http1_from_client(f->h, p, n, &fwd)
                                                : http1_from_server(f->h, p, n, &fwd);
    CHECK(fwd <= n);
    emit(f, side, p, fwd);
    after(f, v, side, fwd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz f = {0};
    f.s[0].in = malloc(size + 1);
    f.s[1].in = malloc(size + 1);
    f.h = http1_new(&hooks, &f);
    if (!f.h || !f.s[0].in || !f.s[1].in)
        goto out;
    size_t i = 0;
    while (i < size) {
        uint8_t c = data[i++];
        if (c == 0xff || c == 0xfe) {
            enum http1_side side = c == 0xff ? HTTP1_CLIENT : HTTP1_SERVER;
            if (!f.eof[side])
                after(&f, http1_eof(f.h, side), side, 0);
            f.eof[side] = true;
            continue;
        }
        unsigned k = c >> 1;
        size_t n = k < 120 ? k + 1 : (size_t)1 << (k - 113);
        if (n > size - i)
            n = size - i;
        if (n == 0)
            break;
        if (!f.eof[c & 1])
            feed(&f, c & 1, data + i, n);
        i += n;
    }
out:
    http1_free(f.h);
    CHECK(f.bodies == 0);
    free(f.s[0].in);
    free(f.s[1].in);
    return 0;
}
