/* conn: the life of one client connection — learn the destination, peek at the ClientHello,
 * intercept (verified upstream handshake, forged leaf, client handshake) or relay as TCP,
 * then log one record at close. Only this module knows the state machine. */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include "config.h"

struct worker;
struct conn;

/* Takes ownership of the accepted, non-blocking socket fd and starts its connection on
 * worker w. On allocation failure the socket is closed and the failure logged. */
void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                 const struct config_listen *listen);

/* Builds the client-facing TLS context wired to this module's hello and ALPN callbacks. */
SSL_CTX *conn_client_ctx_new(void);

/* The upstream context's new-session callback: keeps verified upstream sessions in the
 * worker's cache for resumption. */
int conn_on_upstream_session(SSL *ssl, SSL_SESSION *sess);

/* Gateway shutdown begins: connections that can be told to finish (HTTP/2: GOAWAY on both
 * legs) are told; may close some of them. */
void conn_drain_all(struct worker *w);

/* Closes every connection of w (shutdown deadline), each logged with `reason`. */
void conn_close_all(struct worker *w, const char *reason);

#endif
