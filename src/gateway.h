/* gateway: the running process — loads the CA, builds the TLS contexts, opens the logs and
 * listening sockets, runs the workers, and handles signals. */
#ifndef SLUICE_GATEWAY_H
#define SLUICE_GATEWAY_H

#include <openssl/ssl.h>

#include "config.h"

struct ca;
struct worker;
struct listener_socket;

/* Shared by all workers, read-only once they run. */
struct gateway {
    const struct config *cfg;      /* borrowed */
    struct ca *ca;
    SSL_CTX *client_ctx;           /* toward clients: forged leaves */
    SSL_CTX *upstream_ctx;         /* toward origins: verified */
    int conn_log_fd;               /* -1 when off */
    struct listener_socket *sockets; /* bound listening sockets, one set per worker */
    size_t n_sockets;
    int n_workers;
    struct worker **workers;
};

/* Runs the gateway until SIGTERM/SIGINT and a graceful drain. Returns the exit code. */
int gateway_run(struct config *cfg);

#endif
