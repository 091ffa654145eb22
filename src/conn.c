/* conn: per-connection state machine (see docs/ARCHITECTURE.md, "The life of a connection"). */
#include "conn.h"
#include "conn_int.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"
#include "clienthello.h"
#include "connlog.h"
#include "dial.h"
#include "h2.h"
#include "html.h"
#include "http1.h"
#include "gateway.h"
#include "json.h"
#include "listener.h"
#include "log.h"
#include "mint.h"
#include "pinning.h"
#include "policy.h"
#include "proxyreq.h"
#include "relay.h"
#include "sesscache.h"
#include "snapshot.h"
#include "tls.h"
#include "worker.h"


static void conn_advance(struct conn *c);
static void conn_close_now(struct conn *c);
static void conn_upstream_failed(struct conn *c, const char *stage, const char *reason);

/* ---- small helpers ---- */

/* Records the first failure; the record at close carries it. */
static void conn_set_error(struct conn *c, const char *stage, const char *reason)
{
    if (c->err_stage)
        return;
    c->err_stage = stage;
    snprintf(c->err_reason, sizeof(c->err_reason), "%s", reason);
}

static void conn_fail(struct conn *c, const char *stage, const char *reason)
{
    conn_set_error(c, stage, reason);
    c->closing = true;
}

static void conn_timer_ms(struct conn *c, unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(&c->timer, &tv);
}

/* After a reply of the gateway's own, the client has CONN_LINGER_MS to finish sending and
 * close; then the gateway closes (possibly with a reset, which is then the client's doing). */
#define CONN_LINGER_MS 5000

static void conn_linger_start(struct conn *c)
{
    c->lingering = true;
    conn_timer_ms(c, CONN_LINGER_MS);
}

/* Adds and removes the four I/O events so exactly `want` is watched. */
static void conn_watch(struct conn *c, unsigned want)
{
    struct event *evs[4] = {&c->cev_r, &c->cev_w, &c->uev_r, &c->uev_w};
    for (int i = 0; i < 4; i++) {
        unsigned bit = 1u << i;
        if ((want & bit) && !(c->watching & bit))
            event_add(evs[i], NULL);
        else if (!(want & bit) && (c->watching & bit))
            event_del(evs[i]);
    }
    c->watching = want;
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);

/* Peek states watch the client edge-triggered: MSG_PEEK leaves bytes queued, and a
 * level-triggered event would fire again at once until the rest arrives. */
static void conn_set_peeking(struct conn *c, bool peeking)
{
    if (c->peeking == peeking)
        return;
    conn_watch(c, c->watching & ~RELAY_WANT_READ(RELAY_CLIENT));
    short flags = EV_READ | EV_PERSIST | (peeking ? EV_ET : 0);
    event_assign(&c->cev_r, c->w->base, c->cfd, flags, conn_on_io, c);
    c->peeking = peeking;
}

static void conn_attach_upstream(struct conn *c, int fd)
{
    c->ufd = fd;
    event_assign(&c->uev_r, c->w->base, fd, EV_READ | EV_PERSIST, conn_on_io, c);
    event_assign(&c->uev_w, c->w->base, fd, EV_WRITE | EV_PERSIST, conn_on_io, c);
}

/* ---- TLS callbacks (reached through the SSL's app data) ---- */

