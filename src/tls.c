/* tls: OpenSSL contexts for both legs and their verification plumbing. */
#include "tls.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "log.h"

/* TLS 1.2: forward-secret AEAD suites only. TLS 1.3 suites are all AEAD + (EC)DHE. */
static const char TLS_CIPHERS_12[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char TLS_CIPHERS_13[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char TLS_GROUPS[] = "X25519:P-256:P-384";

/* Session tickets for clients: keys rotate every TLS_TICKET_ROTATE_S; tickets under the
 * previous key are still accepted (and renewed) for one more period, so a ticket lives at
 * most two periods. Keys are shared by all workers (a client may come back on any of them). */
#define TLS_TICKET_ROTATE_S 3600

struct tls_ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t created;
};

static struct {
    pthread_rwlock_t lock;
    struct tls_ticket_key cur, prev;
} tls_tickets = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static int tls_app_data_index = -1;
static tls_client_hello_cb tls_hello_cb;

static int tls_common_settings(SSL_CTX *ctx)
{
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) ||
        !SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERS_13) || !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS))
        return -1;
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read(2) per flight instead of two per record (header, then body). Whoever reads
     * must then drain what OpenSSL holds (SSL_has_pending) before waiting on the socket: the
     * handshake steps do, as does the relay (relay_leg_read). */
    SSL_CTX_set_read_ahead(ctx, 1);
    return 0;
}

static int tls_ensure_index(void)
{
    if (tls_app_data_index < 0)
        tls_app_data_index = SSL_get_ex_new_index(0, "sluice conn", NULL, NULL, NULL);
    return tls_app_data_index;
}

void tls_set_app_data(SSL *ssl, void *arg)
{
    SSL_set_ex_data(ssl, tls_ensure_index(), arg);
}

void *tls_get_app_data(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_app_data_index);
}

static int tls_on_client_hello(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    return tls_hello_cb(ssl, alert, tls_get_app_data(ssl));
}

static int tls_ticket_key_new(struct tls_ticket_key *k, time_t now)
{
    k->created = now;
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -1;
}

/* Copies the current key, rotating first when it is due. */
static int tls_ticket_current(struct tls_ticket_key *out)
{
    time_t now = time(NULL);
    pthread_rwlock_rdlock(&tls_tickets.lock);
    bool due = now - tls_tickets.cur.created >= TLS_TICKET_ROTATE_S;
    *out = tls_tickets.cur;
    pthread_rwlock_unlock(&tls_tickets.lock);
    if (!due)
        return 0;
    pthread_rwlock_wrlock(&tls_tickets.lock);
    int rc = 0;
    if (now - tls_tickets.cur.created >= TLS_TICKET_ROTATE_S) {
        struct tls_ticket_key fresh;
        rc = tls_ticket_key_new(&fresh, now);
        if (rc == 0) {
            tls_tickets.prev = tls_tickets.cur;
            tls_tickets.cur = fresh;
        }
    }
    *out = tls_tickets.cur;
    pthread_rwlock_unlock(&tls_tickets.lock);
    return rc;
}

/* 1: use this key; 2: it is the previous key, issue a fresh ticket; 0: unknown key. */
static int tls_ticket_lookup(const unsigned char *name, struct tls_ticket_key *out)
{
    int rc = 0;
    pthread_rwlock_rdlock(&tls_tickets.lock);
    if (memcmp(name, tls_tickets.cur.name, 16) == 0) {
        *out = tls_tickets.cur;
        rc = 1;
    } else if (tls_tickets.prev.created &&
               time(NULL) - tls_tickets.prev.created < 2 * TLS_TICKET_ROTATE_S &&
               memcmp(name, tls_tickets.prev.name, 16) == 0) {
        *out = tls_tickets.prev;
        rc = 2;
    }
    pthread_rwlock_unlock(&tls_tickets.lock);
    return rc;
}

/* Encrypts a new ticket (enc) or finds the key of one offered. Decrypting returns 2 (use
 * it, and issue a fresh ticket) under TLS 1.3 whatever the key: a TLS 1.3 client uses each
 * ticket once (RFC 8446 C.4; OpenSSL and browsers do), and with a key callback OpenSSL sends
 * a ticket on a resumed TLS 1.3 connection only when the callback returns 2 (its built-in
 * keys always renew), so a 1 here left every other resumption failing. TLS 1.2 tickets may
 * be reused: renewed only when under the previous key. */
