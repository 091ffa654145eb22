/* test_relay: the relay's read readiness with TLS read-ahead, over socketpairs: bytes OpenSSL
 * already holds are relayed without waiting on the socket, a leg whose socket was found empty
 * is not read again until it is reported readable, and a bulk burst goes through in one pump.
 * And its idle memory: OpenSSL's record buffers are not left behind after a post-handshake
 * message (session ticket, key update), counted through CRYPTO_set_mem_functions. And its
 * linger after a reply of the gateway's own: what the client still sends is read and dropped
 * until it closes (at most RELAY_LINGER_MAX), so that closing does not reset the reply away. */
#include "relay.h"

#include "http1.h"

#include <fcntl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* OpenSSL's allocations of a record buffer's size (16 KiB and more) that are still live. */
#define BIG_ALLOC 16000
static long big_live;

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = malloc(n);
    big_live += p && n >= BIG_ALLOC;
    return p;
}

static void *count_realloc(void *q, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    big_live -= q && malloc_usable_size(q) >= BIG_ALLOC;
    void *p = realloc(q, n);
    big_live += p && n >= BIG_ALLOC;
    return p;
}

static void count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    big_live -= p && malloc_usable_size(p) >= BIG_ALLOC;
    free(p);
}

/* The relay's client leg is a TLS server on cp[0] (the test's TLS client on cp[1]); its
 * upstream leg is plain TCP on up[0] (the test reads up[1]). */
struct fixture {
    SSL_CTX *sctx, *cctx;
    SSL *relay_ssl, *peer_ssl;
    int cp[2], up[2];
    struct bufpool *pool;
    struct relay r;
};

static X509 *make_cert(EVP_PKEY *key)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    return x;
}

/* As tls.c sets both contexts up: read-ahead and released buffers. */
static SSL_CTX *make_ctx(const SSL_METHOD *m)
{
    SSL_CTX *ctx = SSL_CTX_new(m);
    assert_non_null(ctx);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *cert = make_cert(key);
    f->sctx = make_ctx(TLS_server_method());
    f->cctx = make_ctx(TLS_client_method());
    assert_int_equal(SSL_CTX_use_certificate(f->sctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(f->sctx, key), 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->cp), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->up), 0);
    for (int i = 0; i < 2; i++) {
        nonblock(f->cp[i]);
        nonblock(f->up[i]);
    }
    f->relay_ssl = SSL_new(f->sctx);
    f->peer_ssl = SSL_new(f->cctx);
    SSL_set_fd(f->relay_ssl, f->cp[0]);
    SSL_set_fd(f->peer_ssl, f->cp[1]);
    SSL_set_accept_state(f->relay_ssl);
    SSL_set_connect_state(f->peer_ssl);
    int done = 0;
    for (int i = 0; i < 100 && done != 3; i++) {
        if (SSL_do_handshake(f->relay_ssl) == 1)
            done |= 1;
        if (SSL_do_handshake(f->peer_ssl) == 1)
            done |= 2;
    }
    assert_int_equal(done, 3);
    f->pool = bufpool_new(4);
    relay_init(&f->r, f->pool, f->cp[0], f->relay_ssl, f->up[0], NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    relay_release(&f->r);
    bufpool_free(f->pool);
    SSL_free(f->relay_ssl);
    SSL_free(f->peer_ssl);
    SSL_CTX_free(f->sctx);
    SSL_CTX_free(f->cctx);
    for (int i = 0; i < 2; i++) {
        close(f->cp[i]);
        close(f->up[i]);
    }
    free(f);
    return 0;
}

static size_t drain_upstream(struct fixture *f, uint8_t *out, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = recv(f->up[1], out + got, cap - got, 0)) > 0)
        got += (size_t)n;
    return got;
}

static void pump_ok(struct fixture *f)
{
    char err[160] = "";
    assert_int_equal(relay_pump(&f->r, err, sizeof(err)), RELAY_CONTINUE);
}

/* Two records that arrive in one read: the second is in OpenSSL's read-ahead buffer, not in
 * the socket, and must be relayed by the same pump (waiting on the socket would stall). */
static void test_relay_drains_read_ahead_before_waiting(void **state)
{
    struct fixture *f = *state;
    pump_ok(f); /* the post-handshake pump: nothing yet */
    assert_int_equal(SSL_write(f->peer_ssl, "first record;", 13), 13);
    assert_int_equal(SSL_write(f->peer_ssl, "second record", 13), 13);
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    pump_ok(f);
    uint8_t out[64];
    size_t n = drain_upstream(f, out, sizeof(out));
    assert_int_equal(n, 26);
    assert_memory_equal(out, "first record;second record", 26);
    assert_true(f->r.want & RELAY_WANT_READ(RELAY_CLIENT));
}

