/* relay: full-duplex byte pump between two legs with bounded buffers. */
#include "relay.h"

#include "h2.h"
#include "http1.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *relay_side_name(enum relay_side s)
{
    return s == RELAY_CLIENT ? "client" : "upstream";
}

static int relay_errno_result(struct relay_leg *leg, unsigned *want, unsigned again_bit)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        *want |= again_bit;
        return RELAY_IO_AGAIN;
    }
    snprintf(leg->error, sizeof(leg->error), "%s", strerror(errno));
    return RELAY_IO_ERROR;
}

static int tcp_read(struct relay_leg *leg, void *buf, size_t len, unsigned *want)
{
    ssize_t n = recv(leg->fd, buf, len, 0);
    if (n >= 0) {
        leg->drained = (size_t)n < len;
        return (int)n;
    }
    return relay_errno_result(leg, want, RELAY_WANT_READ(leg->side));
}

static int tcp_write(struct relay_leg *leg, const void *buf, size_t len, unsigned *want)
{
    ssize_t n = send(leg->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    return relay_errno_result(leg, want, RELAY_WANT_WRITE(leg->side));
}

static int tcp_shutdown(struct relay_leg *leg, bool clean, unsigned *want)
{
    (void)clean;
    (void)want;
    shutdown(leg->fd, SHUT_WR);
    return 0;
}

/* Maps an SSL failure to the relay's codes. */
static int tls_result(struct relay_leg *leg, int rc, unsigned *want)
{
    int err = SSL_get_error(leg->ssl, rc);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        *want |= RELAY_WANT_READ(leg->side);
        return RELAY_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want |= RELAY_WANT_WRITE(leg->side);
        return RELAY_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EPIPE) {
            ERR_clear_error();
            return RELAY_IO_TRUNCATED;
        }
        snprintf(leg->error, sizeof(leg->error), "%s", strerror(errno));
        ERR_clear_error();
        return RELAY_IO_ERROR;
    default: {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return RELAY_IO_TRUNCATED;
        }
        const char *r = ERR_reason_error_string(e);
        snprintf(leg->error, sizeof(leg->error), "%s", r ? r : "TLS error");
        ERR_clear_error();
        return RELAY_IO_ERROR;
    }
    }
}

/* Clears the thread's OpenSSL error queue before a call whose failure SSL_get_error will
 * classify. The queue is nearly always empty already (every failure path below drains it), and
 * checking costs a fraction of ERR_clear_error's walk over all its slots. */
static void relay_err_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* With read-ahead, OpenSSL reads all the socket holds into a buffer of a little over one full
 * record. So a read that yields less than a full record and leaves nothing in OpenSSL's buffer
 * found the socket empty, and the relay waits for readiness instead of reading again. A wrong
 * guess costs a wakeup, never data: readiness is level-triggered. (A BIO callback that saw
 * each socket read come back short cost 6% of a keep-alive request's instructions: every BIO
 * operation calls it twice.) */
static int tls_read(struct relay_leg *leg, void *buf, size_t len, unsigned *want)
{
    relay_err_clear();
    errno = 0;
    BIO *rbio = SSL_get_rbio(leg->ssl);
    uint64_t before = BIO_number_read(rbio);
    int n = SSL_read(leg->ssl, buf, (int)len);
    if (n > 0) {
        leg->drained = (size_t)n < (len < SSL3_RT_MAX_PLAIN_LENGTH ? len : SSL3_RT_MAX_PLAIN_LENGTH);
        return n;
    }
    /* Bytes came in but no application data came out: post-handshake messages (a session
     * ticket, a key update), for which OpenSSL set up both record buffers. */
    if (BIO_number_read(rbio) != before)
        leg->stale_bufs = true;
    return tls_result(leg, n, want);
}

static int tls_write(struct relay_leg *leg, const void *buf, size_t len, unsigned *want)
{
    relay_err_clear();
    errno = 0;
    int n = SSL_write(leg->ssl, buf, (int)len);
    if (n > 0)
        return n;
    int rc = tls_result(leg, n, want);
    /* A write that finds the peer gone is an error, not an orderly end. */
    if (rc == 0 || rc == RELAY_IO_TRUNCATED) {
        snprintf(leg->error, sizeof(leg->error), "connection closed by peer");
        return RELAY_IO_ERROR;
    }
    return rc;
}

