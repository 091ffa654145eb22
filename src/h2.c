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
 * error) runs outside callbacks, in finish().
 *
 * This file holds the sessions: their callbacks, output and teardown, and the API. Streams
 * live in h2_stream.c, bodies and their inspection in h2_body.c, memory and buffers in
 * h2_buf.c; h2_int.h holds the state they share. */
#include "h2_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2_DIRECT_MIN 4096 /* frames this large are handed to the caller without a copy */

static const char *const leg_name[2] = {"client", "upstream"};

/* --- memory: nghttp2's allocations are the bridge's (h2_buf.c) --------------------------- */

static void *nm_malloc(size_t n, void *ud)
{
    return h2_mem_alloc(ud, n);
}

static void nm_free(void *p, void *ud)
{
    h2_mem_free(ud, p);
}

static void *nm_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = h2_mem_alloc(ud, nmemb * size);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

static void *nm_realloc(void *p, size_t n, void *ud)
{
    return h2_mem_realloc(ud, p, n);
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
    h2_mem_free(b, o->buf);
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
            uint8_t *nb = h2_mem_realloc(b, o->buf, cap);
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
    struct h2_stream *s = h2_stream_new(b, frame->hd.stream_id);
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
    if (h2_head_add(b, &s->rx[leg], name, namelen, value, valuelen, flags) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
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
        if (nghttp2_is_fatal(rv))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (s && leg == DOWN && s->rst_after_resp) {
            s->discarded = len < UINT32_MAX - s->discarded ? s->discarded + (uint32_t)len
                                                            : UINT32_MAX;
            if (h2_maybe_rst_after(b, s) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    return h2_body_data(b, s, leg, data, len) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
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
            rv = s->head_done ? h2_trailers_in(b, s, DOWN) : h2_request_head(b, s, end);
        else
            rv = h2_response_head(b, s, end);
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
    if (s && end && !s->body[leg].drop && h2_body_ended(b, s, leg) != 0)
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
    if (leg == DOWN && h2_maybe_rst_after(b, s) != 0)
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
    struct h2_stream *s = h2_stream_by_up_id(b, frame->hd.stream_id);
    if (!s)
        return 0;
    uint32_t code = err == NGHTTP2_ERR_STREAM_CLOSING ? NGHTTP2_CANCEL : NGHTTP2_REFUSED_STREAM;
    return h2_leg_closed(b, s, UP, code) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t code, void *ud)
{
    struct h2_bridge *b = ud;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    return h2_leg_closed(b, s, leg_of(b, session), code) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
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
            h2_set_end(s, H2_END_INCOMPLETE, 0, "client connection closed");
            h2_stream_report(b, s);
        }
        rv |= h2_body_drop(b, s, DOWN);
        rv |= h2_body_drop(b, s, UP);
        rv |= h2_reset_leg(b, s, UP, NGHTTP2_CANCEL);
        h2_stream_maybe_free(b, s);
    }
    if (!b->goaway_out[UP])
        rv |= goaway(b, UP, 0, NGHTTP2_NO_ERROR);
    if (rv)
        fail(b, UP, "out of memory");
}

static int upstream_gone_stream(struct h2_bridge *b, struct h2_stream *s)
{
    if (!s->open[UP] && s->body[DOWN].holding && s->open[DOWN])
        return h2_refuse(b, s, "upstream closed before the request was sent");
    if (!s->open[UP])
        return 0;
    s->open[UP] = false;
    if (s->body[UP].eof) /* the whole response arrived: it is still delivered */
        return h2_abandon_request(b, s);
    bool sent = nghttp2_session_find_stream(b->sess[UP], s->id[UP]) != NULL;
    if (h2_body_drop(b, s, DOWN) != 0 || h2_body_drop(b, s, UP) != 0)
        return -1;
    if (!sent)
        return h2_refuse(b, s, "upstream closed before the request was sent");
    if (!s->resp_started) {
        h2_set_end(s, H2_END_BAD_RESPONSE, 0, "upstream closed the connection");
        return h2_reply_local(b, s, 502);
    }
    h2_set_end(s, H2_END_INCOMPLETE, NGHTTP2_INTERNAL_ERROR, "upstream closed mid-response");
    return h2_reset_leg(b, s, DOWN, NGHTTP2_INTERNAL_ERROR);
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
        h2_stream_maybe_free(b, s);
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
        h2_set_end(s, H2_END_INCOMPLETE, 0, "connection closed");
        h2_stream_report(b, s);
        h2_stream_free(b, s);
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
