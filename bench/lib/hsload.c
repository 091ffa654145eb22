/* hsload: the benchmark's TLS load generator: handshakes, or requests at a fixed rate.
 *
 * Handshake mode (default): keeps C connections in flight for D seconds; each one connects,
 * completes a TLS handshake (SNI, optional verification), sends "GET PATH" with
 * "Connection: close", reads the whole response (Content-Length) and then until the server
 * closes (a TLS 1.3 server may send its session tickets late: a client that hung up at the
 * last body byte could miss them), and closes. With -r each slot offers the session its
 * previous connection ended with; OpenSSL, like browsers, uses a TLS 1.3 ticket once, so a
 * connection resumes only if the server sent a fresh ticket on the one before. Without -r the
 * client keeps no session and sends no ticket extension: every handshake is a full one.
 * (h2load and wrk resume sessions when they reconnect, and openssl s_time sends no SNI,
 * hence this tool.) Latency: connect to the server's close.
 *
 * Fixed-rate mode (-k RATE): C keep-alive connections send RATE requests per second in all,
 * each on its own evenly spaced schedule (open loop). Latency runs from the time a request
 * was due, not from when it was sent, so a stalled proxy is not hidden by the client waiting
 * for it (no coordinated omission).
 *
 * Prints one JSON object: completed connections or requests, resumed handshakes, errors, the
 * rate, and latency percentiles.
 *
 * With -N COUNT (handshake mode) it starts COUNT connections in all and stops when they are
 * done, however long that takes within the duration: for counting a proxy's instructions per
 * handshake (bench/hscost), where a count matters and a rate does not.
 *
 * usage: hsload -a ADDR -p PORT -n SNI [-u PATH] [-c CONC] [-d SECONDS] [-r] [-C CAFILE]
 *               [-k RATE] [-N COUNT]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000

enum slot_state { S_IDLE, S_CONNECT, S_HANDSHAKE, S_WRITE, S_READ, S_WAIT };

struct slot {
    enum slot_state state;
    int fd;
    SSL *ssl;
    SSL_SESSION *sess; /* owned: the previous connection's session (-r only) */
    double started;    /* connect (handshake mode) or when the request was due (-k) */
    size_t got;        /* response bytes read */
    size_t want;       /* header length + Content-Length, once the head is parsed */
    int complete;      /* the whole response is in; now reading until the server closes */
    char head[4096];
    size_t head_len;
};

static struct {
    struct sockaddr_in addr;
    const char *sni, *path, *cafile;
    int conc, reuse;
    long limit, started; /* -N: connections to start in all (0: no limit), and started so far */
    double duration;
    double rate;       /* -k: requests per second over all connections; 0: handshake mode */
    double sched_start, deadline;
    SSL_CTX *ctx;
    int ep;
    char req[512];
    size_t req_len;
    long done, resumed, errors;
    char first_error[200];
    double *lat;
    long nlat;
} g;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void note_error(const char *what)
{
    g.errors++;
    if (!g.first_error[0]) {
        unsigned long e = ERR_peek_last_error();
        snprintf(g.first_error, sizeof g.first_error, "%s%s%s", what, e ? ": " : "",
                 e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "ssl" : "");
    }
    ERR_clear_error();
}

static void slot_close(struct slot *s)
{
    if (s->ssl) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd); /* also removes it from the epoll set */
        s->fd = -1;
    }
    s->state = S_IDLE;
}

