/* http1_exchange: the HTTP/1.1 inspector's exchange records (the FIFO of requests in flight,
 * each reported once to on_exchange for the request log) and the replies the gateway sends in
 * the server's place (the 403 block page, 400/431/502/505 texts). */
#include "http1_int.h"

#include "html.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define H1_PAGE_MAX 8192 /* body of a gateway reply */

/* Now, in microseconds: hooks.now_us, else the wall clock. */
int64_t h1_now(const struct http1 *h)
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

struct h1_rec *h1_rec_back(struct http1 *h)
{
    return h->n_recs ? rec_at(h, h->n_recs - 1) : NULL;
}

/* The record the server's next response answers, or NULL when none is outstanding. */
struct h1_rec *h1_rec_awaiting(struct http1 *h)
{
    return h->n_recs && !(h->rec0.flags & R_RESP_DONE) ? &h->rec0 : NULL;
}

const char *h1_rec_authority(const struct h1_rec *r)
{
    return r->heap ? r->heap : r->inl;
}

const char *h1_rec_path(const struct h1_rec *r)
{
    return h1_rec_authority(r) + r->alen + 1;
}

/* Appends a zeroed record; NULL when out of memory. One more than HTTP1_MAX_INFLIGHT fits, for
 * the refused request that may follow a full pipeline. */
struct h1_rec *h1_rec_push(struct http1 *h)
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
int h1_rec_set_strs(struct h1_rec *r, const char *a, size_t alen, const char *p, size_t plen,
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

void h1_rec_view(const struct http1 *h, const struct h1_rec *r, struct http1_exchange *x)
{
    bool front = r == &h->rec0;
    *x = (struct http1_exchange){
        .seq = r->seq,
        .method = (r->flags & R_PARSED) ? http_method_str(r->method) : "",
        .scheme = "https",
        .authority = h1_rec_authority(r),
        .path = h1_rec_path(r),
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
void h1_rec_finish(struct http1 *h, enum http1_end end)
{
    struct h1_rec *r = &h->rec0;
    r->end = (uint8_t)end;
    r->end_us = h1_now(h);
    if (h->hooks && h->hooks->on_exchange) {
        struct http1_exchange x;
        h1_rec_view(h, r, &x);
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

/* ---- gateway replies --------------------------------------------------------------------- */

/* Builds the reply for status (403: the block page for r; others: a short text naming why).
 * The body is left out when r is a HEAD request. */
void h1_reply_build(struct http1 *h, const struct h1_rec *r, int status, const char *why)
{
    char body[H1_PAGE_MAX];
    size_t blen = 0;
    const char *ctype = "text/plain; charset=utf-8";
    if (status == 403 && r) {
        struct http1_exchange x;
        h1_rec_view(h, r, &x);
        x.end = HTTP1_END_BLOCKED;
        x.rule = h->rule;
        x.ref = h->ref;
        x.status = 403;
        if (h->hooks && h->hooks->block_page)
            blen = h->hooks->block_page(h->arg, &x, body, sizeof(body));
        if (blen == 0 || blen > sizeof(body))
            blen = html_default_block_page(body, sizeof(body), x.authority, x.rule, x.ref);
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