/* Clean: send close_notify, then FIN. Truncated source: mirror it with FIN only. */
static int tls_shutdown(struct relay_leg *leg, bool clean, unsigned *want)
{
    if (clean && !(SSL_get_shutdown(leg->ssl) & SSL_SENT_SHUTDOWN)) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_shutdown(leg->ssl);
        if (rc < 0) {
            int r = tls_result(leg, rc, want);
            if (r == RELAY_IO_AGAIN)
                return r;
            /* the peer is already gone: nothing left to tell it */
        }
    }
    shutdown(leg->fd, SHUT_WR);
    return 0;
}

static const struct relay_leg_ops relay_tcp_ops = {tcp_read, tcp_write, tcp_shutdown};
static const struct relay_leg_ops relay_tls_ops = {tls_read, tls_write, tls_shutdown};

static void relay_leg_init(struct relay_leg *leg, enum relay_side side, int fd, SSL *ssl)
{
    *leg = (struct relay_leg){.ops = ssl ? &relay_tls_ops : &relay_tcp_ops, .fd = fd,
                              .ssl = ssl, .side = side};
}

void relay_init(struct relay *r, struct bufpool *pool, int cfd, SSL *cssl, int ufd, SSL *ussl)
{
    memset(r, 0, sizeof(*r));
    r->pool = pool;
    relay_leg_init(&r->leg[RELAY_CLIENT], RELAY_CLIENT, cfd, cssl);
    relay_leg_init(&r->leg[RELAY_UPSTREAM], RELAY_UPSTREAM, ufd, ussl);
    /* OpenSSL may hold bytes read during the handshake (read-ahead): read before waiting. */
    r->readable = RELAY_WANT_READ(RELAY_CLIENT) | RELAY_WANT_READ(RELAY_UPSTREAM);
}

void relay_note_ready(struct relay *r, unsigned ready)
{
    for (int i = 0; i < 2; i++) {
        if (ready & RELAY_WANT_READ(i)) {
            r->readable |= RELAY_WANT_READ(i);
            r->leg[i].drained = false;
        }
    }
}

/* Nothing is left to read on the leg until its socket is reported readable again: the last
 * read found the socket empty (a short recv; for TLS, a short record, see tls_read) and
 * OpenSSL holds no unprocessed bytes. */
static bool relay_leg_drained(const struct relay_leg *leg)
{
    return leg->drained && !(leg->ssl && SSL_has_pending(leg->ssl));
}

/* Reads from the leg unless its last read found nothing (then it waits for readiness without
 * a system call). Same results as the leg's read op. */
static int relay_leg_read(struct relay *r, struct relay_leg *leg, void *buf, size_t len)
{
    unsigned bit = RELAY_WANT_READ(leg->side), want = 0;
    if (!(r->readable & bit)) {
        r->want |= bit;
        return RELAY_IO_AGAIN;
    }
    int n = leg->ops->read(leg, buf, len, &want);
    r->want |= want;
    if (n == RELAY_IO_AGAIN ? (want & bit) != 0 : n > 0 && relay_leg_drained(leg))
        r->readable &= ~bit;
    return n;
}

int relay_preload_up(struct relay *r, const void *data, size_t len)
{
    struct relay_dir *d = &r->dir[0];
    if (len > BUFPOOL_BUF_SIZE || d->len > 0)
        return -1;
    if (!d->buf && !(d->buf = bufpool_get(r->pool)))
        return -1;
    memcpy(d->buf, data, len);
    d->off = 0;
    d->len = (uint32_t)len;
    d->bytes += len;
    return 0;
}

void relay_inspect_http1(struct relay *r, struct http1 *http)
{
    r->http = http;
}

/* Inspection is on while an inspector is set and the protocol has not switched. */
static bool relay_inspecting(const struct relay *r)
{
    return r->http && !r->http_tunnel;
}

/* Applies a verdict: reply mode drops the way to the server; what the client still sends is
 * read and dropped (relay_discard_from_client). */
static void relay_http_verdict(struct relay *r, enum http1_verdict v)
{
    if (v == HTTP1_TUNNEL) {
        r->http_tunnel = true;
    } else if (v == HTTP1_REPLY_AND_CLOSE && !r->http_replying) {
        r->http_replying = true;
        struct relay_dir *up = &r->dir[0];
        bufpool_put(r->pool, up->buf);
        up->buf = NULL;
        up->len = 0;
    }
}

/* Reads and drops what the client sends after the gateway's own reply (the rest of a refused
 * upload), until it closes or RELAY_LINGER_MAX bytes went: closing a socket with bytes unread
 * resets the connection, and the reset can reach a client that writes its whole request
 * before reading (Python's http.client) before it has read the reply. 1 progress, 0 blocked. */
