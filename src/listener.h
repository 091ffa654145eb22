/* listener: the listening sockets (one per address per worker, SO_REUSEPORT), accepting into
 * connections, and learning a redirected connection's original destination. */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

struct worker;
struct listener_set;

struct listener_socket {
    int fd;
    int worker;                         /* index of the worker that accepts on it */
    const struct config_listen *listen; /* borrowed from the config */
};

/* Binds every configured address once per worker (SO_REUSEPORT, so the kernel spreads
 * connections across workers). An address given with port 0 gets one port shared by all.
 * Returns a new array (free with listener_close_all) or NULL with err naming the address. */
struct listener_socket *listener_open_all(struct config *cfg, int n_workers, size_t *n_out,
                                          char *err, size_t errlen);
void listener_close_all(struct listener_socket *socks, size_t n);

/* Starts accepting, on w's loop, on the sockets that belong to w (ownership of those fds moves
 * to the returned set). Returns NULL on failure. */
struct listener_set *listener_attach(struct worker *w, struct listener_socket *socks, size_t n);
/* Stops accepting and closes the set's sockets. NULL is ignored. */
void listener_set_free(struct listener_set *set);

/* The destination a netfilter REDIRECT/DNAT rewrote (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST).
 * Returns 0, or -1 when the connection was not redirected. */
int listener_original_dst(int fd, struct sockaddr_storage *dst, socklen_t *len);

#endif