/* Holds the client's handshake until the upstream's is done, then presents the leaf. */
static int conn_on_client_hello(SSL *ssl, int *alert, void *arg)
{
    struct conn *c = arg;
    if (c->fail_with_alert) {
        *alert = SSL_AD_HANDSHAKE_FAILURE;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (!c->leaf)
        return SSL_CLIENT_HELLO_RETRY;
    if (SSL_use_certificate(ssl, c->leaf->cert) != 1 ||
        SSL_use_PrivateKey(ssl, c->leaf->key) != 1) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    c->leaf_sent = true;
    /* Never a higher version toward the client than the upstream gave us. */
    if (c->up_version && !SSL_set_max_proto_version(ssl, c->up_version)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Gives the client what the upstream chose (or HTTP/1.1 for the error page). */
static int conn_on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                        const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    struct conn *c = tls_get_app_data(ssl);
    const unsigned char *want = NULL;
    unsigned int want_len = 0;
    if (!c)
        return SSL_TLSEXT_ERR_NOACK;
    if (c->upstream_failed || c->block_page) {
        want = (const unsigned char *)"http/1.1";
        want_len = 8;
    } else if (c->ussl) {
        SSL_get0_alpn_selected(c->ussl, &want, &want_len);
    }
    for (unsigned int i = 0; want_len && i < inlen; i += 1u + in[i]) {
        if (in[i] == want_len && i + 1u + want_len <= inlen &&
            memcmp(in + i + 1, want, want_len) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)want_len;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *conn_client_ctx_new(void)
{
    return tls_client_side_ctx_new(conn_on_client_hello, conn_on_alpn);
}

/* ---- policy ---- */

static void conn_decide(struct conn *c, struct policy_decision *d)
{
    const struct config *cfg = conn_cfg(c);
    struct policy_flow f = {
        .sni = c->sni,
        .host = cfg->mode == CONFIG_MODE_EXPLICIT ? c->target : NULL,
        .client = (struct sockaddr *)&c->client,
        .dst = c->have_dst ? (struct sockaddr *)&c->dst : NULL,
        .dst_port = c->have_dst ? addr_port((struct sockaddr *)&c->dst) : c->port,
        .alpn = c->alpn_offer,
        .alpn_len = c->alpn_offer_len,
    };
    policy_decide(cfg->policy, &f, d);
    c->rule = d->rule;
}

/* Pinning is scoped to one client address: the app on that device pins, and a client that
 * aborts handshakes on purpose must not switch inspection off for everyone else. The key is
 * "CLIENT-IP NAME". */
static const char *conn_pinning_key(const struct conn *c, char *buf, size_t size)
{
    char ip[ADDR_TEXT_MAX];
    addr_format_ip((const struct sockaddr *)&c->client, ip, sizeof(ip));
    snprintf(buf, size, "%s %s", ip, c->sni);
    return buf;
}

/* A client that aborted on the forged certificate: counts toward passing its name through
 * for that client. */
static void conn_note_refusal(struct conn *c)
{
    const struct policy_pinning *pin = policy_pinning(conn_cfg(c)->policy);
    char key[ADDR_TEXT_MAX + 300], ip[ADDR_TEXT_MAX];
    if (!pin->enabled || !c->sni || !c->leaf_sent || c->upstream_failed || c->block_page)
        return;
    if (pinning_record_refusal(c->w->gw->pinning, conn_pinning_key(c, key, sizeof(key)),
                               pinning_now_ms(), pin->threshold, pin->window_ms, pin->ttl_ms))
        log_msg(LOG_WARN,
                "pinning_suspected: client %s refused the forged certificate for %s %u times "
                "within %u s; passing %s through for that client for %u s",
                addr_format_ip((const struct sockaddr *)&c->client, ip, sizeof(ip)), c->sni, pin->threshold, pin->window_ms / 1000, c->sni,
                pin->ttl_ms / 1000);
}

static bool conn_is_pinned(const struct conn *c)
{
    char key[ADDR_TEXT_MAX + 300];
    return c->sni && policy_pinning(conn_cfg(c)->policy)->enabled &&
           pinning_is_pinned(c->w->gw->pinning, conn_pinning_key(c, key, sizeof(key)),
                             pinning_now_ms());
}

/* Ends the connection with a TCP reset. */
static void conn_reset_client(struct conn *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    c->closing = true;
}

/* Refuses a ClientHello with a fatal access_denied alert, after reading the hello so the
 * close is a FIN that delivers the alert, not a reset that could drop it. */
static void conn_send_alert(struct conn *c)
{
    static const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, SSL_AD_ACCESS_DENIED};
    while (recv(c->cfd, c->w->scratch, c->w->scratch_size, MSG_DONTWAIT) > 0)
        ;
    send(c->cfd, alert, sizeof(alert), MSG_NOSIGNAL);
    shutdown(c->cfd, SHUT_WR);
    c->closing = true;
}

/* ---- explicit proxy: the request head ---- */

/* After an answer of the proxy's own on the plain client socket: FIN, then the linger
 * (conn_do_fail_linger), as after the pages sent over TLS. */
static void conn_linger_after_plain_reply(struct conn *c)
{
    shutdown(c->cfd, SHUT_WR);
    conn_set_peeking(c, false);
    conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
    c->state = CONN_FAIL_LINGER;
    conn_linger_start(c);
}

static void conn_send_all(int fd, const char *buf, size_t len)
{
    /* Replies here are small and go out on a fresh socket: its buffer takes them whole. */
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void conn_proxy_refuse(struct conn *c, int status, const char *why)
{
    char body[256], resp[512];
    int blen = snprintf(body, sizeof(body), "sluice: %s\n", why);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, status == 431 ? "Request Header Fields Too Large"
                             : status == 501 ? "Not Implemented"
                             : status == 502 ? "Bad Gateway"
                                             : "Bad Request",
                     blen, body);
    conn_send_all(c->cfd, resp, (size_t)n);
    conn_set_error(c, "proxy_request", why);
    conn_linger_after_plain_reply(c);
}

/* Peeks at what the client sent so far. Returns bytes, 0 at EOF, -1 when none yet. */
static ssize_t conn_peek(struct conn *c)
{
    ssize_t n = recv(c->cfd, c->w->scratch, c->w->scratch_size, MSG_PEEK);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_fail(c, c->state == CONN_PEEK ? "client_hello" : "proxy_request", strerror(errno));
        return 0;
    }
    return n;
}

/* An explicit-proxy request whose host the policy blocks is refused right away: with a reset,
 * or with the 403 page. A CONNECT blocked with an alert waits for its ClientHello; a plain
 * http:// request has no TLS to alert, so it gets the page. Returns true when refused. */
static bool conn_block_proxy_request(struct conn *c, bool tls_follows)
{
    struct policy_decision d;
    conn_decide(c, &d);
    if (d.action != POLICY_BLOCK || (d.how == POLICY_HOW_ALERT && tls_follows))
        return false;
    c->action = CONNLOG_BLOCK;
    if (d.how == POLICY_HOW_RESET) {
        conn_reset_client(c);
        return true;
    }
    char page[8192], ref[24], resp[512];
    snprintf(ref, sizeof(ref), "%llu", (unsigned long long)c->id);
    struct policy_page_vars vars = {d.rule, ref, c->target, c->target, NULL};
    long n = policy_render_block_page(conn_cfg(c)->policy, &vars, page, sizeof(page));
    if (n < 0)
        n = 0;
    int h = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: %ld\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                     n);
    conn_send_all(c->cfd, resp, (size_t)h);
    conn_send_all(c->cfd, page, (size_t)n);
    conn_linger_after_plain_reply(c);
    return true;
}

static void conn_take_proxy_request(struct conn *c, struct proxyreq *req)
{
    char sink[512];
    size_t left = req->head_len;
    while (left > 0) { /* consume exactly the head: what follows belongs to the tunnel */
        ssize_t n = recv(c->cfd, sink, left < sizeof(sink) ? left : sizeof(sink), 0);
        if (n <= 0)
            break;
        left -= (size_t)n;
    }
    c->target = strdup(req->host);
    c->port = req->port;
    if (conn_block_proxy_request(c, req->kind == PROXYREQ_CONNECT))
        return;
    if (req->kind == PROXYREQ_CONNECT) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        conn_send_all(c->cfd, ok, sizeof(ok) - 1);
        c->state = CONN_PEEK;
        c->got_bytes = false;
        conn_timer_ms(c, conn_cfg(c)->first_byte_timeout_ms);
        return;
    }
    c->action = CONNLOG_HTTP;
    c->fwd_head = req->forward_head;
    c->fwd_len = req->forward_len;
    req->forward_head = NULL;
    c->state = CONN_DIAL;
}

