/* h2_body: bodies in the HTTP/2 bridge: DATA from one leg buffered for the other, and body
 * inspection: a body offered to the body hooks, its head held while they scan it, then
 * released (the request opened upstream, the response head sent down) or blocked. */
#include "h2_int.h"

#include <string.h>

/* --- body inspection --------------------------------------------------------------------- */

static bool body_hooked(const struct h2_bridge *b)
{
    return b->hooks && b->hooks->body_begin && b->hooks->on_body && b->hooks->body_end;
}

/* Ends the inspection of the body from leg: the hook frees its state. */
void h2_inspect_stop(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    void *state = s->body[leg].inspect;
    s->body[leg].inspect = NULL;
    if (state)
        b->hooks->body_end(b->arg, state);
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
int h2_inspect_request(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    struct h2_request_info req;
    if (!body_hooked(b))
        return 0;
    if (h2_request_view(b, s, h, false, &req) != 0)
        return -1;
    inspect_begin(b, s, DOWN,
                  &(struct h2_body_info){.req = &req, .max_hold = b->cfg.stream_window});
    h2_mem_free(b, (void *)req.headers);
    return 0;
}

/* Offers a response body; 0, or -1 on OOM. */
int h2_inspect_response(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h)
{
    struct h2_exchange x;
    struct h2_response_info resp;
    if (!body_hooked(b))
        return 0;
    if (h2_response_view(b, s, h, &x, &resp) != 0)
        return -1;
    inspect_begin(
        b, s, UP,
        &(struct h2_body_info){.response = true, .resp = &resp, .max_hold = b->cfg.stream_window});
    h2_mem_free(b, (void *)resp.headers);
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
        h2_copy_trunc(s->rule, sizeof(s->rule), blk.rule);
        h2_copy_trunc(s->ref, sizeof(s->ref), blk.ref);
    }
    if (v == H2_BODY_BLOCK || v == H2_BODY_DONE || end) {
        h2_inspect_stop(b, s, leg);
        return v == H2_BODY_BLOCK ? v : H2_BODY_DONE;
    }
    return H2_BODY_MORE;
}

/* A body rule blocked the body from leg: a head still held is answered with the page (the
 * request never went upstream, or the response head never reached the client); otherwise
 * the upstream's stream is cancelled and the client's reset (h2_reply_local). */
static int inspect_blocked(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    bool held = s->body[leg].holding;
    h2_set_end(s, H2_END_BLOCKED, 0,
               leg == DOWN ? (held ? "request body blocked by policy"
                                   : "request body blocked by policy after part of it was sent")
                           : (held ? "response body blocked by policy"
                                   : "response body blocked by policy after part of it was sent"));
    s->body[leg].holding = false;
    h2_head_free(b, &s->held);
    return h2_reply_local(b, s, 403);
}

/* --- held heads -------------------------------------------------------------------------- */

/* The held request goes upstream now (unless the upstream is going away). */
static int release_request(struct h2_bridge *b, struct h2_stream *s)
{
    int rv;
    s->body[DOWN].holding = false;
    if (b->stopping || b->closed[UP] || !nghttp2_session_check_request_allowed(b->sess[UP]))
        rv = h2_refuse(b, s, "upstream connection going away");
    else
        rv = h2_open_upstream(b, s, &s->held, false);
    h2_head_free(b, &s->held);
    return rv;
}

/* The held response head goes to the client now, its body after it. */
static int release_response(struct h2_bridge *b, struct h2_stream *s)
{
    int rv = 0;
    s->body[UP].holding = false;
    if (!s->open[DOWN] || b->closed[DOWN]) {
        rv = h2_body_drop(b, s, UP);
    } else {
        rv = h2_submit_head_down(b, s, &s->held, true, false);
        s->status = s->upstream_status;
        s->resp_started = true;
    }
    h2_head_free(b, &s->held);
    return rv;
}

static int release_held(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    return leg == DOWN ? release_request(b, s) : release_response(b, s);
}

/* --- DATA -------------------------------------------------------------------------------- */

/* DATA from leg for a live stream: inspected first when asked, then buffered for the other
 * leg, or held with its head (given back to the sender's connection window at once). */
int h2_body_data(struct h2_bridge *b, struct h2_stream *s, int leg, const uint8_t *data, size_t len)
{
    struct h2_body *body = &s->body[leg];
    int v = inspect_data(b, s, leg, data, len, false);
    if (v == H2_BODY_BLOCK) {
        body->bytes += len;
        if (h2_consume(b, leg, s->id[leg], len, true) != 0)
            return -1;
        return inspect_blocked(b, s, leg);
    }
    if (h2_sbuf_add(b, &body->buf, data, len) != 0)
        return -1;
    body->bytes += len;
    if (!body->holding) {
        h2_wake(b, s, OTHER(leg));
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
int h2_body_ended(struct h2_bridge *b, struct h2_stream *s, int leg)
{
    struct h2_body *body = &s->body[leg];
    body->eof = true;
    if (inspect_data(b, s, leg, NULL, 0, true) == H2_BODY_BLOCK)
        return inspect_blocked(b, s, leg);
    if (body->holding)
        return release_held(b, s, leg);
    h2_wake(b, s, OTHER(leg));
    return 0;
}