static int relay_discard_from_client(struct relay *r)
{
    struct relay_dir *d = &r->dir[0];
    uint8_t *buf = bufpool_get(r->pool);
    int n = buf ? relay_leg_read(r, &r->leg[RELAY_CLIENT], buf, BUFPOOL_BUF_SIZE) : 0;
    bufpool_put(r->pool, buf);
    if (n == RELAY_IO_AGAIN)
        return 0;
    if (n > 0) {
        d->bytes += (uint64_t)n;
        r->discarded += (uint64_t)n;
        if (r->discarded < RELAY_LINGER_MAX)
            return 1;
    }
    d->done = true; /* closed, reset, or enough: nothing more is owed to the client */
    return 1;
}

bool relay_lingering(const struct relay *r)
{
    return r->http_replying && r->dir[1].done && !r->dir[0].done;
}

/* Bytes the inspector has for the direction out of side i: what it released from that side,
 * then (toward the client, when replying) the gateway's own reply. *is_reply says which. */
static size_t relay_http_queued(const struct relay *r, int i, const uint8_t **data,
                                bool *is_reply)
{
    *is_reply = false;
    if (!r->http || (r->http_replying && i == 0))
        return 0;
    size_t n = http1_pending(r->http, (enum http1_side)i, data);
    if (n > 0 || !r->http_replying)
        return n;
    size_t len;
    http1_reply(r->http, data, &len);
    *is_reply = true;
    *data += r->reply_off;
    return len - r->reply_off;
}

static int relay_http_flush(struct relay *r, int i, struct relay_leg *dst)
{
    const uint8_t *data;
    bool is_reply;
    size_t n = relay_http_queued(r, i, &data, &is_reply);
    int w = dst->ops->write(dst, data, n, &r->want);
    if (w == RELAY_IO_AGAIN)
        return 0;
    if (w < 0)
        return -1;
    if (is_reply)
        r->reply_off += (size_t)w;
    else
        http1_pending_consume(r->http, (enum http1_side)i, (size_t)w);
    return 1;
}

static void relay_fail(struct relay *r, const struct relay_leg *leg, char *err, size_t errlen)
{
    (void)r;
    snprintf(err, errlen, "%s: %s", relay_side_name(leg->side), leg->error);
}

/* Drains the direction's buffer into its destination. 1 progress, 0 blocked, -1 failed. */
static int relay_dir_flush(struct relay *r, struct relay_dir *d, struct relay_leg *dst)
{
    int n = dst->ops->write(dst, d->buf + d->off, d->len, &r->want);
    if (n == RELAY_IO_AGAIN)
        return 0;
    if (n < 0)
        return -1;
    d->off += (uint32_t)n;
    d->len -= (uint32_t)n;
    if (d->len == 0) {
        bufpool_put(r->pool, d->buf);
        d->buf = NULL;
        d->off = 0;
    }
    return 1;
}

/* Reads the next chunk from the source. 1 progress, 0 blocked, -1 failed. */
static int relay_dir_fill(struct relay *r, struct relay_dir *d, struct relay_leg *src)
{
    if (!d->buf && !(d->buf = bufpool_get(r->pool))) {
        snprintf(src->error, sizeof(src->error), "out of memory");
        return -1;
    }
    int n = relay_leg_read(r, src, d->buf, BUFPOOL_BUF_SIZE);
    if (n > 0) {
        d->off = 0;
        d->len = (uint32_t)n;
        d->bytes += (uint64_t)n;
        if (relay_inspecting(r)) {
            size_t forward = 0;
            enum http1_verdict v = src->side == RELAY_CLIENT
                                       ? http1_from_client(r->http, d->buf, (size_t)n, &forward)
                                       : http1_from_server(r->http, d->buf, (size_t)n, &forward);
            d->len = (uint32_t)forward;
            relay_http_verdict(r, v);
        }
        return 1;
    }
    bufpool_put(r->pool, d->buf);
    d->buf = NULL;
    if (n == RELAY_IO_AGAIN)
        return 0;
    if (n == RELAY_IO_ERROR)
        return -1;
    d->src_eof = true;
    d->truncated = n == RELAY_IO_TRUNCATED;
    if (relay_inspecting(r))
        relay_http_verdict(r, http1_eof(r->http, (enum http1_side)src->side));
    return 1;
}