static void conn_do_proxy_request(struct conn *c)
{
    ssize_t n = conn_peek(c);
    if (n < 0 || c->closing) {
        conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
        return;
    }
    if (n == 0) {
        conn_fail(c, "proxy_request", "client closed before sending a request");
        return;
    }
    struct proxyreq req;
    enum proxyreq_result r = proxyreq_parse((const char *)c->w->scratch, (size_t)n, &req);
    if (r == PROXYREQ_NEED_MORE) {
        conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
        return;
    }
    if (r == PROXYREQ_ERROR)
        conn_proxy_refuse(c, req.status, req.error);
    else
        conn_take_proxy_request(c, &req);
    proxyreq_free(&req);
}

/* ---- the ClientHello ---- */

static void conn_keep_hello(struct conn *c, const struct clienthello *hello)
{
    if (hello->has_sni)
        c->sni = strdup(hello->sni);
    if (hello->alpn_len > 0 && (c->alpn_offer = malloc(hello->alpn_len))) {
        memcpy(c->alpn_offer, hello->alpn, hello->alpn_len);
        c->alpn_offer_len = hello->alpn_len;
    }
    /* The name the upstream must prove: what the client asked for, else where it went. */
    char ip[ADDR_TEXT_MAX];
    if (c->sni)
        c->host = strdup(c->sni);
    else if (c->target)
        c->host = strdup(c->target);
    else
        c->host = strdup(addr_format_ip((struct sockaddr *)&c->dst, ip, sizeof(ip)));
}

/* Starts the client's handshake; it stops in the hello callback until the leaf is ready. */
static void conn_start_intercept(struct conn *c)
{
    c->action = CONNLOG_INTERCEPT;
    c->cssl = SSL_new(c->w->gw->client_ctx);
    if (!c->cssl || !SSL_set_fd(c->cssl, c->cfd)) {
        conn_fail(c, "client_handshake", "out of memory");
        return;
    }
    tls_set_app_data(c->cssl, c);
    ERR_clear_error();
    int rc = SSL_accept(c->cssl);
    int err = SSL_get_error(c->cssl, rc);
    if (err != SSL_ERROR_WANT_CLIENT_HELLO_CB) {
        char why[128];
        conn_fail(c, "client_handshake", tls_error_reason(err, why, sizeof(why)));
        return;
    }
    c->state = CONN_DIAL;
}

/* Blocked with a page: the client's handshake completes under a leaf naming only what it
 * asked for, and every answer is the block page; the upstream is never contacted. */
static void conn_block_with_page(struct conn *c)
{
    conn_start_intercept(c);
    c->action = CONNLOG_BLOCK;
    c->block_page = true;
    if (c->closing)
        return;
    if (!(c->leaf = mint_leaf_for_name(c->w->mint, c->host))) {
        conn_fail(c, "client_handshake", "cannot forge a certificate");
        return;
    }
    c->state = CONN_CLIENT_TLS;
}

static void conn_apply_decision(struct conn *c)
{
    struct policy_decision d;
    conn_decide(c, &d);
    if (d.action == POLICY_INTERCEPT && conn_is_pinned(c)) {
        d.action = POLICY_PASSTHROUGH;
        c->rule = "pinning_suspected";
    }
    if (d.action == POLICY_INTERCEPT) {
        conn_start_intercept(c);
    } else if (d.action == POLICY_PASSTHROUGH) {
        c->action = CONNLOG_PASSTHROUGH; /* the hello is still queued: it goes out untouched */
        c->state = CONN_DIAL;
    } else if (d.how == POLICY_HOW_RESET) {
        c->action = CONNLOG_BLOCK;
        conn_reset_client(c);
    } else if (d.how == POLICY_HOW_PAGE &&
               clienthello_alpn_list_has(c->alpn_offer, c->alpn_offer_len, "http/1.1")) {
        conn_block_with_page(c);
    } else {
        c->action = CONNLOG_BLOCK;
        conn_send_alert(c);
    }
}

/* Not TLS: relayed as plain TCP unless the policy blocks the flow (then reset). */
static void conn_start_tcp(struct conn *c)
{
    struct policy_decision d;
    conn_decide(c, &d);
    if (d.action == POLICY_BLOCK) {
        c->action = CONNLOG_BLOCK;
        conn_reset_client(c);
        return;
    }
    c->action = CONNLOG_TCP;
    c->state = CONN_DIAL;
}

