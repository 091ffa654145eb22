/* netset: CIDR sets. A policy rule holds a handful of networks, so a set is a flat array of
 * (family, address, prefix) scanned in order: a few comparisons of 16 bytes, no pointers to
 * chase. IPv4 is kept as IPv4 so that mapped addresses and IPv4 rules meet in one form. */
#include "netset.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct netset_net {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix; /* 0..32 or 0..128 */
    uint8_t addr[16];
};

struct netset {
    struct netset_net *nets;
    size_t n, cap;
};

static const uint8_t netset_v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

struct netset *netset_new(void)
{
    return calloc(1, sizeof(struct netset));
}

void netset_free(struct netset *set)
{
    if (!set)
        return;
    free(set->nets);
    free(set);
}

size_t netset_size(const struct netset *set)
{
    return set->n;
}

/* True when addr's bits past prefix (of bits total) are all zero. */
static bool netset_host_bits_zero(const uint8_t *addr, unsigned prefix, unsigned bits)
{
    for (unsigned b = prefix; b < bits; b++)
        if (addr[b / 8] & (0x80u >> (b % 8)))
            return false;
    return true;
}

static bool netset_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned bytes = prefix / 8, rest = prefix % 8;

    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (a[bytes] & mask) == (b[bytes] & mask);
}

/* Reads "ADDR[/LEN]" into net. 0 or -1 with *why. */
static int netset_parse(const char *text, struct netset_net *net, const char **why)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    unsigned long prefix = 0;

    *why = "expected an IPv4 or IPv6 address, optionally with /LEN (10.0.0.0/8, fd00::/8)";
    if (alen == 0 || alen >= sizeof(addr))
        return -1;
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    memset(net, 0, sizeof(*net));
    if (inet_pton(AF_INET, addr, net->addr) == 1)
        net->family = AF_INET;
    else if (inet_pton(AF_INET6, addr, net->addr) == 1)
        net->family = AF_INET6;
    else
        return -1;
    unsigned bits = net->family == AF_INET ? 32 : 128;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] != '\0') {
            *why = "prefix length must be a number (/8, /64)";
            return -1;
        }
        prefix = strtoul(p, NULL, 10);
        if (prefix > bits) {
            *why = net->family == AF_INET ? "IPv4 prefix length must be 0..32"
                                          : "IPv6 prefix length must be 0..128";
            return -1;
        }
    } else {
        prefix = bits;
    }
    if (!netset_host_bits_zero(net->addr, (unsigned)prefix, bits)) {
        *why = "address has bits set past the prefix length (10.0.0.0/8, not 10.1.2.3/8)";
        return -1;
    }
    net->prefix = (uint8_t)prefix;
    if (net->family == AF_INET6 && prefix >= 96 &&
        memcmp(net->addr, netset_v4_mapped, sizeof(netset_v4_mapped)) == 0) {
        memmove(net->addr, net->addr + 12, 4);
        memset(net->addr + 4, 0, 12);
        net->family = AF_INET;
        net->prefix = (uint8_t)(prefix - 96);
    }
    return 0;
}

int netset_add(struct netset *set, const char *text, const char **why)
{
    struct netset_net net;

    if (netset_parse(text, &net, why) != 0)
        return -1;
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 4;
        struct netset_net *nets = realloc(set->nets, cap * sizeof(*nets));
        if (!nets)
            return -2;
        set->nets = nets;
        set->cap = cap;
    }
    set->nets[set->n++] = net;
    return 0;
}

bool netset_match(const struct netset *set, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;

    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        family = AF_INET6;
        if (memcmp(addr, netset_v4_mapped, sizeof(netset_v4_mapped)) == 0) {
            memmove(addr, addr + 12, 4);
            family = AF_INET;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < set->n; i++)
        if (set->nets[i].family == family &&
            netset_prefix_equal(set->nets[i].addr, addr, set->nets[i].prefix))
            return true;
    return false;
}
