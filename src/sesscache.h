/* sesscache: a worker's cache of upstream TLS sessions, so repeat connections to an origin
 * resume (TLS 1.3 tickets, TLS 1.2 sessions) instead of paying a full handshake. Bounded and
 * direct-mapped: a new key replaces whatever shared its slot. One per worker: no locks.
 * Only sessions from verified handshakes are stored, keyed by the verified name, port and
 * address, so a resumed session never stands in for a name it was not verified for.
 *
 * Each key keeps up to SESSCACHE_PER_KEY sessions. A TLS 1.3 session is handed out once and
 * leaves the cache: its ticket is single-use (RFC 8446 C.4: reuse lets observers link
 * connections; OpenSSL marks a session spent once a handshake used it). The server sends a
 * fresh ticket on each resumed connection (OpenSSL servers two after a full one), and it comes
 * back through sesscache_put, so the key's stock grows by one with each full handshake until
 * it covers the connections opened to that origin at the same time. The whole cache holds at
 * most about twice `slots` sessions: beyond `slots`, a key that has one replaces its oldest.
 * A TLS 1.2 session stays until replaced: its ticket or ID may be offered again.
 *
 * A session stands for a verification done earlier, so it is offered only while that still
 * holds: before the server's ticket lifetime ends, before the certificate's notAfter, and at
 * most SESSCACHE_MAX_VERIFIED_AGE seconds after the full handshake that verified the chain
 * (a TLS 1.3 ticket issued on a resumed connection inherits that handshake's time). */
#ifndef SLUICE_SESSCACHE_H
#define SLUICE_SESSCACHE_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <time.h>

#define SESSCACHE_PER_KEY 16
#define SESSCACHE_MAX_VERIFIED_AGE 3600

struct sesscache;

/* A cache of `slots` keys (at least 1) holding at most about 2 * slots sessions. NULL when
 * out of memory. */
struct sesscache *sesscache_new(size_t slots);
void sesscache_free(struct sesscache *c);

/* The newest usable session stored under key, or NULL; sessions found expired are dropped.
 * Borrowed, and valid until the next call on this cache: SSL_set_session takes its own
 * reference. A TLS 1.3 session is removed from the cache by this call. */
SSL_SESSION *sesscache_get(struct sesscache *c, const char *key);

/* Stores sess under key, taking ownership of the caller's reference (freed at once when it
 * cannot be resumed or has no peer certificate). The oldest of the key's sessions makes room.
 * Call only for sessions of verified handshakes: the first put of a session from a full
 * handshake marks it verified now. */
void sesscache_put(struct sesscache *c, const char *key, SSL_SESSION *sess);

/* The same at a given time (seconds since the epoch): for tests, and callers with a clock. */
SSL_SESSION *sesscache_get_at(struct sesscache *c, const char *key, time_t now);
void sesscache_put_at(struct sesscache *c, const char *key, SSL_SESSION *sess, time_t now);

/* Sessions currently stored under key (tests, metrics). */
size_t sesscache_count(const struct sesscache *c, const char *key);

#endif