static void conn_do_peek(struct conn *c)
{
    ssize_t n = conn_peek(c);
    if (c->closing)
        return;
    if (n < 0) {
        conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
        return;
    }
    if (n == 0) {
        conn_fail(c, "client_hello", "client closed before sending a ClientHello");
        return;
    }
    if (!c->got_bytes) { /* from now on the handshake deadline applies */
        c->got_bytes = true;
        conn_timer_ms(c, conn_cfg(c)->handshake_timeout_ms);
    }
    struct clienthello hello;
    enum clienthello_result r = clienthello_parse(c->w->scratch, (size_t)n, &hello);
    if (r == CLIENTHELLO_NEED_MORE && (size_t)n < c->w->scratch_size) {
        conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
        return;
    }
    if (r == CLIENTHELLO_NOT_TLS) {
        conn_start_tcp(c);
        return;
    }
    if (r != CLIENTHELLO_OK) {
        conn_fail(c, "client_hello",
                  clienthello_result_str(r == CLIENTHELLO_NEED_MORE ? CLIENTHELLO_TOO_BIG : r));
        return;
    }
    conn_keep_hello(c, &hello);
    conn_apply_decision(c);
}

/* ---- reaching the upstream ---- */

static void conn_on_dialed(void *arg, int fd, const struct sockaddr *addr, const char *stage,
                           const char *reason)
{
    struct conn *c = arg;
    c->dial = NULL;
    if (fd < 0) {
        char why[200];
        snprintf(why, sizeof(why), "%s%s%s", reason,
                 strcmp(stage, "dns") == 0 ? " for " : "", strcmp(stage, "dns") == 0 ? c->target : "");
        conn_upstream_failed(c, stage, why);
    } else {
        memcpy(&c->dst, addr, addr_len(addr));
        c->have_dst = true;
        conn_attach_upstream(c, fd);
        c->state = c->action == CONNLOG_INTERCEPT ? CONN_UPSTREAM_TLS : CONN_RELAY;
        conn_timer_ms(c, c->action == CONNLOG_INTERCEPT ? conn_cfg(c)->handshake_timeout_ms
                                                        : conn_cfg(c)->idle_timeout_ms);
    }
    conn_advance(c);
    if (c->closing)
        conn_close_now(c);
}

static void conn_do_dial(struct conn *c)
{
    if (c->dial)
        return; /* under way */
    conn_set_peeking(c, false);
    conn_watch(c, 0);
    const struct config *cfg = conn_cfg(c);
    /* explicit and fixed: a name or IP to resolve; transparent: the original destination */
    c->dial = dial_start(c->w->base, c->w->dns, c->target, c->port, (struct sockaddr *)&c->dst,
                         conn_on_dialed, c);
    if (!c->dial) {
        conn_fail(c, "connect", "out of memory");
        return;
    }
    conn_timer_ms(c, cfg->connect_timeout_ms);
}

/* ---- the upstream handshake ---- */

/* Sessions are keyed by what was verified (the name) and where (port and address). */
static void conn_session_key(const struct conn *c, char *key, size_t size)
{
    char addr[ADDR_TEXT_MAX];
    snprintf(key, size, "%s|%s", c->host, addr_format((struct sockaddr *)&c->dst, addr, sizeof(addr)));
}

int conn_on_upstream_session(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = tls_get_app_data(ssl);
    char key[320];
    if (c && c->relay_started) /* a TLS 1.3 ticket read by the relay: see relay_trim_buffers */
        relay_note_post_handshake(&c->relay, RELAY_UPSTREAM);
    /* TLS 1.2 hands the session over just before the handshake returns: verification is
     * already over by then, and a failed one never gets here. */
    if (!c || c->vr.error != X509_V_OK || !c->vr.leaf)
        return 0;
    conn_session_key(c, key, sizeof(key));
    sesscache_put(c->w->sessions, key, sess);
    return 1;
}

/* While HTTP is inspected (HTTP rules, request log), the upstream is offered what the client
 * offered among h2 and http/1.1, the two protocols sluice can read; an offer with neither
 * (another protocol only) is passed on as it is and relayed without HTTP inspection. Filters
 * the offer in place. */
static bool conn_alpn_is_http(const uint8_t *p, size_t n)
{
    return (n == 2 && memcmp(p, "h2", 2) == 0) || (n == 8 && memcmp(p, "http/1.1", 8) == 0);
}

static void conn_alpn_http_only(struct conn *c)
{
    size_t out = 0;
    if (!clienthello_alpn_list_has(c->alpn_offer, c->alpn_offer_len, "h2") &&
        !clienthello_alpn_list_has(c->alpn_offer, c->alpn_offer_len, "http/1.1"))
        return;
    for (size_t i = 0; i < c->alpn_offer_len && i + 1u + c->alpn_offer[i] <= c->alpn_offer_len;
         i += 1u + c->alpn_offer[i]) {
        size_t n = 1u + c->alpn_offer[i];
        if (!conn_alpn_is_http(c->alpn_offer + i + 1, n - 1))
            continue;
        memmove(c->alpn_offer + out, c->alpn_offer + i, n);
        out += n;
    }
    c->alpn_offer_len = out;
}

static bool conn_inspects_http(const struct conn *c)
{
    return policy_has_http_rules(conn_cfg(c)->policy) || c->w->gw->request_log_fd >= 0;
}