/* Once a read found the socket empty, the leg is read again only after relay_note_ready. */
static void test_relay_waits_for_readiness_after_empty_read(void **state)
{
    struct fixture *f = *state;
    pump_ok(f);
    assert_int_equal(SSL_write(f->peer_ssl, "later", 5), 5);
    pump_ok(f); /* no readiness reported: no read */
    uint8_t out[16];
    assert_int_equal(drain_upstream(f, out, sizeof(out)), 0);
    assert_true(f->r.want & RELAY_WANT_READ(RELAY_CLIENT));
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    pump_ok(f);
    assert_int_equal(drain_upstream(f, out, sizeof(out)), 5);
    assert_memory_equal(out, "later", 5);
}

/* A burst of full records larger than one read-ahead buffer goes through in one pump. */
static void test_relay_moves_a_burst_in_one_pump(void **state)
{
    struct fixture *f = *state;
    static uint8_t in[3 * 16384], out[sizeof(in) + 1];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 3; i++)
        assert_int_equal(SSL_write(f->peer_ssl, in + i * 16384, 16384), 16384);
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    pump_ok(f);
    assert_int_equal(drain_upstream(f, out, sizeof(out)), sizeof(in));
    assert_memory_equal(out, in, sizeof(in));
}

/* The plain leg: a short recv means the socket was empty, so the next pump waits for it. */
static void test_relay_tcp_short_read_waits(void **state)
{
    struct fixture *f = *state;
    pump_ok(f);
    assert_int_equal(send(f->up[1], "answer", 6, 0), 6);
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_UPSTREAM));
    pump_ok(f);
    assert_false(f->r.readable & RELAY_WANT_READ(RELAY_UPSTREAM));
    assert_true(f->r.want & RELAY_WANT_READ(RELAY_UPSTREAM));
    char buf[16];
    int n = SSL_read(f->peer_ssl, buf, sizeof(buf));
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "answer", 6);
}

/* Sends what the peer's SSL has buffered (a post-handshake message) without app data. */
static void peer_flush(SSL *peer)
{
    for (int i = 0; i < 10 && SSL_do_handshake(peer) != 1; i++)
        ;
}

/* A key update from the client after the relay first waited: the relay's leg reads it (no
 * application data comes out), and OpenSSL sets up both record buffers to handle it, which
 * SSL_MODE_RELEASE_BUFFERS would keep until the next write of application data: an idle
 * connection kept 16.5 KiB. The relay frees them at its next wait. */
static void test_relay_frees_buffers_after_a_key_update(void **state)
{
    struct fixture *f = *state;
    pump_ok(f); /* the first wait: the handshake's buffers go */
    assert_int_equal(SSL_key_update(f->peer_ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    peer_flush(f->peer_ssl);
    long before = big_live;
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    pump_ok(f);
    assert_int_equal(big_live, before);
    /* and the connection still works, under the new keys */
    assert_int_equal(SSL_write(f->peer_ssl, "after", 5), 5);
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    pump_ok(f);
    uint8_t out[16];
    assert_int_equal(drain_upstream(f, out, sizeof(out)), 5);
    assert_memory_equal(out, "after", 5);
}

/* The same for a leg that is a TLS client and gets a session ticket late, as the upstream leg
 * does from origins that send their TLS 1.3 tickets after the handshake: the idle workload of
 * the benchmark held 38.6 KiB per connection with the ticket's write buffer, 31.4 without. */
static void test_relay_frees_buffers_after_a_late_session_ticket(void **state)
{
    struct fixture *f = *state;
    relay_release(&f->r);
    /* the relay now holds the TLS client side (cp[1]) as its upstream leg */
    relay_init(&f->r, f->pool, f->up[0], NULL, f->cp[1], f->peer_ssl);
    pump_ok(f);
    assert_int_equal(SSL_new_session_ticket(f->relay_ssl), 1);
    peer_flush(f->relay_ssl);
    long before = big_live;
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_UPSTREAM));
    pump_ok(f);
    assert_int_equal(big_live, before);
}

/* As conn_on_upstream_session does: the leg that got a ticket tells its relay. */
static struct relay *ticket_relay;
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    (void)sess;
    relay_note_post_handshake(ticket_relay, RELAY_UPSTREAM);
    return 0;
}

/* A ticket that arrives together with application data: the read returns data, so only the
 * new-session callback tells the relay that OpenSSL set buffers up for the ticket. */
static void test_relay_frees_buffers_after_a_ticket_with_data(void **state)
{
    struct fixture *f = *state;
    relay_release(&f->r);
    relay_init(&f->r, f->pool, f->up[0], NULL, f->cp[1], f->peer_ssl);
    ticket_relay = &f->r;
    SSL_CTX_set_session_cache_mode(f->cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(f->cctx, on_new_session);
    pump_ok(f);
    assert_int_equal(SSL_new_session_ticket(f->relay_ssl), 1);
    assert_int_equal(SSL_write(f->relay_ssl, "response", 8), 8); /* the ticket goes first */
    long before = big_live;
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_UPSTREAM));
    pump_ok(f);
    uint8_t out[16];
    assert_int_equal(recv(f->up[1], out, sizeof(out), 0), 8);
    assert_memory_equal(out, "response", 8);
    assert_int_equal(big_live, before);
}

