/* test_sesscache: the upstream session cache with real sessions from in-memory handshakes:
 * single-use TLS 1.3 tickets, reusable TLS 1.2 sessions, several per key, its bound, and the
 * expiries. */
#include "sesscache.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define KEY "localhost|127.0.0.1:443"
#define WEEK (7 * 24 * 3600L)

static EVP_PKEY *server_key;
static SSL_SESSION *got[8]; /* sessions the client's new-session callback received */
static int n_got;

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (n_got == (int)(sizeof(got) / sizeof(got[0])))
        return 0;
    got[n_got++] = sess;
    return 1;
}

static X509 *make_cert(long valid_secs)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), valid_secs);
    X509_set_pubkey(x, server_key);
    assert_true(X509_sign(x, server_key, EVP_sha256()) > 0);
    return x;
}

/* Moves what one side wrote into the other's read BIO. */
static void pump(BIO *from, BIO *to)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(to, buf, n), n);
}

/* A full handshake with a server whose certificate is valid for cert_secs more; the client
 * reads the tickets that follow. Returns the session the client's callback got last (a new
 * reference), and frees the others. */
static SSL_SESSION *handshake(int version, long cert_secs)
{
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    X509 *cert = make_cert(cert_secs);
    assert_non_null(sctx);
    assert_non_null(cctx);
    assert_true(SSL_CTX_use_certificate(sctx, cert));
    assert_true(SSL_CTX_use_PrivateKey(sctx, server_key));
    SSL_CTX_set_timeout(sctx, WEEK); /* the ticket lifetime, in TLS 1.3 */
    SSL_CTX_set_max_proto_version(sctx, version);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(cctx, on_new_session);
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    SSL_set_bio(s, s_in, s_out);
    SSL_set_bio(c, c_in, c_out);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    n_got = 0;
    int c_done = 0, s_done = 0;
    for (int i = 0; i < 10 && !(c_done && s_done); i++) {
        c_done = c_done || SSL_do_handshake(c) == 1;
        pump(c_out, s_in);
        s_done = s_done || SSL_do_handshake(s) == 1;
        pump(s_out, c_in);
    }
    assert_true(c_done && s_done);
    char byte;
    assert_true(SSL_read(c, &byte, 1) <= 0); /* processes the TLS 1.3 tickets, if any */
    assert_true(n_got > 0);
    for (int i = 0; i < n_got - 1; i++)
        SSL_SESSION_free(got[i]);
    SSL_SESSION *last = got[n_got - 1];
    assert_int_equal(SSL_SESSION_get_protocol_version(last), version);
    SSL_shutdown(c); /* freed without close_notify, c would mark its session spent */
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    X509_free(cert);
    ERR_clear_error();
    return last;
}

static int group_setup(void **state)
{
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!kctx || EVP_PKEY_keygen_init(kctx) <= 0 ||
        EVP_PKEY_CTX_set_group_name(kctx, "P-256") <= 0 ||
        EVP_PKEY_generate(kctx, &server_key) <= 0)
        return -1;
    EVP_PKEY_CTX_free(kctx);
    return 0;
}

static int group_teardown(void **state)
{
    EVP_PKEY_free(server_key);
    return 0;
}

/* The session id (a TLS 1.3 client's is a hash of its ticket): survives SSL_SESSION_dup. */
static void id_of(const SSL_SESSION *s, unsigned char out[32])
{
    unsigned int len = 0;
    const unsigned char *id = SSL_SESSION_get_id(s, &len);
    memset(out, 0, 32);
    memcpy(out, id, len > 32 ? 32 : len);
}

static void test_tls13_session_is_handed_out_once(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, WEEK), now);
    assert_int_equal(sesscache_count(c, KEY), 1);
    SSL_SESSION *s = sesscache_get_at(c, KEY, now);
    assert_non_null(s);
    assert_true(SSL_SESSION_is_resumable(s));
    assert_non_null(SSL_SESSION_get0_peer(s));
    assert_int_equal(sesscache_count(c, KEY), 0);
    assert_null(sesscache_get_at(c, KEY, now));
    sesscache_free(c);
}

static void test_tls12_session_stays_for_the_next_connection(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    sesscache_put_at(c, KEY, handshake(TLS1_2_VERSION, WEEK), now);
    SSL_SESSION *a = sesscache_get_at(c, KEY, now), *b = sesscache_get_at(c, KEY, now);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_int_equal(sesscache_count(c, KEY), 1);
    sesscache_free(c);
}

static void test_keeps_a_few_per_key_and_hands_out_the_newest_first(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    unsigned char ids[SESSCACHE_PER_KEY + 1][32], id[32];
    for (int i = 0; i < SESSCACHE_PER_KEY + 1; i++) {
        SSL_SESSION *s = handshake(TLS1_3_VERSION, WEEK);
        id_of(s, ids[i]);
        sesscache_put_at(c, KEY, s, now);
    }
    assert_int_equal(sesscache_count(c, KEY), SESSCACHE_PER_KEY);
    for (int i = SESSCACHE_PER_KEY; i >= 1; i--) { /* the oldest, ids[0], made room */
        SSL_SESSION *s = sesscache_get_at(c, KEY, now);
        assert_non_null(s);
        id_of(s, id);
        assert_memory_equal(id, ids[i], 32);
    }
    assert_null(sesscache_get_at(c, KEY, now));
    sesscache_free(c);
}

/* The whole cache holds about twice its slot count: once it holds as many sessions as slots,
 * a key that has one replaces its oldest instead of adding. */