/* One step of one direction. 1 progress, 0 blocked or idle, -1 failed (leg in *failed). */
static int relay_dir_step(struct relay *r, int i, struct relay_leg **failed)
{
    struct relay_dir *d = &r->dir[i];
    struct relay_leg *src = &r->leg[i], *dst = &r->leg[1 - i];
    int rc;
    const uint8_t *queued;
    bool is_reply;
    if (d->done)
        return 0;
    if (i == RELAY_CLIENT && r->http_replying) {
        rc = relay_discard_from_client(r);
        *failed = src;
    } else if (d->len > 0) {
        rc = relay_dir_flush(r, d, dst);
        *failed = dst;
    } else if (relay_http_queued(r, i, &queued, &is_reply) > 0) {
        rc = relay_http_flush(r, i, dst);
        *failed = dst;
    } else if (d->src_eof || r->http_replying) {
        rc = dst->ops->shutdown(dst, !d->truncated, &r->want);
        if (rc == 0) {
            d->done = true;
            rc = 1;
        } else {
            rc = rc == RELAY_IO_AGAIN ? 0 : -1;
        }
        *failed = dst;
    } else {
        rc = relay_dir_fill(r, d, src);
        *failed = src;
    }
    return rc;
}

/* A leg we have just told of a truncation (FIN without close_notify) answers in kind: an
 * OpenSSL peer sends decode_error, others reset. That is the truncation's echo, not a new
 * failure; the direction toward that leg is over anyway. */
static bool relay_is_truncation_echo(const struct relay *r, const struct relay_leg *failed)
{
    const struct relay_dir *toward = &r->dir[1 - failed->side];
    return toward->truncated && toward->done;
}

/* ---- HTTP/2 bridging ---- */

void relay_bridge_h2(struct relay *r, struct h2_bridge *bridge)
{
    r->h2 = bridge;
}

/* The bridge's output toward a side is written straight from its buffer; the cap keeps one
 * SSL_write bounded, and a retry after WANT_WRITE passes at least as many bytes as before
 * (the pending bytes only grow at their end). */
#define RELAY_H2_WRITE_MAX (256 * 1024)

static size_t relay_h2_pending(struct relay *r, int side, const uint8_t **data)
{
    return side == RELAY_CLIENT ? h2_bridge_pending_to_client(r->h2, data)
                                : h2_bridge_pending_to_upstream(r->h2, data);
}

/* Writes what the bridge has for the leg. 1 progress, 0 nothing or blocked, -1 failed. */
static int relay_h2_write(struct relay *r, struct relay_leg *leg)
{
    const uint8_t *data;
    size_t n = relay_h2_pending(r, leg->side, &data);
    if (n == 0)
        return 0;
    int w = leg->ops->write(leg, data, n < RELAY_H2_WRITE_MAX ? n : RELAY_H2_WRITE_MAX, &r->want);
    if (w == RELAY_IO_AGAIN)
        return 0;
    if (w < 0)
        return -1;
    if (leg->side == RELAY_CLIENT)
        h2_bridge_sent_to_client(r->h2, (size_t)w);
    else
        h2_bridge_sent_to_upstream(r->h2, (size_t)w);
    return 1;
}

static int relay_h2_feed(struct relay *r, int side, const uint8_t *data, int n)
{
    if (n > 0)
        return side == RELAY_CLIENT ? h2_bridge_from_client(r->h2, data, (size_t)n)
                                    : h2_bridge_from_upstream(r->h2, data, (size_t)n);
    r->h2_eof[side] = true;
    return side == RELAY_CLIENT ? h2_bridge_eof_from_client(r->h2)
                                : h2_bridge_eof_from_upstream(r->h2);
}

/* Reads one chunk from the leg into the bridge, when the bridge wants it (backpressure: it
 * does not while the other leg's output is high). A reset or truncation ends the leg like a
 * close; the first transport error is kept for the record. 1 progress, 0 nothing or blocked,
 * -1 the bridge failed. */
static int relay_h2_read(struct relay *r, struct relay_leg *leg)
{
    int side = leg->side;
    bool wants = side == RELAY_CLIENT ? h2_bridge_wants_from_client(r->h2)
                                      : h2_bridge_wants_from_upstream(r->h2);
    if (r->h2_eof[side] || !wants)
        return 0;
    uint8_t *buf = bufpool_get(r->pool);
    if (!buf) {
        snprintf(r->h2_leg_error, sizeof(r->h2_leg_error), "out of memory");
        return -1;
    }
    int n = relay_leg_read(r, leg, buf, BUFPOOL_BUF_SIZE);
    int rv = 0;
    if (n > 0)
        r->dir[side].bytes += (uint64_t)n;
    if (n == RELAY_IO_ERROR && !r->h2_leg_error[0])
        snprintf(r->h2_leg_error, sizeof(r->h2_leg_error), "%s: %s", relay_side_name(leg->side),
                 leg->error);
    if (n != RELAY_IO_AGAIN)
        rv = relay_h2_feed(r, side, buf, n);
    bufpool_put(r->pool, buf);
    if (n == RELAY_IO_AGAIN)
        return 0;
    return rv < 0 ? -1 : 1;
}

