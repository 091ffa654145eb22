/* relay: full-duplex byte pump between two legs with bounded buffers. */
#include "relay.h"

#include "http1.h"

#include <errno.h>
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
    if (n >= 0)
        return (int)n;
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

static int tls_read(struct relay_leg *leg, void *buf, size_t len, unsigned *want)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(leg->ssl, buf, (int)len);
    return n > 0 ? n : tls_result(leg, n, want);
}

static int tls_write(struct relay_leg *leg, const void *buf, size_t len, unsigned *want)
{
    ERR_clear_error();
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

void relay_init(struct relay *r, struct bufpool *pool, int cfd, SSL *cssl, int ufd, SSL *ussl)
{
    memset(r, 0, sizeof(*r));
    r->pool = pool;
    r->leg[RELAY_CLIENT] = (struct relay_leg){cssl ? &relay_tls_ops : &relay_tcp_ops, cfd, cssl,
                                              RELAY_CLIENT, ""};
    r->leg[RELAY_UPSTREAM] = (struct relay_leg){ussl ? &relay_tls_ops : &relay_tcp_ops, ufd,
                                                ussl, RELAY_UPSTREAM, ""};
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

/* Applies a verdict: reply mode drops the way to the server and stops all reading. */
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
        up->done = true;
    }
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
    int n = src->ops->read(src, d->buf, BUFPOOL_BUF_SIZE, &r->want);
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
    if (d->len > 0) {
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

enum relay_status relay_pump(struct relay *r, char *err, size_t errlen)
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

void relay_release(struct relay *r)
{
    for (int i = 0; i < 2; i++) {
        bufpool_put(r->pool, r->dir[i].buf);
        r->dir[i].buf = NULL;
        r->dir[i].len = 0;
    }
}
