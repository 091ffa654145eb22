/* http1_body: message bodies for the HTTP/1.1 inspector: the strict body decoder (a
 * Content-Length count, or chunked framing and trailers checked byte by byte as they stream),
 * and body inspection (a body offered to the body hooks; its message held while they scan it,
 * then released, or blocked). */
#include "http1_int.h"

#include <stdio.h>
#include <string.h>

#define H1_CHUNK_LINE_MAX 4096                /* a chunk-size line with its extensions */
#define H1_CHUNK_SIZE_MAX (UINT64_C(1) << 60) /* larger chunk sizes are refused */
#define H1_HOLD_SLACK (64 * 1024) /* framing a held body may add beyond twice its payload */

/* ---- bodies ------------------------------------------------------------------------------ */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

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
int h1_body_feed(struct h1_side *s, const uint8_t *buf, size_t len, size_t *pos, uint64_t *payload,
                 const char **why, struct h1_span *data)
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
void h1_body_reset(struct http1 *h, enum http1_side side)
{
    body_stop(h, side);
    h->body[side] = (struct h1_body){0};
}

/* ---- body inspection: delivering and holding ----------------------------------------------- */

/* Offers side's message, whose head was just allowed and whose body follows, to body_begin. */
void h1_body_begin(struct http1 *h, const struct http1_body_info *info)
{
    struct h1_body *bd = &h->body[info->side];
    h1_body_reset(h, info->side);
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
int h1_body_hold_head(struct h1_side *s, const struct h1_head *hd)
{
    return hd->held ? 0 : h1_buf_append(&s->hold, hd->p, hd->n);
}

/* Gives payload p[0..n) of side's body, and its end, to on_body. BLOCK copies the rule and
 * reference; BLOCK, DONE and the end stop the inspection. Returns the verdict (DONE at the
 * end). */
int h1_body_deliver(struct http1 *h, enum http1_side side, const uint8_t *p, size_t n, bool end)
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
int h1_body_release(struct http1 *h, enum http1_side side, struct h1_feed *f)
{
    h->body[side].holding = false;
    if (side == HTTP1_SERVER) {
        h->rec0.status = h->rec0.upstream_status;
        h->rec0.flags |= R_RESP_STARTED;
    }
    struct h1_head hd = {.held = true};
    return h1_feed_release_head(&h->side[side], f, &hd);
}

/* Bytes buf[start..f->pos) of side's message were read: kept in the hold while the message is
 * held, else forwardable. The hold ends when enough was inspected, the inspection or the body
 * ended, or the held bytes reached their bound. */
int h1_body_after_step(struct http1 *h, enum http1_side side, struct h1_feed *f, size_t start,
                       bool end)
{
    struct h1_body *bd = &h->body[side];
    struct h1_side *s = &h->side[side];
    if (!bd->holding) {
        f->fwd = f->pos;
        return 0;
    }
    if (h1_buf_append(&s->hold, f->buf + start, f->pos - start) != 0)
        return -1;
    if (end || !bd->state || bd->seen >= bd->hold || s->hold.len >= 2 * bd->hold + H1_HOLD_SLACK)
        return h1_body_release(h, side, f);
    return 0;
}
