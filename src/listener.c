/* listener: SO_REUSEPORT listening sockets and accepting. */
#include "listener.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "conn.h"
#include "log.h"
#include "worker.h"

#define LISTENER_BACKLOG 4096
#define LISTENER_PAUSE_MS 200 /* how long accepting pauses when out of file descriptors */

struct listener_entry {
    struct evconnlistener *evl;
    const struct config_listen *listen;
    struct listener_set *set;
};

struct listener_set {
    struct worker *w;
    struct listener_entry *entries;
    size_t n;
    struct event *resume_ev;
    time_t last_limit_log;
};

static int listener_bind_one(struct config_listen *l, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto fail;
    if (l->addr.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&l->addr, l->addr_len) != 0 ||
        listen(fd, LISTENER_BACKLOG) != 0)
        goto fail;
    /* Port 0: pin the kernel's choice so every worker's socket shares it. */
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (addr_port((struct sockaddr *)&l->addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
        l->addr = bound;
        addr_format((struct sockaddr *)&bound, l->text, sizeof(l->text));
    }
    return fd;
fail:
    snprintf(err, errlen, "cannot listen on %s: %s", l->text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

struct listener_socket *listener_open_all(struct config *cfg, int n_workers, size_t *n_out,
                                          char *err, size_t errlen)
{
    size_t n = cfg->n_listen * (size_t)n_workers, k = 0;
    struct listener_socket *socks = calloc(n, sizeof(*socks));
    if (!socks) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_listen; i++) {
        for (int wi = 0; wi < n_workers; wi++) {
            int fd = listener_bind_one(&cfg->listen[i], err, errlen);
            if (fd < 0) {
                listener_close_all(socks, k);
                return NULL;
            }
            socks[k++] = (struct listener_socket){fd, wi, &cfg->listen[i]};
        }
    }
    *n_out = n;
    return socks;
}

void listener_close_all(struct listener_socket *socks, size_t n)
{
    if (!socks)
        return;
    for (size_t i = 0; i < n; i++)
        if (socks[i].fd >= 0)
            close(socks[i].fd);
    free(socks);
}

static void listener_on_accept(struct evconnlistener *evl, evutil_socket_t fd,
                               struct sockaddr *peer, int peer_len, void *arg)
{
    (void)evl;
    struct listener_entry *e = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_accept(e->set->w, fd, peer, (socklen_t)peer_len, e->listen);
}

static void listener_on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener_set *set = arg;
    if (set->w->draining)
        return;
    for (size_t i = 0; i < set->n; i++)
        evconnlistener_enable(set->entries[i].evl);
}

/* Out of descriptors (EMFILE/ENFILE) or buffers: say so once in a while and pause accepting
 * briefly instead of spinning on a listener that stays readable. */
static void listener_on_error(struct evconnlistener *evl, void *arg)
{
    struct listener_entry *e = arg;
    struct listener_set *set = e->set;
    int err = EVUTIL_SOCKET_ERROR();
    time_t now = time(NULL);
    if (now - set->last_limit_log >= 10) {
        set->last_limit_log = now;
        log_msg(LOG_WARN, "accept on %s failed: %s; %zu connections open on worker %d; "
                "pausing accepts for %d ms (raise the open-file limit, ulimit -n)",
                e->listen->text, strerror(err), set->w->n_conns, set->w->index,
                LISTENER_PAUSE_MS);
    }
    (void)evl;
    for (size_t i = 0; i < set->n; i++)
        evconnlistener_disable(set->entries[i].evl);
    struct timeval tv = {0, LISTENER_PAUSE_MS * 1000};
    event_add(set->resume_ev, &tv);
}

struct listener_set *listener_attach(struct worker *w, struct listener_socket *socks, size_t n)
{
    struct listener_set *set = calloc(1, sizeof(*set));
    if (!set || !(set->entries = calloc(n, sizeof(*set->entries))))
        goto fail;
    set->w = w;
    if (!(set->resume_ev = evtimer_new(w->base, listener_on_resume, set)))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (socks[i].worker != w->index)
            continue;
        struct listener_entry *e = &set->entries[set->n];
        e->set = set;
        e->listen = socks[i].listen;
        e->evl = evconnlistener_new(w->base, listener_on_accept, e,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, socks[i].fd);
        if (!e->evl)
            goto fail;
        socks[i].fd = -1; /* owned by the evconnlistener now */
        evconnlistener_set_error_cb(e->evl, listener_on_error);
        set->n++;
    }
    return set;
fail:
    log_msg(LOG_ERROR, "worker %d: cannot start listeners", w->index);
    listener_set_free(set);
    return NULL;
}

void listener_set_free(struct listener_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        evconnlistener_free(set->entries[i].evl);
    if (set->resume_ev)
        event_free(set->resume_ev);
    free(set->entries);
    free(set);
}

int listener_original_dst(int fd, struct sockaddr_storage *dst, socklen_t *len)
{
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0)
        return -1;
    *len = sizeof(*dst);
    int rc = local.ss_family == AF_INET6
                 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, dst, len)
                 : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, len);
    if (rc != 0)
        return -1;
    /* Not rewritten: the client dialled the gateway itself; relaying would loop. */
    if (addr_equal((struct sockaddr *)dst, (struct sockaddr *)&local))
        return -1;
    return 0;
}
