/* relay: the benchmark's no-inspection floor, a transparent TCP relay in one epoll loop.
 *
 * Accepts on 0.0.0.0:PORT, learns each connection's original destination with
 * SO_ORIGINAL_DST (iptables REDIRECT), falls back to the -t address when there is none, and
 * copies bytes both ways through one shared buffer. Bytes that cannot be written at once are
 * kept in a per-direction heap copy and reading from that side stops until they drain
 * (backpressure), so an idle connection holds two sockets and a small struct. FIN is carried
 * across with shutdown(SHUT_WR).
 *
 * usage: relay -l PORT [-t ADDR:PORT]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct pair;

struct side {
    struct pair *pair;
    int fd;
    int eof;       /* read EOF from this fd */
    char *pending; /* bytes read from the OTHER side, not yet written to this fd */
    size_t pend_len, pend_off;
};

struct pair {
    struct side s[2]; /* 0: client, 1: upstream */
    int connected;
    int closing;       /* fds closed; freed after the current batch of events */
    struct pair *next; /* on the list of pairs to free */
};

static int ep;
static char buf[65536];
static struct pair *to_free;

/* Re-arms both fds: read a side while the other side has nothing pending; write a side
 * while it has something pending (or, for the upstream, until connect completes). */
static void pair_watch(struct pair *p)
{
    for (int i = 0; i < 2; i++) {
        struct side *me = &p->s[i], *peer = &p->s[1 - i];
        unsigned ev = 0;
        if (p->connected && !me->eof && !peer->pending)
            ev |= EPOLLIN;
        if (me->pending || (i == 1 && !p->connected))
            ev |= EPOLLOUT;
        struct epoll_event e = {.events = ev, .data.ptr = me};
        epoll_ctl(ep, EPOLL_CTL_MOD, me->fd, &e);
    }
}

/* Closes both sockets now; the memory is freed after the batch of events, which may still
 * hold a pointer to the other side. */
static void pair_close(struct pair *p)
{
    if (p->closing)
        return;
    p->closing = 1;
    for (int i = 0; i < 2; i++) {
        close(p->s[i].fd);
        free(p->s[i].pending);
        p->s[i].pending = NULL;
    }
    p->next = to_free;
    to_free = p;
}

/* Writes what is pending toward side `to`; returns -1 on error. */
static int side_flush(struct side *to)
{
    while (to->pending) {
        ssize_t w = send(to->fd, to->pending + to->pend_off, to->pend_len - to->pend_off,
                         MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        to->pend_off += (size_t)w;
        if (to->pend_off == to->pend_len) {
            free(to->pending);
            to->pending = NULL;
        }
    }
    return 0;
}

/* Reads from `from` and writes to the other side until one would block. */
static int side_pump(struct side *from)
{
    struct side *to = &from->pair->s[1 - (from - from->pair->s)];
    while (!to->pending && !from->eof) {
        ssize_t n = recv(from->fd, buf, sizeof buf, 0);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0) {
            from->eof = 1;
            shutdown(to->fd, SHUT_WR);
            break;
        }
        ssize_t w = send(to->fd, buf, (size_t)n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            return -1;
        if (w < 0)
            w = 0;
        if (w < n) {
            to->pending = malloc((size_t)(n - w));
            if (!to->pending)
                return -1;
            memcpy(to->pending, buf + w, (size_t)(n - w));
            to->pend_len = (size_t)(n - w);
            to->pend_off = 0;
        }
    }
    return 0;
}

static void on_event(struct side *me, unsigned events)
{
    struct pair *p = me->pair;
    int i = (int)(me - p->s);
    if (p->closing)
        return;
    if (i == 0 && !p->connected) { /* only an error or hang-up is watched for until then */
        if (events & (EPOLLERR | EPOLLHUP))
            goto fail;
        return;
    }
    if (i == 1 && !p->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(me->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err)
            goto fail;
        p->connected = 1;
    }
    if ((events & EPOLLOUT) && side_flush(me) < 0)
        goto fail;
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && side_pump(me) < 0)
        goto fail;
    /* a flushed side may let the other one read again */
    if (side_pump(&p->s[1 - i]) < 0)
        goto fail;
    if (p->s[0].eof && p->s[1].eof && !p->s[0].pending && !p->s[1].pending) {
        pair_close(p);
        return;
    }
    pair_watch(p);
    return;
fail:
    pair_close(p);
}

static void on_accept(int lfd, const struct sockaddr_in *fallback)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        struct sockaddr_in dst;
        socklen_t len = sizeof dst;
        if (getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) < 0) {
            if (!fallback->sin_port) {
                close(cfd);
                continue;
            }
            dst = *fallback;
        }
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct pair *p = calloc(1, sizeof *p);
        if (ufd < 0 || !p) {
            close(cfd);
            if (ufd >= 0)
                close(ufd);
            free(p);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p->s[0] = (struct side){.pair = p, .fd = cfd};
        p->s[1] = (struct side){.pair = p, .fd = ufd};
        if (connect(ufd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
            close(cfd);
            close(ufd);
            free(p);
            continue;
        }
        struct epoll_event e0 = {.events = 0, .data.ptr = &p->s[0]};
        struct epoll_event e1 = {.events = EPOLLOUT, .data.ptr = &p->s[1]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &e0);
        epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &e1);
    }
}

int main(int argc, char **argv)
{
    int opt, port = 0;
    struct sockaddr_in fallback = {.sin_family = AF_INET};
    while ((opt = getopt(argc, argv, "l:t:")) != -1) {
        if (opt == 'l') {
            port = atoi(optarg);
        } else if (opt == 't') {
            char host[64];
            int tport;
            if (sscanf(optarg, "%63[^:]:%d", host, &tport) != 2 ||
                inet_pton(AF_INET, host, &fallback.sin_addr) != 1) {
                fprintf(stderr, "relay: bad -t %s\n", optarg);
                return 2;
            }
            fallback.sin_port = htons((uint16_t)tport);
        } else {
            fprintf(stderr, "usage: relay -l PORT [-t ADDR:PORT]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 4096) < 0) {
        perror("relay: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr)
                on_accept(lfd, &fallback);
            else
                on_event(evs[i].data.ptr, evs[i].events);
        }
        while (to_free) {
            struct pair *p = to_free;
            to_free = p->next;
            free(p);
        }
    }
}
