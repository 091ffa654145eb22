/* tls: the two OpenSSL contexts (toward clients, toward upstreams), their fixed security
 * settings, upstream verification bookkeeping, and TLS error strings. */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Called from the client-hello callback: return SSL_CLIENT_HELLO_SUCCESS, _RETRY (hold the
 * handshake) or _ERROR (with *alert set). `arg` is the SSL's app data (the connection). */
typedef int (*tls_client_hello_cb)(SSL *ssl, int *alert, void *arg);
/* Called from the ALPN select callback: choose from the client's list `in` (wire format). */
typedef int (*tls_alpn_select_cb)(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                  const unsigned char *in, unsigned int inlen, void *arg);
/* Called when an upstream hands us a session to resume later; return 1 to keep sess. */
typedef int (*tls_new_session_cb)(SSL *ssl, SSL_SESSION *sess);

/* What upstream verification found; embedded in the connection, reached from the verify
 * callback through the SSL's app data. */
struct tls_verify_result {
    int error;        /* X509_V_OK or the first verification error */
    int error_depth;
    X509 *leaf;       /* the upstream's leaf as presented (own reference), or NULL */
};

/* Builds the client-facing context: TLS 1.2-1.3, ECDHE + AEAD suites only, no renegotiation,
 * server cipher preference, released buffers, tickets. Returns NULL on failure (logged). */
SSL_CTX *tls_client_side_ctx_new(tls_client_hello_cb hello_cb, tls_alpn_select_cb alpn_cb);

/* Builds the upstream context: a fixed grade-A hello (TLS 1.2-1.3, ECDHE + AEAD, security
 * level 2), full verification against upstream_ca (PEM file of trusted roots) or the system
 * store when NULL, and sessions handed to session_cb for resumption. NULL + err on failure. */
SSL_CTX *tls_upstream_ctx_new(const char *upstream_ca, tls_new_session_cb session_cb, char *err,
                              size_t errlen);

/* Configures an upstream SSL: SNI (names only, not IP literals), the name or IP to verify,
 * the ALPN list to offer (wire format, may be empty), and where verification results go
 * (borrowed; must outlive the SSL's handshake). Returns 0 or -1. */
int tls_upstream_prepare(SSL *ssl, const char *name, const unsigned char *alpn, size_t alpn_len,
                         struct tls_verify_result *vr);

/* Drains OpenSSL's error queue into a short reason ("tlsv1 alert unknown ca"). When the queue
 * is empty, describes ssl_err / errno. Returns buf. */
const char *tls_error_reason(int ssl_err, char *buf, size_t size);

/* Writes NSS key-log lines (SSLKEYLOGFILE format) for every handshake on ctx to fd, which
 * must stay open while ctx is used; fd < 0 turns it off. Lines are written whole. */
void tls_keylog_to(SSL_CTX *ctx, int fd);

/* "TLSv1.3" etc. for a version number. */
const char *tls_version_name(int version);

/* Sets the app-data pointer the callbacks receive. */
void tls_set_app_data(SSL *ssl, void *arg);
void *tls_get_app_data(const SSL *ssl);

#endif
