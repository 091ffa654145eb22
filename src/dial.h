/* dial: reaching an upstream — asynchronous name resolution (evdns, which honours
 * /etc/hosts) and a non-blocking connect that tries each address in turn. */
#ifndef SLUICE_DIAL_H
#define SLUICE_DIAL_H

#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct evdns_base;
struct dial;

/* Called exactly once, never from inside dial_start. Success: fd >= 0 (a connected,
 * non-blocking socket the callee now owns) and addr. Failure: fd < 0, stage "dns" or
 * "connect", reason for humans. The dial frees itself after the callback returns. */
typedef void (*dial_done_cb)(void *arg, int fd, const struct sockaddr *addr, const char *stage,
                             const char *reason);

/* Starts dialling host:port (a name or an IP literal), or addr when host is NULL.
 * Returns the pending dial, or NULL when it could not start (out of memory). */
struct dial *dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                        uint16_t port, const struct sockaddr *addr, dial_done_cb cb, void *arg);

/* Abandons a pending dial: no callback, resources freed, half-open socket closed. */
void dial_cancel(struct dial *d);

/* "dns" while resolving, "connect" afterwards: what a timeout interrupted. */
const char *dial_stage(const struct dial *d);

#endif