static void test_a_full_cache_replaces_instead_of_growing(void **state)
{
    struct sesscache *c = sesscache_new(2);
    time_t now = time(NULL);
    unsigned char newest[32], id[32];
    for (int i = 0; i < 4; i++) {
        SSL_SESSION *s = handshake(TLS1_3_VERSION, WEEK);
        id_of(s, newest);
        sesscache_put_at(c, KEY, s, now);
    }
    assert_int_equal(sesscache_count(c, KEY), 2);
    SSL_SESSION *s = sesscache_get_at(c, KEY, now);
    assert_non_null(s);
    id_of(s, id);
    assert_memory_equal(id, newest, 32);
    sesscache_free(c);
}

static void test_another_key_in_the_same_slot_replaces_it(void **state)
{
    struct sesscache *c = sesscache_new(1);
    time_t now = time(NULL);
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, WEEK), now);
    sesscache_put_at(c, "other|127.0.0.2:443", handshake(TLS1_3_VERSION, WEEK), now);
    assert_int_equal(sesscache_count(c, KEY), 0);
    assert_null(sesscache_get_at(c, KEY, now));
    assert_non_null(sesscache_get_at(c, "other|127.0.0.2:443", now));
    sesscache_free(c);
}

/* Regression: OpenSSL marks a connection's session spent when the connection ends without
 * having sent close_notify (SSL_free) or with a fatal alert, as when an origin closes without
 * close_notify and sluice mirrors the truncation; the cache's copy, from a ticket that
 * arrived intact, must stay usable (it did not: upstream resumption failed every other time
 * against such origins). */
static void test_a_session_its_connection_later_spends_stays_usable(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    SSL_SESSION *s = handshake(TLS1_3_VERSION, WEEK);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_SESSION_up_ref(s); /* the connection's own reference */
    sesscache_put_at(c, KEY, s, now);
    SSL_CTX_remove_session(ctx, s); /* what SSL_free or a fatal alert then does to s */
    assert_false(SSL_SESSION_is_resumable(s));
    SSL_SESSION *got_back = sesscache_get_at(c, KEY, now);
    assert_non_null(got_back);
    assert_true(SSL_SESSION_is_resumable(got_back));
    SSL_SESSION_free(s);
    SSL_CTX_free(ctx);
    sesscache_free(c);
}

static void test_sessions_that_cannot_resume_are_not_stored(void **state)
{
    struct sesscache *c = sesscache_new(16);
    sesscache_put_at(c, KEY, SSL_SESSION_new(), time(NULL)); /* no ticket, no peer */
    assert_int_equal(sesscache_count(c, KEY), 0);
    sesscache_free(c);
}

static void test_expires_with_the_ticket_lifetime(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    SSL_SESSION *s = handshake(TLS1_3_VERSION, WEEK);
    SSL_SESSION_set_timeout(s, 60);
    sesscache_put_at(c, KEY, s, now);
    assert_null(sesscache_get_at(c, KEY, now + 61));
    assert_int_equal(sesscache_count(c, KEY), 0);
    sesscache_free(c);
}

static void test_expires_with_the_certificate(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t now = time(NULL);
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, 600), now);
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, 600), now);
    assert_non_null(sesscache_get_at(c, KEY, now + 590));
    assert_null(sesscache_get_at(c, KEY, now + 610));
    /* an already expired certificate is not stored at all */
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, 600), now + 610);
    assert_int_equal(sesscache_count(c, KEY), 0);
    sesscache_free(c);
}

/* A ticket from a resumed connection is derived from the session that connection offered,
 * ex_data included (OpenSSL dups it): it inherits the time of the full verification, so a
 * chain of resumptions never stretches a verification past the age limit. */
static void test_resumptions_do_not_extend_the_verification(void **state)
{
    struct sesscache *c = sesscache_new(16);
    time_t t0 = time(NULL);
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, WEEK), t0);
    SSL_SESSION *offered = sesscache_get_at(c, KEY, t0 + 3000);
    assert_non_null(offered);
    SSL_SESSION *renewed = SSL_SESSION_dup(offered); /* as OpenSSL makes a new ticket's */
    SSL_SESSION_set_time(renewed, (long)(t0 + 3000));
    sesscache_put_at(c, KEY, renewed, t0 + 3000);
    assert_int_equal(sesscache_count(c, KEY), 1);
    assert_null(sesscache_get_at(c, KEY, t0 + SESSCACHE_MAX_VERIFIED_AGE + 1));
    /* while a session from a new full handshake at t0 + 3000 is good for the full hour */
    sesscache_put_at(c, KEY, handshake(TLS1_3_VERSION, WEEK), t0 + 3000);
    assert_non_null(sesscache_get_at(c, KEY, t0 + SESSCACHE_MAX_VERIFIED_AGE + 1));
    sesscache_free(c);
}

static void test_unknown_key_and_empty_cache(void **state)
{
    struct sesscache *c = sesscache_new(0);
    assert_null(sesscache_get(c, KEY));
    assert_int_equal(sesscache_count(c, KEY), 0);
    sesscache_free(c);
    sesscache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_session_is_handed_out_once),
        cmocka_unit_test(test_tls12_session_stays_for_the_next_connection),
        cmocka_unit_test(test_keeps_a_few_per_key_and_hands_out_the_newest_first),
        cmocka_unit_test(test_a_full_cache_replaces_instead_of_growing),
        cmocka_unit_test(test_another_key_in_the_same_slot_replaces_it),
        cmocka_unit_test(test_a_session_its_connection_later_spends_stays_usable),
        cmocka_unit_test(test_sessions_that_cannot_resume_are_not_stored),
        cmocka_unit_test(test_expires_with_the_ticket_lifetime),
        cmocka_unit_test(test_expires_with_the_certificate),
        cmocka_unit_test(test_resumptions_do_not_extend_the_verification),
        cmocka_unit_test(test_unknown_key_and_empty_cache),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
