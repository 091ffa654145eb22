/* sesscache: a worker's cache of upstream TLS sessions, so repeat connections to an origin
 * resume (TLS 1.3 tickets, TLS 1.2 sessions) instead of paying a full handshake. Bounded and
 * direct-mapped: a new session replaces whatever shared its slot. One per worker: no locks.
 * Only sessions from verified handshakes are stored, keyed by the verified name, port and
 * address, so a resumed session never stands in for a name it was not verified for. */
#ifndef SLUICE_SESSCACHE_H
#define SLUICE_SESSCACHE_H

#include <openssl/ssl.h>
#include <stddef.h>

struct sesscache;

struct sesscache *sesscache_new(size_t slots);
void sesscache_free(struct sesscache *c);

/* The session stored under key, or NULL. Borrowed: SSL_set_session takes its own reference. */
SSL_SESSION *sesscache_get(struct sesscache *c, const char *key);

/* Stores sess under key, taking ownership of the caller's reference. */
void sesscache_put(struct sesscache *c, const char *key, SSL_SESSION *sess);

#endif
