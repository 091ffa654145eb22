/* addr: socket-address formatting and small socket helpers shared by the network modules. */
#ifndef SLUICE_ADDR_H
#define SLUICE_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_TEXT_MAX 64 /* "[ffff:...:ffff]:65535" fits */

/* "1.2.3.4:80" or "[::1]:80" into buf (ADDR_TEXT_MAX). Returns buf. */
char *addr_format(const struct sockaddr *sa, char *buf, size_t size);
/* Address only, no port ("1.2.3.4", "::1"). Returns buf. */
char *addr_format_ip(const struct sockaddr *sa, char *buf, size_t size);
uint16_t addr_port(const struct sockaddr *sa);
/* Same family, address and port. */
bool addr_equal(const struct sockaddr *a, const struct sockaddr *b);
/* True when s is an IPv4 or IPv6 literal (no brackets). */
bool addr_is_ip_literal(const char *s);
/* Fills ss from an IP literal and port. 0 or -1. */
int addr_from_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
socklen_t addr_len(const struct sockaddr *sa);

#endif
