/* dial: async DNS and connect with fallback across addresses. */
#include "dial.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"

struct dial {
    struct event_base *base;
    struct evdns_getaddrinfo_request *dns_req;
    struct evutil_addrinfo *ai_list, *ai_next;
    struct sockaddr_storage fixed; /* the address when no name was given */
    struct event *ev;              /* connect readiness, or a deferred start */
    int fd;
    bool resolving;
    bool abandoned;                /* cancelled while resolving: the DNS callback frees us */
    int last_errno;
    dial_done_cb cb;
    void *arg;
    char reason[128];
};

static void dial_free(struct dial *d)
{
    if (d->dns_req && !d->abandoned) {
        /* The resolver calls back later (deferred) with EVUTIL_EAI_CANCEL: free then. */
        d->abandoned = true;
        evdns_getaddrinfo_cancel(d->dns_req);
        if (d->ev) {
            event_free(d->ev);
            d->ev = NULL;
        }
        return;
    }
    if (d->ai_list)
        evutil_freeaddrinfo(d->ai_list);
    if (d->ev)
        event_free(d->ev);
    if (d->fd >= 0)
        close(d->fd);
    free(d);
}

static void dial_finish(struct dial *d, int fd, const struct sockaddr *addr, const char *stage)
{
    d->cb(d->arg, fd, addr, stage, d->reason);
    dial_free(d);
}

static void dial_next(struct dial *d);

static void dial_on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0) {
        struct sockaddr *addr = d->ai_list ? d->ai_next->ai_addr : (struct sockaddr *)&d->fixed;
        int ok_fd = d->fd;
        d->fd = -1;
        dial_finish(d, ok_fd, addr, "connect");
        return;
    }
    d->last_errno = err;
    close(d->fd);
    d->fd = -1;
    if (d->ai_list)
        d->ai_next = d->ai_next->ai_next;
    else
        d->fixed.ss_family = AF_UNSPEC; /* the single fixed address failed */
    dial_next(d);
}

/* Starts a connect to addr; 0 when it is under way (or done), -1 when it failed at once. */
static int dial_connect(struct dial *d, const struct sockaddr *addr)
{
    int one = 1;
    d->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0) {
        d->last_errno = errno;
        return -1;
    }
    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(d->fd, addr, addr_len(addr)) != 0 && errno != EINPROGRESS) {
        d->last_errno = errno;
        close(d->fd);
        d->fd = -1;
        return -1;
    }
    if (d->ev)
        event_free(d->ev);
    d->ev = event_new(d->base, d->fd, EV_WRITE, dial_on_writable, d);
    if (!d->ev || event_add(d->ev, NULL) != 0) {
        d->last_errno = ENOMEM;
        close(d->fd);
        d->fd = -1;
        return -1;
    }
    return 0;
}

/* Tries the current address and those after it; reports failure when none is left. */
static void dial_next(struct dial *d)
{
    if (!d->ai_list && d->fixed.ss_family != AF_UNSPEC) {
        if (dial_connect(d, (struct sockaddr *)&d->fixed) == 0)
            return;
        d->fixed.ss_family = AF_UNSPEC;
    }
    for (; d->ai_list && d->ai_next; d->ai_next = d->ai_next->ai_next)
        if (dial_connect(d, d->ai_next->ai_addr) == 0)
            return;
    snprintf(d->reason, sizeof(d->reason), "%s",
             strerror(d->last_errno ? d->last_errno : ECONNREFUSED));
    dial_finish(d, -1, NULL, "connect");
}

static void dial_on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dial *d = arg;
    d->dns_req = NULL;
    d->resolving = false;
    if (d->abandoned) {
        if (res)
            evutil_freeaddrinfo(res);
        dial_free(d);
        return;
    }
    if (result != 0 || !res) {
        snprintf(d->reason, sizeof(d->reason), "cannot resolve name: %s",
                 evutil_gai_strerror(result));
        /* may run inside evdns_getaddrinfo: report from the loop instead */
        event_active(d->ev, EV_TIMEOUT, 0);
        return;
    }
    d->ai_list = d->ai_next = res;
    event_active(d->ev, EV_TIMEOUT, 0);
}

/* Deferred start: runs from the loop so the callback is never reentrant. */
static void dial_on_start(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;
    (void)fd;
    (void)what;
    if (d->resolving)
        return;
    if (!d->ai_list && d->fixed.ss_family == AF_UNSPEC) {
        dial_finish(d, -1, NULL, "dns");
        return;
    }
    dial_next(d);
}

struct dial *dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                        uint16_t port, const struct sockaddr *addr, dial_done_cb cb, void *arg)
{
    struct dial *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->base = base;
    d->fd = -1;
    d->cb = cb;
    d->arg = arg;
    d->ev = event_new(base, -1, 0, dial_on_start, d);
    if (!d->ev)
        goto fail;
    socklen_t len;
    if (!host) {
        memcpy(&d->fixed, addr, addr_len(addr));
    } else if (addr_from_ip(host, port, &d->fixed, &len) != 0) {
        struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
                                        .ai_socktype = SOCK_STREAM,
                                        .ai_protocol = IPPROTO_TCP,
                                        .ai_flags = EVUTIL_AI_ADDRCONFIG};
        char portstr[8];
        snprintf(portstr, sizeof(portstr), "%u", port);
        d->resolving = true;
        d->dns_req = evdns_getaddrinfo(dns, host, portstr, &hints, dial_on_resolved, d);
        return d; /* the callback (now or later) activates d->ev */
    }
    event_active(d->ev, EV_TIMEOUT, 0);
    return d;
fail:
    dial_free(d);
    return NULL;
}

void dial_cancel(struct dial *d)
{
    if (d)
        dial_free(d);
}

const char *dial_stage(const struct dial *d)
{
    return d->resolving ? "dns" : "connect";
}