static int conn_upstream_tls_start(struct conn *c)
{
    char key[320];
    c->ussl = SSL_new(c->w->gw->upstream_ctx);
    if (conn_inspects_http(c))
        conn_alpn_http_only(c);
    if (!c->ussl || !SSL_set_fd(c->ussl, c->ufd) ||
        tls_upstream_prepare(c->ussl, c->host, c->alpn_offer, c->alpn_offer_len, &c->vr) != 0)
        return -1;
    tls_set_app_data(c->ussl, c);
    conn_session_key(c, key, sizeof(key));
    SSL_SESSION *sess = sesscache_get(c->w->sessions, key);
    if (sess && !SSL_set_session(c->ussl, sess))
        return -1;
    SSL_set_connect_state(c->ussl);
    return 0;
}

/* Handshake steps shared by both legs: 1 done, 0 waiting (events set), -1 failed (why). */
static int conn_handshake_step(struct conn *c, SSL *ssl, enum relay_side side, char *why,
                               size_t whylen, unsigned long *err_code)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        conn_watch(c, err == SSL_ERROR_WANT_READ ? RELAY_WANT_READ(side) : RELAY_WANT_WRITE(side));
        return 0;
    }
    *err_code = ERR_peek_error(); /* 0: the peer just closed */
    tls_error_reason(err, why, whylen);
    return -1;
}

static void conn_upstream_verified(struct conn *c)
{
    c->upstream_tls_done = true;
    /* A resumed session skips the verify callback: its certificate and result come from
     * the session, which was only cached after a successful verification. */
    if (SSL_session_reused(c->ussl) && !c->vr.leaf) {
        c->vr.leaf = SSL_get1_peer_certificate(c->ussl);
        c->vr.error = (int)SSL_get_verify_result(c->ussl);
    }
    c->up_version = SSL_version(c->ussl);
    c->leaf = mint_leaf_for(c->w->mint, SSL_get0_peer_certificate(c->ussl), c->host);
    if (!c->leaf) {
        conn_fail(c, "upstream_handshake", "cannot forge a certificate");
        return;
    }
    c->state = CONN_CLIENT_TLS;
}

static void conn_do_upstream_tls(struct conn *c)
{
    char why[160];
    if (!c->ussl && conn_upstream_tls_start(c) != 0) {
        conn_fail(c, "upstream_handshake", "out of memory");
        return;
    }
    unsigned long err_code;
    int rc = conn_handshake_step(c, c->ussl, RELAY_UPSTREAM, why, sizeof(why), &err_code);
    if (rc == 0)
        return;
    if (rc > 0) {
        conn_upstream_verified(c);
        return;
    }
    if (c->vr.error != X509_V_OK)
        snprintf(why, sizeof(why), "%s", X509_verify_cert_error_string(c->vr.error));
    conn_upstream_failed(c, "upstream_handshake", why);
}

/* The upstream cannot be trusted or reached: the client must never get the origin's content
 * under a trusted certificate. It gets a leaf naming only what it asked for, then a 502 page
 * that says what failed, or a handshake alert when it does not speak HTTP/1.1. */
static void conn_upstream_failed(struct conn *c, const char *stage, const char *reason)
{
    conn_set_error(c, stage, reason);
    if (c->action == CONNLOG_HTTP) {
        conn_proxy_refuse(c, 502, reason);
        return;
    }
    if (c->action != CONNLOG_INTERCEPT) {
        c->closing = true;
        return;
    }
    c->upstream_failed = true;
    /* HTTP clients offer ALPN; one that does not offer http/1.1 cannot read the page. */
    c->fail_with_alert = !clienthello_alpn_list_has(c->alpn_offer, c->alpn_offer_len, "http/1.1");
    conn_watch(c, c->watching & (RELAY_WANT_READ(RELAY_CLIENT) | RELAY_WANT_WRITE(RELAY_CLIENT)));
    if (!c->fail_with_alert && !(c->leaf = mint_leaf_for_name(c->w->mint, c->host))) {
        c->closing = true;
        return;
    }
    c->up_version = 0;
    c->state = CONN_CLIENT_TLS;
    conn_timer_ms(c, conn_cfg(c)->handshake_timeout_ms);
}

/* ---- the client handshake ---- */

