/* gateway: the running process — loads the CA, builds the TLS contexts, opens the logs and
 * listening sockets, runs the workers, and handles signals. */
#ifndef SLUICE_GATEWAY_H
#define SLUICE_GATEWAY_H

#include <openssl/ssl.h>

#include "config.h"

struct ca;
struct worker;
struct listener_socket;
struct snapshot;

/* Builds a fresh configuration the way start-up did (file, then command line) into *out.
 * Returns 0, or -1 with err saying what is wrong (file:line). */
typedef int (*gateway_reload_cb)(struct config *out, char *err, size_t errlen, void *arg);

/* Shared by all workers, read-only once they run. */
struct gateway {
    struct snapshot *snap;         /* the configuration in force; workers hold their own refs */
    const struct config *cfg;      /* the start-up configuration: listeners, CA, logs */
    struct ca *ca;
    SSL_CTX *client_ctx;           /* toward clients: forged leaves */
    SSL_CTX *upstream_ctx;         /* toward origins: verified */
    int conn_log_fd;               /* -1 when off */
    int request_log_fd;            /* -1 when off */
    int keylog_fd;                 /* -1 when off */
    int capture_fd;                /* body captures (capture_file, mode 0600); -1 when off */
    struct pinning *pinning;       /* names whose clients refuse forged certificates */
    struct listener_socket *sockets; /* bound listening sockets, one set per worker */
    size_t n_sockets;
    int n_workers;
    struct worker **workers;
};

/* Runs the gateway until SIGTERM/SIGINT and a graceful drain. Takes over the contents of
 * *cfg (left empty). Returns the exit code. */
int gateway_run(struct config *cfg);

/* Enables SIGHUP: cb rebuilds the configuration, which replaces the one in force for new
 * connections. Settings bound at start (listen, workers, ca_dir, upstream_ca, conn_log,
 * leaf_key, cert_cache_size) keep their start-up values; a change to them is logged. */
void gateway_set_reloader(gateway_reload_cb cb, void *arg);

#endif