static int tls_on_ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                             EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_ticket_key k;
    int rc = 1;
    if (enc) {
        if (tls_ticket_current(&k) != 0 || RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k.name, 16);
    } else if ((rc = tls_ticket_lookup(key_name, &k)) == 0) {
        return 0;
    } else if (SSL_version(ssl) >= TLS1_3_VERSION) {
        rc = 2;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    int ok = EVP_MAC_CTX_set_params(hctx, params) &&
             (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv)
                  : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv));
    OPENSSL_cleanse(&k, sizeof(k));
    return ok ? rc : -1;
}

SSL_CTX *tls_client_side_ctx_new(tls_client_hello_cb hello_cb, tls_alpn_select_cb alpn_cb)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || tls_common_settings(ctx) != 0)
        goto fail;
    tls_ensure_index();
    tls_hello_cb = hello_cb;
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_client_hello_cb(ctx, tls_on_client_hello, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    /* Sessions resume through stateless tickets; no server-side cache to share or lock.
     * TLS 1.3: two tickets after a full handshake (OpenSSL's default: a client opening two
     * connections at once can resume both), one after a resumed one (tls_on_ticket_key).
     * Each costs ~135k instructions, under 3% of a handshake (docs/PERFORMANCE.md). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 2);
    SSL_CTX_set_timeout(ctx, 2 * TLS_TICKET_ROTATE_S);
    if (tls_ticket_key_new(&tls_tickets.cur, time(NULL)) != 0 ||
        !SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_on_ticket_key))
        goto fail;
    return ctx;
fail:
    log_openssl(LOG_ERROR, "cannot build the client-side TLS context");
    SSL_CTX_free(ctx);
    return NULL;
}

static int tls_on_verify(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_verify_result *vr = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!vr)
        return ok;
    if (!vr->leaf) {
        X509 *leaf = X509_STORE_CTX_get0_cert(store);
        if (leaf && X509_up_ref(leaf))
            vr->leaf = leaf;
    }
    if (!ok && vr->error == X509_V_OK) {
        vr->error = X509_STORE_CTX_get_error(store);
        vr->error_depth = X509_STORE_CTX_get_error_depth(store);
    }
    return ok;
}

SSL_CTX *tls_upstream_ctx_new(const char *upstream_ca, tls_new_session_cb session_cb, char *err,
                              size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || tls_common_settings(ctx) != 0) {
        snprintf(err, errlen, "cannot build the upstream TLS context");
        goto fail;
    }
    int loaded = upstream_ca ? SSL_CTX_load_verify_file(ctx, upstream_ca)
                             : SSL_CTX_set_default_verify_paths(ctx);
    if (!loaded) {
        snprintf(err, errlen, "cannot load upstream trust roots from %s",
                 upstream_ca ? upstream_ca : "the system store");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_on_verify);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, session_cb);
    tls_ensure_index();
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_upstream_prepare(SSL *ssl, const char *name, const unsigned char *alpn, size_t alpn_len,
                         struct tls_verify_result *vr)
{
    vr->error = X509_V_OK;
    vr->error_depth = -1;
    vr->leaf = NULL;
    SSL_set_app_data(ssl, vr);
    if (addr_is_ip_literal(name)) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name))
            return -1;
    } else if (!SSL_set_tlsext_host_name(ssl, name) || !SSL_set1_host(ssl, name)) {
        return -1;
    }
    if (alpn_len > 0 && SSL_set_alpn_protos(ssl, alpn, (unsigned)alpn_len) != 0)
        return -1;
    return 0;
}

const char *tls_error_reason(int ssl_err, char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        snprintf(buf, size, "%s", r ? r : "TLS error");
        ERR_clear_error();
    } else if (ssl_err == SSL_ERROR_SYSCALL) {
        snprintf(buf, size, "%s", errno ? strerror(errno) : "connection closed by peer");
    } else if (ssl_err == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, size, "peer sent close_notify");
    } else {
        snprintf(buf, size, "TLS error %d", ssl_err);
    }
    return buf;
}

static int tls_keylog_fd = -1;

static void tls_on_keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    char buf[512];
    size_t n = strlen(line);
    if (tls_keylog_fd < 0 || n + 1 > sizeof(buf))
        return;
    memcpy(buf, line, n);
    buf[n++] = '\n';
    ssize_t w = write(tls_keylog_fd, buf, n);
    (void)w;
}

void tls_keylog_to(SSL_CTX *ctx, int fd)
{
    tls_keylog_fd = fd;
    SSL_CTX_set_keylog_callback(ctx, fd >= 0 ? tls_on_keylog : NULL);
}

const char *tls_version_name(int version)
{
    switch (version) {
    case TLS1_3_VERSION:
        return "TLSv1.3";
    case TLS1_2_VERSION:
        return "TLSv1.2";
    case TLS1_1_VERSION:
        return "TLSv1.1";
    case TLS1_VERSION:
        return "TLSv1";
    default:
        return "unknown";
    }
}
