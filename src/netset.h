/* netset: sets of IPv4 and IPv6 networks (CIDR prefixes) for policy rules, built once and
 * then queried read-only from any thread. */
#ifndef SLUICE_NETSET_H
#define SLUICE_NETSET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct netset;

/* An empty set, or NULL when out of memory. */
struct netset *netset_new(void);
void netset_free(struct netset *set);

/* Adds "ADDR/LEN" or a bare address (a host: /32 or /128), IPv4 or IPv6 (text borrowed).
 * Host bits past the prefix are refused: "10.1.2.3/8" is more likely a typo than a wish.
 * IPv4-mapped IPv6 networks (::ffff:10.0.0.0/104) are stored as the IPv4 network.
 * Returns 0, -1 with *why (static text) when text is not a network, -2 out of memory. */
int netset_add(struct netset *set, const char *text, const char **why);

size_t netset_size(const struct netset *set);

/* True when the address of sa (AF_INET or AF_INET6; port ignored) is inside one of the
 * networks. An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) matches as the IPv4
 * address it carries. NULL or another family matches nothing. Pure, no allocation. */
bool netset_match(const struct netset *set, const struct sockaddr *sa);

#endif
