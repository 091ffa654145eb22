/* worker: one thread with its own libevent loop, DNS resolver, listeners (SO_REUSEPORT),
 * leaf-certificate cache and buffer pool. Connections live and die on one worker: nothing on
 * the data path is shared or locked. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gateway;
struct conn;

/* The fields are read by conn.c; only worker.c changes them, except the list of open
 * connections (conns), which conn.c links. */
struct worker {
    int index;
    struct gateway *gw;            /* shared, read-only */
    struct snapshot *snap;         /* configuration for new connections (own reference) */
    struct snapshot *_Atomic pending; /* handed over by a reload, taken by reload_ev */
    struct event *reload_ev;
    struct event_base *base;
    struct evdns_base *dns;
    struct mint_cache *mint;
    struct sesscache *sessions;    /* upstream TLS sessions for resumption */
    struct bufpool *pool;
    uint8_t *scratch;              /* peek buffer for ClientHellos and proxy requests */
    size_t scratch_size;
    uint64_t next_seq;
    size_t n_conns;
    struct conn *conns;            /* intrusive list of open connections */
    bool draining;                 /* stopped accepting; exit when n_conns reaches 0 */
    struct listener_set *listeners;
    struct event *stop_ev;         /* activated from the main thread to start draining */
    struct event *deadline_ev;     /* shutdown deadline: close what is still open */
    pthread_t thread;
};

/* Creates worker `index` (not yet running). Returns NULL on failure (logged). */
struct worker *worker_new(struct gateway *gw, int index);
/* Starts the worker's thread. 0 or -1. */
int worker_start(struct worker *w);
/* Asks a running worker to stop accepting and drain (thread-safe). */
void worker_request_stop(struct worker *w);
/* Frees a worker whose thread is not running (or never ran). NULL is ignored. */
void worker_free(struct worker *w);
/* Waits for the thread to end and frees the worker. */
void worker_join_free(struct worker *w);

/* Hands a new configuration to a running worker (thread-safe; adds its own reference). New
 * connections use it; open ones keep theirs. */
void worker_post_snapshot(struct worker *w, struct snapshot *snap);

/* A unique connection id across workers. */
uint64_t worker_next_conn_id(struct worker *w);
/* Connection accounting; conn.c links w->conns itself. Removing the last connection of a
 * draining worker ends its loop. */
void worker_conn_added(struct worker *w);
void worker_conn_removed(struct worker *w);

#endif