/* The client (peer) sends TLS application data; writes until the socket pair is full. */
static size_t peer_send(struct fixture *f, const void *data, size_t len)
{
    int n = SSL_write(f->peer_ssl, data, (int)len);
    return n > 0 ? (size_t)n : 0;
}

/* Reads what the relay sent the client: the reply, then close_notify (returns at EOF). */
static size_t peer_read_reply(struct fixture *f, char *out, size_t cap)
{
    size_t got = 0;
    int n;
    while (got < cap && (n = SSL_read(f->peer_ssl, out + got, (int)(cap - got))) > 0)
        got += (size_t)n;
    out[got < cap ? got : cap - 1] = 0;
    return got;
}

/* Puts an HTTP/1.1 inspector in the relay (the caller frees it), has the client send a head
 * with ambiguous framing, and pumps once: the relay answers 400 and closes its way out. */
static struct http1 *send_refused_head(struct fixture *f, const char *head)
{
    struct http1 *h = http1_new(NULL, NULL);
    assert_non_null(h);
    relay_inspect_http1(&f->r, h);
    assert_int_equal(peer_send(f, head, strlen(head)), strlen(head));
    pump_ok(f);
    return h;
}

/* A request with ambiguous framing gets the 400 at once; the body the client goes on sending
 * is read and dropped (never sent upstream), the relay lingers until the client closes, and
 * only then finishes. Without the linger the relay would finish right after the reply with
 * the body unread, and closing would reset the connection. */
static void test_relay_lingers_after_its_reply_until_the_client_closes(void **state)
{
    struct fixture *f = *state;
    struct http1 *h = send_refused_head(f, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                           "Transfer-Encoding: chunked\r\n\r\n");
    assert_true(relay_lingering(&f->r));
    char reply[4096];
    peer_read_reply(f, reply, sizeof(reply));
    assert_non_null(strstr(reply, "HTTP/1.1 400 "));
    assert_true(SSL_get_shutdown(f->peer_ssl) & SSL_RECEIVED_SHUTDOWN);

    static char body[8192];
    memset(body, 'b', sizeof(body));
    for (int i = 0; i < 8; i++) {
        assert_int_equal(peer_send(f, body, sizeof(body)), sizeof(body));
        relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
        pump_ok(f);
        assert_true(relay_lingering(&f->r));
    }
    assert_int_equal(f->r.discarded, 8 * sizeof(body));
    uint8_t up[256];
    assert_int_equal(drain_upstream(f, up, sizeof(up)), 0);

    SSL_shutdown(f->peer_ssl);
    relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
    char err[160] = "";
    assert_int_equal(relay_pump(&f->r, err, sizeof(err)), RELAY_FINISHED);
    assert_false(relay_lingering(&f->r));
    relay_release(&f->r);
    http1_free(h);
}

/* A client that keeps sending after the reply is read up to RELAY_LINGER_MAX, then the relay
 * finishes without waiting for it. */
static void test_relay_linger_stops_after_its_byte_limit(void **state)
{
    struct fixture *f = *state;
    struct http1 *h = send_refused_head(f, "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                           "Content-Length: 2\r\n\r\n");
    static char body[16384];
    memset(body, 'b', sizeof(body));
    char err[160] = "";
    enum relay_status st = RELAY_CONTINUE;
    size_t sent = 0;
    while (st == RELAY_CONTINUE && sent < 2 * (size_t)RELAY_LINGER_MAX) {
        sent += peer_send(f, body, sizeof(body));
        relay_note_ready(&f->r, RELAY_WANT_READ(RELAY_CLIENT));
        st = relay_pump(&f->r, err, sizeof(err));
    }
    assert_int_equal(st, RELAY_FINISHED);
    assert_true(f->r.discarded >= RELAY_LINGER_MAX);
    assert_true(f->r.discarded < (size_t)RELAY_LINGER_MAX + sizeof(body));
    relay_release(&f->r);
    http1_free(h);
}

int main(void)
{
    /* before any OpenSSL allocation */
    assert_int_equal(CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free), 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_relay_drains_read_ahead_before_waiting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relay_waits_for_readiness_after_empty_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relay_moves_a_burst_in_one_pump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_tcp_short_read_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_frees_buffers_after_a_key_update, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relay_frees_buffers_after_a_late_session_ticket, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relay_lingers_after_its_reply_until_the_client_closes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_linger_stops_after_its_byte_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relay_frees_buffers_after_a_ticket_with_data, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