/* The client refused our certificate: an alert saying so, or a close right after it. */
static bool conn_is_refusal(unsigned long err)
{
    int reason = ERR_GET_REASON(err);
    return err == 0 || reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
           reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
           reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
           reason == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

static void conn_do_client_tls(struct conn *c)
{
    char why[160];
    unsigned long err_reason = 0;
    int rc = conn_handshake_step(c, c->cssl, RELAY_CLIENT, why, sizeof(why), &err_reason);
    if (rc == 0)
        return;
    if (rc < 0) {
        /* A client refusing the forged certificate is its right, not our error: INFO. */
        LOG_DEBUGF("conn %llu: client handshake failed: %s", (unsigned long long)c->id, why);
        if (conn_is_refusal(err_reason))
            conn_note_refusal(c);
        conn_fail(c, "client_handshake", c->fail_with_alert ? "upstream failed; alert sent" : why);
        return;
    }
    c->client_tls_done = true;
    mint_leaf_release(c->leaf);
    c->leaf = NULL;
    if (c->upstream_failed || c->block_page) {
        c->state = CONN_FAIL_READ;
        return;
    }
    c->state = CONN_RELAY;
    conn_timer_ms(c, conn_cfg(c)->idle_timeout_ms);
}

/* ---- the error page after an upstream failure ---- */

/* in, escaped, into out (size bytes, NUL-terminated; what does not fit is left out). */
static void html_escape(const char *in, char *out, size_t size)
{
    struct html_out o = {out, size, 0, false};
    html_escaped(&o, in);
    out[o.len] = '\0';
}

/* The response head for a local page; takes the body (malloc'd) and builds c->page. */
static void conn_set_page(struct conn *c, int status, const char *body, size_t blen)
{
    size_t cap = blen + 512;
    if (!(c->page = malloc(cap)))
        return;
    int hlen = snprintf(c->page, cap,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                        "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n"
                        "X-Sluice-Error: %s: %.200s\r\n\r\n",
                        status, status == 403 ? "Forbidden" : "Bad Gateway", blen,
                        c->err_stage ? c->err_stage : "policy",
                        c->err_stage ? c->err_reason : (c->rule ? c->rule : "default"));
    memcpy(c->page + hlen, body, blen);
    c->page_len = (size_t)hlen + blen;
    c->page_off = 0;
}

static void conn_build_fail_page(struct conn *c)
{
    char name[600], reason[500], body[2048];
    html_escape(c->host ? c->host : "", name, sizeof(name));
    html_escape(c->err_reason, reason, sizeof(reason));
    int blen = snprintf(
        body, sizeof(body),
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sluice: cannot connect "
        "securely to %s</title></head>\n<body><h1>Cannot connect securely to %s</h1>\n"
        "<p>The TLS inspection gateway on this network (sluice) did not connect you to this "
        "site, because connecting to it failed or its identity could not be verified:</p>\n"
        "<p><strong>%s</strong></p>\n<p>Stage: %s. Connection %llu.</p>\n"
        "<p>Nothing from the site was passed on to you. If this keeps happening, tell the "
        "network's operator.</p></body></html>\n",
        name, name, reason, c->err_stage, (unsigned long long)c->id);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)strlen(body);
    conn_set_page(c, 502, body, (size_t)blen);
}

/* The operator's block page for the request in req[0..n) ("GET /path HTTP/1.1 ..."). */
static void conn_build_block_page(struct conn *c, const char *req, size_t n)
{
    char url[1024], ref[24], client[ADDR_TEXT_MAX], body[16384];
    const char *sp = memchr(req, ' ', n), *path = "/";
    int plen = 1;
    if (sp) {
        const char *end = memchr(sp + 1, ' ', n - (size_t)(sp + 1 - req));
        if (end && end - sp - 1 < 900) {
            path = sp + 1;
            plen = (int)(end - sp - 1);
        }
    }
    snprintf(url, sizeof(url), "https://%s%.*s", c->host ? c->host : "", plen, path);
    snprintf(ref, sizeof(ref), "%llu", (unsigned long long)c->id);
    addr_format((struct sockaddr *)&c->client, client, sizeof(client));
    struct policy_page_vars vars = {c->rule, ref, c->host, url, client};
    long blen = policy_render_block_page(conn_cfg(c)->policy, &vars, body, sizeof(body));
    conn_set_page(c, 403, body, blen > 0 ? (size_t)blen : 0);
}

/* Reads the client's request (so closing does not reset it), then answers. */
static void conn_do_fail_read(struct conn *c)
{
    char buf[4096];
    ERR_clear_error();
    int n = SSL_read(c->cssl, buf, sizeof(buf));
    if (n <= 0) {
        int err = SSL_get_error(c->cssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            conn_watch(c, err == SSL_ERROR_WANT_READ ? RELAY_WANT_READ(RELAY_CLIENT)
                                                     : RELAY_WANT_WRITE(RELAY_CLIENT));
            return;
        }
        c->closing = true;
        return;
    }
    c->relay.dir[0].bytes += (uint64_t)n;
    if (c->block_page)
        conn_build_block_page(c, buf, (size_t)n);
    else
        conn_build_fail_page(c);
    c->state = c->page ? CONN_FAIL_WRITE : c->state;
    c->closing = !c->page;
}

static void conn_do_fail_write(struct conn *c)
{
    while (c->page_off < c->page_len) {
        ERR_clear_error();
        int n = SSL_write(c->cssl, c->page + c->page_off, (int)(c->page_len - c->page_off));
        if (n <= 0) {
            int err = SSL_get_error(c->cssl, n);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                conn_watch(c, err == SSL_ERROR_WANT_WRITE ? RELAY_WANT_WRITE(RELAY_CLIENT)
                                                          : RELAY_WANT_READ(RELAY_CLIENT));
                return;
            }
            break;
        }
        c->page_off += (size_t)n;
    }
    SSL_shutdown(c->cssl);
    shutdown(c->cfd, SHUT_WR);
    c->state = CONN_FAIL_LINGER;
    conn_linger_start(c);
}

/* One read from the client while lingering: over TLS after a page sent over TLS, else from
 * the socket. Bytes (> 0), 0 at the client's end (or a failure), -1 when none have come. */