static void slot_watch(struct slot *s, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Starts a new connection in an idle slot; on failure the slot stays idle. */
static void slot_start(struct slot *s)
{
    if (g.limit && g.started >= g.limit)
        return;
    g.started++;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        note_error("socket");
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->started = now();
    s->got = s->want = s->head_len = 0;
    s->complete = 0;
    if (connect(s->fd, (struct sockaddr *)&g.addr, sizeof g.addr) < 0 && errno != EINPROGRESS) {
        note_error("connect");
        slot_close(s);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, s->fd, &ev);
    s->state = S_CONNECT;
}

/* Maps an OpenSSL would-block to the event to wait for; returns -1 on a real error. */
static int ssl_wait(struct slot *s, int ret)
{
    switch (SSL_get_error(s->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        slot_watch(s, EPOLLIN);
        return 0;
    case SSL_ERROR_WANT_WRITE:
        slot_watch(s, EPOLLOUT);
        return 0;
    default:
        return -1;
    }
}

/* Parses the response head once complete; sets s->want. Returns -1 on a non-200 answer. */
static int parse_head(struct slot *s)
{
    char *end = memmem(s->head, s->head_len, "\r\n\r\n", 4);
    if (!end)
        return s->head_len < sizeof s->head ? 0 : -1;
    if (strncmp(s->head, "HTTP/1.1 200", 12) != 0)
        return -1;
    size_t hlen = (size_t)(end - s->head) + 4;
    char *cl = strcasestr(s->head, "\r\ncontent-length:");
    if (!cl || cl > end)
        return -1;
    s->want = hlen + strtoul(cl + 17, NULL, 10);
    return 0;
}

/* -k: a response is complete; the next request is due one interval later. */
static void slot_next_request(struct slot *s)
{
    double t = now();
    if (s->started >= g.sched_start && t <= g.deadline) {
        if (g.nlat < MAX_SAMPLES)
            g.lat[g.nlat++] = t - s->started;
        g.done++;
    }
    s->started += g.conc / g.rate;
    s->got = s->want = s->head_len = 0;
    s->state = S_WAIT;
}

/* A connection is complete: it counts if it completed within the measured time. */
static void slot_finish(struct slot *s)
{
    if (g.reuse) {
        if (SSL_session_reused(s->ssl))
            g.resumed++;
        SSL_SESSION *sess = SSL_get1_session(s->ssl);
        if (sess && SSL_SESSION_is_resumable(sess)) {
            SSL_SESSION_free(s->sess);
            s->sess = sess;
        } else {
            SSL_SESSION_free(sess);
        }
    }
    SSL_shutdown(s->ssl); /* answers the server's close_notify */
    double t = now();
    if (t <= g.deadline) {
        if (g.nlat < MAX_SAMPLES)
            g.lat[g.nlat++] = t - s->started;
        g.done++;
    }
    slot_close(s);
}

/* Runs the slot's state machine until it blocks, fails or finishes. */
static void slot_advance(struct slot *s)
{
    int ret;
    switch (s->state) {
    case S_CONNECT: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            note_error("connect");
            goto fail;
        }
        s->ssl = SSL_new(g.ctx);
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_tlsext_host_name(s->ssl, g.sni);
        if (g.cafile)
            SSL_set1_host(s->ssl, g.sni);
        if (g.reuse && s->sess)
            SSL_set_session(s->ssl, s->sess);
        s->state = S_HANDSHAKE;
    }
        /* fall through */
    case S_HANDSHAKE:
        ret = SSL_connect(s->ssl);
        if (ret <= 0) {
            if (ssl_wait(s, ret) < 0) {
                long v = SSL_get_verify_result(s->ssl);
                note_error(v == X509_V_OK ? "handshake" : X509_verify_cert_error_string(v));
                goto fail;
            }
            return;
        }
        s->state = S_WRITE;
        if (g.rate) {
            s->state = S_WAIT;
            return;
        }
        /* fall through */
    case S_WRITE:
        ret = SSL_write(s->ssl, g.req, (int)g.req_len);
        if (ret <= 0) {
            if (ssl_wait(s, ret) < 0) {
                note_error("write");
                goto fail;
            }
            return;
        }
        s->state = S_READ;
        slot_watch(s, EPOLLIN);
        /* fall through */
    case S_READ:
        for (;;) {
            char buf[16384];
            char *dst = s->want ? buf : s->head + s->head_len;
            int room = s->want ? (int)sizeof buf : (int)(sizeof s->head - s->head_len);
            ret = SSL_read(s->ssl, dst, room);
            if (ret <= 0) {
                if (ssl_wait(s, ret) == 0)
                    return;
                if (s->complete) { /* close_notify or a bare FIN after the response */
                    ERR_clear_error();
                    slot_finish(s);
                    return;
                }
                note_error("read");
                goto fail;
            }
            if (s->complete) {
                note_error("bytes after the response");
                goto fail;
            }
            s->got += (size_t)ret;
            if (!s->want) {
                s->head_len += (size_t)ret;
                if (parse_head(s) < 0) {
                    note_error("bad response");
                    goto fail;
                }
            }
            if (s->want && s->got >= s->want) {
                if (g.rate) {
                    slot_next_request(s);
                    return;
                }
                s->complete = 1;
            }
        }
    case S_IDLE:
    case S_WAIT:
        return;
    }
fail:
    slot_close(s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double p)
{
    if (!g.nlat)
        return 0;
    long i = (long)(p * (g.nlat - 1));
    return g.lat[i] * 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: hsload -a ADDR -p PORT -n SNI [-u PATH] [-c CONC] [-d SECONDS] [-r] "
                    "[-C CAFILE] [-k RATE] [-N COUNT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int opt, port = 443;
    const char *addr = NULL;
    g.path = "/";
    g.conc = 16;
    g.duration = 10;
    while ((opt = getopt(argc, argv, "a:p:n:u:c:d:rC:k:N:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': g.sni = optarg; break;
        case 'u': g.path = optarg; break;
        case 'c': g.conc = atoi(optarg); break;
        case 'd': g.duration = atof(optarg); break;
        case 'r': g.reuse = 1; break;
        case 'C': g.cafile = optarg; break;
        case 'k': g.rate = atof(optarg); break;
        case 'N': g.limit = atol(optarg); break;
        default: usage();
        }
    }
    if (!addr || !g.sni || g.conc < 1)
        usage();
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &g.addr.sin_addr) != 1)
        usage();
    g.req_len = (size_t)snprintf(g.req, sizeof g.req, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                                 g.path, g.sni, g.rate ? "" : "Connection: close\r\n");

    g.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION);
    if (g.cafile) {
        if (SSL_CTX_load_verify_locations(g.ctx, g.cafile, NULL) != 1) {
            fprintf(stderr, "hsload: cannot load %s\n", g.cafile);
            return 1;
        }
        SSL_CTX_set_verify(g.ctx, SSL_VERIFY_PEER, NULL);
    }
    if (g.reuse) {
        SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    } else {
        SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(g.ctx, SSL_OP_NO_TICKET);
    }
    g.lat = malloc(sizeof(double) * MAX_SAMPLES);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    struct slot *slots = calloc((size_t)g.conc, sizeof *slots);
    if (!g.lat || !slots || g.ep < 0)
        return 1;

    /* -k: connections are set up during the first half second, then the schedule starts */
    double start = now();
    g.sched_start = g.rate ? start + 0.5 : start;
    g.deadline = g.sched_start + g.duration;
    for (int i = 0; i < g.conc; i++) {
        slots[i].fd = -1;
        slot_start(&slots[i]);
        if (g.rate)
            slots[i].started = g.sched_start + i / g.rate; /* first request due */
    }
    struct epoll_event evs[256];
    for (double t = start; t < g.deadline; t = now()) {
        double wake = g.deadline;
        int busy = 0;
        for (int i = 0; i < g.conc; i++) {
            struct slot *s = &slots[i];
            if (s->state == S_IDLE && !g.rate)
                slot_start(s);
            if (s->state == S_WAIT && s->started <= t) {
                s->state = S_WRITE;
                slot_advance(s);
            }
            if (s->state == S_WAIT && s->started < wake)
                wake = s->started;
            busy += s->state != S_IDLE;
        }
        if (g.limit && !busy) /* -N: all COUNT connections are done */
            break;
        /* a precise timeout: whole milliseconds would either spin or send late */
        double wait = wake - t < 0 ? 0 : wake - t > 0.1 ? 0.1 : wake - t;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
        int n = epoll_pwait2(g.ep, evs, 256, &ts, NULL);
        for (int i = 0; i < n; i++)
            slot_advance(evs[i].data.ptr);
    }
    /* Let the connections in flight finish rather than drop them mid-handshake: a proxy may
     * take a client that hangs up during the handshake for one that refuses its certificate
     * (sluice's pinning detection does). They no longer count. */
    for (double grace = g.deadline + 5; now() < grace;) {
        int busy = 0;
        for (int i = 0; i < g.conc; i++)
            busy += slots[i].state != S_IDLE && slots[i].state != S_WAIT;
        if (!busy)
            break;
        int n = epoll_wait(g.ep, evs, 256, 100);
        for (int i = 0; i < n; i++)
            slot_advance(evs[i].data.ptr);
    }
    double elapsed = g.limit ? now() - g.sched_start : g.deadline - g.sched_start;
    qsort(g.lat, (size_t)g.nlat, sizeof *g.lat, cmp_double);
    printf("{\"conns\": %ld, \"resumed\": %ld, \"errors\": %ld, \"elapsed\": %.3f, "
           "\"rate\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"first_error\": \"%s\"}\n",
           g.done, g.resumed, g.errors, elapsed, g.done / elapsed, percentile(0.50),
           percentile(0.99), g.first_error);
    if (g.rate && g.nlat)
        fprintf(stderr, "hsload: p99.9 %.3f ms, max %.3f ms\n", percentile(0.999),
                g.lat[g.nlat - 1] * 1000.0);
    return 0;
}
