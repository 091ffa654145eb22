/* worker: a thread running one libevent loop with its own listeners, resolver and caches. */
#include "worker.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "bufpool.h"
#include "clienthello.h"
#include "conn.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"
#include "mint.h"
#include "sesscache.h"
#include "snapshot.h"

#define WORKER_SESSION_SLOTS 4096 /* upstream sessions kept per worker */
#define WORKER_POOL_KEEP 256 /* relay buffers kept for reuse: 4 MiB per worker at most */

/* ClientHellos up to CLIENTHELLO_MAX, spread over many records, with their headers. */
#define WORKER_SCRATCH_SIZE (CLIENTHELLO_MAX + 4096)

static void worker_on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    if (w->draining)
        return;
    w->draining = true;
    listener_set_free(w->listeners);
    w->listeners = NULL;
    if (w->n_conns == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    unsigned ms = w->gw->cfg->shutdown_timeout_ms;
    log_msg(LOG_INFO, "worker %d: waiting up to %u ms for %zu open connections", w->index, ms,
            w->n_conns);
    conn_drain_all(w);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->deadline_ev, &tv);
}

static void worker_on_reload(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    struct snapshot *snap = atomic_exchange(&w->pending, NULL);
    if (!snap)
        return;
    snapshot_unref(w->snap);
    w->snap = snap;
}

void worker_post_snapshot(struct worker *w, struct snapshot *snap)
{
    snapshot_unref(atomic_exchange(&w->pending, snapshot_ref(snap)));
    event_active(w->reload_ev, EV_READ, 0);
}

static void worker_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    log_msg(LOG_INFO, "worker %d: shutdown deadline reached, closing %zu connections", w->index,
            w->n_conns);
    conn_close_all(w, "gateway shutting down");
    event_base_loopexit(w->base, NULL);
}

static struct evdns_base *worker_dns_new(struct event_base *base)
{
    struct evdns_base *dns = evdns_base_new(
        base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_NAMESERVERS_NO_DEFAULT);
    if (!dns && (dns = evdns_base_new(base, 0)) != NULL)
        evdns_base_load_hosts(dns, NULL);
    return dns;
}

struct worker *worker_new(struct gateway *gw, int index)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->index = index;
    w->gw = gw;
    w->snap = snapshot_ref(gw->snap);
    w->scratch_size = WORKER_SCRATCH_SIZE;
    if (!(w->base = event_base_new()) || !(w->dns = worker_dns_new(w->base)) ||
        !(w->mint = mint_cache_new(gw->ca, gw->cfg->leaf_key, gw->cfg->cert_cache_size)) ||
        !(w->sessions = sesscache_new(WORKER_SESSION_SLOTS)) ||
        !(w->pool = bufpool_new(WORKER_POOL_KEEP)) || !(w->scratch = malloc(w->scratch_size)) ||
        !(w->stop_ev = event_new(w->base, -1, 0, worker_on_stop, w)) ||
        !(w->reload_ev = event_new(w->base, -1, 0, worker_on_reload, w)) ||
        !(w->deadline_ev = evtimer_new(w->base, worker_on_deadline, w)) ||
        !(w->listeners = listener_attach(w, gw->sockets, gw->n_sockets)))
        goto fail;
    return w;
fail:
    log_msg(LOG_ERROR, "cannot create worker %d", index);
    worker_free(w);
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_request_stop(struct worker *w)
{
    event_active(w->stop_ev, EV_READ, 0);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->base)
        conn_close_all(w, "gateway shutting down");
    listener_set_free(w->listeners);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->deadline_ev)
        event_free(w->deadline_ev);
    if (w->reload_ev)
        event_free(w->reload_ev);
    snapshot_unref(atomic_exchange(&w->pending, NULL));
    snapshot_unref(w->snap);
    if (w->dns) {
        /* Fail what is in flight so abandoned lookups call back and free themselves. */
        evdns_base_free(w->dns, 1);
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    }
    mint_cache_free(w->mint);
    sesscache_free(w->sessions);
    bufpool_free(w->pool);
    free(w->scratch);
    if (w->base)
        event_base_free(w->base);
    free(w);
}

void worker_join_free(struct worker *w)
{
    pthread_join(w->thread, NULL);
    worker_free(w);
}

uint64_t worker_next_conn_id(struct worker *w)
{
    return ++w->next_seq * (uint64_t)w->gw->n_workers + (uint64_t)w->index;
}

void worker_conn_added(struct worker *w)
{
    w->n_conns++;
}

void worker_conn_removed(struct worker *w)
{
    w->n_conns--;
    if (w->draining && w->n_conns == 0)
        event_base_loopexit(w->base, NULL);
}