static int conn_linger_read(struct conn *c, char *buf, size_t len)
{
    if (c->cssl) {
        ERR_clear_error();
        int n = SSL_read(c->cssl, buf, (int)len);
        if (n > 0)
            return n;
        return SSL_get_error(c->cssl, n) == SSL_ERROR_WANT_READ ? -1 : 0;
    }
    ssize_t n = recv(c->cfd, buf, len, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : 0;
    return (int)n;
}

/* Drops what the client still sends after the page (the rest of its request) until it
 * closes, as the relay does after a reply of its own (relay_lingering): closing with bytes
 * unread would reset the connection, maybe before the client read the page. */
static void conn_do_fail_linger(struct conn *c)
{
    char buf[16384];
    for (;;) {
        int n = conn_linger_read(c, buf, sizeof(buf));
        if (n < 0) {
            conn_watch(c, RELAY_WANT_READ(RELAY_CLIENT));
            return;
        }
        if (n == 0)
            break;
        c->relay.dir[0].bytes += (uint64_t)n;
        if ((c->relay.discarded += (uint64_t)n) >= RELAY_LINGER_MAX)
            break;
    }
    ERR_clear_error();
    c->closing = true;
}

/* ---- relaying ---- */


/* The HTTP layer of an intercepted connection whose HTTP is inspected (HTTP rules, request
 * log): h2 when both legs agreed on it, HTTP/1.1 when they agreed on http/1.1 (or on nothing,
 * on the HTTPS port); 0 otherwise: other protocols pass as they are. */
static int conn_http_version(const struct conn *c)
{
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    if (c->action != CONNLOG_INTERCEPT || !conn_inspects_http(c))
        return 0;
    SSL_get0_alpn_selected(c->cssl, &alpn, &alpn_len);
    if (alpn_len == 2 && memcmp(alpn, "h2", 2) == 0)
        return 2;
    if (alpn_len)
        return alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0;
    return c->have_dst && addr_port((struct sockaddr *)&c->dst) == 443;
}

/* Puts the HTTP layer between the legs: the HTTP/1.1 inspector or the HTTP/2 bridge. */
static int conn_http_attach(struct conn *c)
{
    int version = conn_http_version(c);
    if (version == 2) {
        if (!(c->h2 = h2_bridge_new(&conn_h2_hooks, c, NULL)))
            return -1;
        relay_bridge_h2(&c->relay, c->h2);
        if (c->w->draining)
            h2_bridge_shutdown(c->h2);
    } else if (version == 1) {
        if (!(c->http = http1_new(&conn_http_hooks, c)))
            return -1;
        relay_inspect_http1(&c->relay, c->http);
    }
    return 0;
}

static void conn_relay_start(struct conn *c)
{
    c->relay_started = true;
    event_base_gettimeofday_cached(c->w->base, &c->last_active);
    relay_init(&c->relay, c->w->pool, c->cfd, c->cssl, c->ufd, c->ussl);
    if (conn_http_attach(c) != 0) {
        conn_fail(c, "relay", "out of memory");
        return;
    }
    if (c->fwd_head) {
        if (relay_preload_up(&c->relay, c->fwd_head, c->fwd_len) != 0)
            conn_fail(c, "proxy_request", "request head too large");
        free(c->fwd_head);
        c->fwd_head = NULL;
    }
}

/* Gateway shutdown: an HTTP/2 connection is told GOAWAY on both legs, so that its streams in
 * flight finish and no new one starts; other connections finish on their own. */
void conn_drain_all(struct worker *w)
{
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        if (!c->h2 || c->closing)
            continue;
        h2_bridge_shutdown(c->h2);
        conn_advance(c);
        if (c->closing)
            conn_close_now(c);
    }
}

static void conn_do_relay(struct conn *c)
{
    char why[160];
    if (!c->relay_started)
        conn_relay_start(c);
    if (c->closing)
        return;
    enum relay_status st = relay_pump(&c->relay, why, sizeof(why));
    if (c->relay.progressed)
        event_base_gettimeofday_cached(c->w->base, &c->last_active);
    if (st == RELAY_CONTINUE) {
        if (!c->lingering && relay_lingering(&c->relay))
            conn_linger_start(c);
        conn_watch(c, c->relay.want);
        return;
    }
    if (st == RELAY_FAILED)
        conn_set_error(c, "relay", why);
    else if (c->http && http1_error(c->http))
        conn_set_error(c, "http", http1_error(c->http));
    c->closing = true;
}

/* ---- driving ---- */

static void conn_advance(struct conn *c)
{
    enum conn_state before;
    do {
        before = c->state;
        if (c->closing)
            return;
        switch (c->state) {
        case CONN_PROXY_REQUEST:
            conn_do_proxy_request(c);
            break;
        case CONN_PEEK:
            conn_do_peek(c);
            break;
        case CONN_DIAL:
            conn_do_dial(c);
            break;
        case CONN_UPSTREAM_TLS:
            conn_do_upstream_tls(c);
            break;
        case CONN_CLIENT_TLS:
            conn_do_client_tls(c);
            break;
        case CONN_RELAY:
            conn_do_relay(c);
            break;
        case CONN_FAIL_READ:
            conn_do_fail_read(c);
            break;
        case CONN_FAIL_WRITE:
            conn_do_fail_write(c);
            break;
        case CONN_FAIL_LINGER:
            conn_do_fail_linger(c);
            break;
        }
    } while (c->state != before);
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->relay_started && (what & EV_READ))
        relay_note_ready(&c->relay, RELAY_WANT_READ(fd == c->cfd ? RELAY_CLIENT : RELAY_UPSTREAM));
    conn_advance(c);
    if (c->closing)
        conn_close_now(c);
}