/* The bridge is over (done or failed): what it still has for each leg goes out if it can at
 * once, then both legs are closed (close_notify and FIN). */
static void relay_h2_close_legs(struct relay *r)
{
    for (int i = 0; i < 2; i++) {
        struct relay_leg *leg = &r->leg[i];
        unsigned want = 0;
        while (relay_h2_write(r, leg) > 0)
            ;
        leg->ops->shutdown(leg, true, &want);
        r->dir[i].done = true;
    }
}

static enum relay_status relay_h2_pump(struct relay *r, char *err, size_t errlen)
{
    bool progress = true;
    r->progressed = false;
    while (progress) {
        progress = false;
        r->want = 0;
        for (int i = 0; i < 2; i++) {
            struct relay_leg *leg = &r->leg[i];
            int w = relay_h2_write(r, leg);
            if (w < 0) {
                relay_fail(r, leg, err, errlen);
                return RELAY_FAILED;
            }
            int rd = relay_h2_read(r, leg);
            if (rd < 0) {
                const char *why = h2_bridge_error(r->h2);
                snprintf(err, errlen, "%s", why ? why : r->h2_leg_error);
                relay_h2_close_legs(r);
                return RELAY_FAILED;
            }
            progress = progress || w > 0 || rd > 0;
        }
        r->progressed = r->progressed || progress;
    }
    if (!h2_bridge_done(r->h2) && r->want != 0)
        return RELAY_CONTINUE;
    relay_h2_close_legs(r);
    if (!h2_bridge_done(r->h2)) {
        snprintf(err, errlen, "h2: stalled with nothing to wait for");
        return RELAY_FAILED;
    }
    if (r->h2_leg_error[0]) {
        snprintf(err, errlen, "%s", r->h2_leg_error);
        return RELAY_FAILED;
    }
    return RELAY_FINISHED;
}

/* SSL_MODE_RELEASE_BUFFERS frees a leg's buffers only once application data went through
 * them: the handshake's 16.5 KiB write buffer would stay with a connection that has sent
 * nothing since (an idle client, as in the benchmark's idle workload), and so would the
 * buffers OpenSSL sets up to take a post-handshake message (the origin's session tickets,
 * which arrive after the relay first waited). So a waiting relay frees a leg's buffers
 * itself the first time, and again after such a message (stale_bufs); OpenSSL refuses while
 * a buffer holds bytes, so this never loses data, and the leg is tried again at the next
 * wait. Application data is covered by RELEASE_BUFFERS. */
static bool relay_leg_needs_trim(const struct relay *r, int i)
{
    return !(r->trimmed & (1u << i)) || r->leg[i].stale_bufs;
}

static void relay_trim_buffers(struct relay *r)
{
    for (int i = 0; i < 2; i++) {
        struct relay_leg *leg = &r->leg[i];
        if (!relay_leg_needs_trim(r, i) || (leg->ssl && !SSL_free_buffers(leg->ssl)))
            continue;
        r->trimmed |= 1u << i;
        leg->stale_bufs = false;
    }
}

void relay_note_post_handshake(struct relay *r, enum relay_side side)
{
    r->leg[side].stale_bufs = true;
}

static enum relay_status relay_raw_pump(struct relay *r, char *err, size_t errlen)
{
    bool progress = true;
    r->progressed = false;
    while (progress) {
        progress = false;
        r->want = 0;
        for (int i = 0; i < 2; i++) {
            struct relay_leg *failed = NULL;
            int rc = relay_dir_step(r, i, &failed);
            if (rc < 0) {
                if (relay_is_truncation_echo(r, failed))
                    return RELAY_FINISHED;
                relay_fail(r, failed, err, errlen);
                return RELAY_FAILED;
            }
            progress = progress || rc > 0;
        }
        r->progressed = r->progressed || progress;
    }
    if (r->dir[0].done && r->dir[1].done)
        return RELAY_FINISHED;
    return RELAY_CONTINUE;
}

enum relay_status relay_pump(struct relay *r, char *err, size_t errlen)
{
    enum relay_status st = r->h2 ? relay_h2_pump(r, err, errlen) : relay_raw_pump(r, err, errlen);
    if (st == RELAY_CONTINUE && (relay_leg_needs_trim(r, 0) || relay_leg_needs_trim(r, 1)))
        relay_trim_buffers(r);
    return st;
}

void relay_release(struct relay *r)
{
    for (int i = 0; i < 2; i++) {
        bufpool_put(r->pool, r->dir[i].buf);
        r->dir[i].buf = NULL;
        r->dir[i].len = 0;
    }
}