static bool conn_idle_expired(struct conn *c)
{
    struct timeval now, idle;
    event_base_gettimeofday_cached(c->w->base, &now);
    timersub(&now, &c->last_active, &idle);
    unsigned long idle_ms = (unsigned long)idle.tv_sec * 1000 + (unsigned long)idle.tv_usec / 1000;
    unsigned limit = conn_cfg(c)->idle_timeout_ms;
    if (idle_ms >= limit)
        return true;
    conn_timer_ms(c, limit - (unsigned)idle_ms);
    return false;
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    switch (c->state) {
    case CONN_PROXY_REQUEST:
        conn_fail(c, "proxy_request", "timeout waiting for the request");
        break;
    case CONN_PEEK:
        if (!c->got_bytes) { /* a silent client: the server may speak first */
            conn_start_tcp(c);
            conn_advance(c);
        } else {
            conn_fail(c, "client_hello", "timeout waiting for the ClientHello");
        }
        break;
    case CONN_DIAL: {
        char why[64];
        const char *stage = c->dial ? dial_stage(c->dial) : "connect";
        snprintf(why, sizeof(why), "timeout (%s)", strcmp(stage, "dns") == 0 ? "resolving" : "connecting");
        dial_cancel(c->dial);
        c->dial = NULL;
        conn_upstream_failed(c, stage, why);
        conn_advance(c);
        break;
    }
    case CONN_UPSTREAM_TLS:
        conn_upstream_failed(c, "upstream_handshake", "timeout during the TLS handshake");
        conn_advance(c);
        break;
    case CONN_CLIENT_TLS:
    case CONN_FAIL_READ:
    case CONN_FAIL_WRITE:
        conn_fail(c, "client_handshake", "timeout during the TLS handshake");
        break;
    case CONN_RELAY:
        if (c->lingering)
            c->closing = true;
        else if (conn_idle_expired(c))
            conn_fail(c, "relay", "idle timeout");
        break;
    case CONN_FAIL_LINGER:
        c->closing = true;
        break;
    }
    if (c->closing)
        conn_close_now(c);
}

/* ---- birth and death ---- */

static void conn_link(struct conn *c)
{
    struct worker *w = c->w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    worker_conn_added(w);
}

static void conn_unlink(struct conn *c)
{
    struct worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    worker_conn_removed(w);
}

static void conn_destroy(struct conn *c)
{
    conn_watch(c, 0);
    evtimer_del(&c->timer);
    dial_cancel(c->dial);
    relay_release(&c->relay);
    http1_free(c->http);
    h2_bridge_free(c->h2);
    conn_http_release(c);
    SSL_free(c->cssl);
    SSL_free(c->ussl);
    if (c->cfd >= 0)
        close(c->cfd);
    if (c->ufd >= 0)
        close(c->ufd);
    mint_leaf_release(c->leaf);
    X509_free(c->vr.leaf);
    free(c->host);
    free(c->target);
    free(c->sni);
    free(c->alpn_offer);
    free(c->fwd_head);
    free(c->page);
    snapshot_unref(c->snap);
    conn_unlink(c);
    free(c);
}

static void conn_close_now(struct conn *c)
{
    if (c->err_stage && log_enabled(LOG_DEBUG)) {
        char addr[ADDR_TEXT_MAX];
        log_msg(LOG_DEBUG, "conn %llu from %s (%s): %s: %s", (unsigned long long)c->id,
                addr_format((struct sockaddr *)&c->client, addr, sizeof(addr)),
                c->host ? c->host : "-", c->err_stage, c->err_reason);
    }
    conn_log_record(c);
    conn_destroy(c);
}

void conn_close_all(struct worker *w, const char *reason)
{
    while (w->conns) {
        struct conn *c = w->conns;
        conn_set_error(c, "relay", reason);
        conn_close_now(c);
    }
}

static int conn_learn_destination(struct conn *c)
{
    socklen_t len;
    const struct config *cfg = conn_cfg(c);
    if (cfg->mode == CONFIG_MODE_FIXED) {
        c->target = strdup(cfg->fixed_host);
        c->port = cfg->fixed_port;
        return c->target ? 0 : -1;
    }
    if (cfg->mode != CONFIG_MODE_TRANSPARENT)
        return 0;
    if (listener_original_dst(c->cfd, &c->dst, &len) != 0) {
        conn_set_error(c, "accept",
                       "not redirected: the connection was addressed to sluice itself, which "
                       "transparent mode refuses so as not to loop");
        return -1;
    }
    c->have_dst = true;
    return 0;
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                 const struct config_listen *listen)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_msg(LOG_WARN, "out of memory accepting a connection");
        close(fd);
        return;
    }
    c->w = w;
    c->snap = snapshot_ref(w->snap);
    c->id = worker_next_conn_id(w);
    c->cfd = fd;
    c->ufd = -1;
    c->listen = listen;
    memcpy(&c->client, peer, peer_len < sizeof(c->client) ? peer_len : sizeof(c->client));
    gettimeofday(&c->started, NULL);
    conn_link(c);
    event_assign(&c->cev_w, w->base, fd, EV_WRITE | EV_PERSIST, conn_on_io, c);
    evtimer_assign(&c->timer, w->base, conn_on_timer, c);
    event_assign(&c->cev_r, w->base, fd, EV_READ | EV_PERSIST | EV_ET, conn_on_io, c);
    c->peeking = true;
    if (conn_learn_destination(c) != 0) {
        conn_close_now(c);
        return;
    }
    bool explicit = conn_cfg(c)->mode == CONFIG_MODE_EXPLICIT;
    c->state = explicit ? CONN_PROXY_REQUEST : CONN_PEEK;
    conn_timer_ms(c, explicit ? conn_cfg(c)->handshake_timeout_ms
                              : conn_cfg(c)->first_byte_timeout_ms);
    conn_advance(c);
    if (c->closing)
        conn_close_now(c);
}
