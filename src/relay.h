/* relay: moving bytes both ways between the client leg and the upstream leg, each plain TCP
 * or TLS, with one bounded buffer per direction (backpressure), half-close carried across
 * (close_notify and FIN), and truncation (EOF without close_notify) mirrored as such. */
#ifndef SLUICE_RELAY_H
#define SLUICE_RELAY_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"

struct http1;
struct h2_bridge;

enum relay_side { RELAY_CLIENT = 0, RELAY_UPSTREAM = 1 };

/* Readiness a blocked relay waits for, per side. */
#define RELAY_WANT_READ(side) (1u << (2 * (side)))
#define RELAY_WANT_WRITE(side) (2u << (2 * (side)))

enum relay_status { RELAY_CONTINUE = 0, RELAY_FINISHED = 1, RELAY_FAILED = -1 };

struct relay_leg;

/* Transport operations of one leg: plain TCP or TLS. Each returns bytes moved (>0), 0 for a
 * clean end (read) or success (shutdown), or one of the negative codes below; RELAY_IO_AGAIN
 * sets *want to the readiness it needs. */
#define RELAY_IO_AGAIN (-1)
#define RELAY_IO_ERROR (-2)
#define RELAY_IO_TRUNCATED (-3) /* TLS: the peer closed without close_notify */
struct relay_leg_ops {
    int (*read)(struct relay_leg *leg, void *buf, size_t len, unsigned *want);
    int (*write)(struct relay_leg *leg, const void *buf, size_t len, unsigned *want);
    int (*shutdown)(struct relay_leg *leg, bool clean, unsigned *want);
};

struct relay_leg {
    const struct relay_leg_ops *ops;
    int fd;
    SSL *ssl;          /* borrowed; NULL for TCP */
    enum relay_side side;
    bool drained;      /* the last read found the socket empty (tls_read: guessed) */
    bool stale_bufs;   /* OpenSSL set up record buffers that RELEASE_BUFFERS will not free */
    char error[96];    /* set on RELAY_IO_ERROR */
};

struct relay_dir {
    uint8_t *buf;      /* from the pool while it holds bytes; NULL when empty */
    uint32_t off, len;
    bool src_eof, truncated, done;
    uint64_t bytes;
};

/* dir[0] moves client -> upstream ("up"), dir[1] upstream -> client ("down"). */
struct relay {
    struct relay_leg leg[2];
    struct relay_dir dir[2];
    struct bufpool *pool;   /* borrowed: the worker's */
    unsigned want;          /* after RELAY_CONTINUE: the readiness to wait for */
    unsigned readable;      /* RELAY_WANT_READ bits of legs that may have bytes to read: cleared
                             * when a read finds none, set again by relay_note_ready */
    bool progressed;        /* the last pump moved at least one byte or state */
    unsigned trimmed;       /* bit per side: the leg's post-handshake buffers were freed */
    /* HTTP/1.1 inspection (optional): every chunk read goes through the inspector, which says
     * how much may go on, releases bytes it held, or ends the connection with a reply. */
    struct http1 *http;     /* borrowed; NULL: bytes pass as they are */
    bool http_tunnel;       /* the protocol switched: relay raw (after the held bytes) */
    bool http_replying;     /* answering the client itself, then closing */
    size_t reply_off;
    uint64_t discarded;     /* bytes the client sent after the reply began, dropped */
    /* HTTP/2 bridging (optional): both legs speak h2; every byte read goes into the bridge,
     * and what each leg is sent comes out of it (no relay buffers are held). */
    struct h2_bridge *h2;   /* borrowed; NULL: not bridging */
    bool h2_eof[2];         /* the side's read direction ended (fed to the bridge) */
    char h2_leg_error[112]; /* the first transport error of a leg, for the record */
};

/* Sets up a relay over the two legs (fds and SSLs borrowed; ssl NULL for TCP). */
void relay_init(struct relay *r, struct bufpool *pool, int cfd, SSL *cssl, int ufd, SSL *ussl);

/* Preloads bytes to send upstream before anything read from the client (a rewritten proxy
 * request head). Returns 0, or -1 when len exceeds a buffer. */
int relay_preload_up(struct relay *r, const void *data, size_t len);

/* Puts an HTTP/1.1 inspector (borrowed) between the legs, before any byte moved. */
void relay_inspect_http1(struct relay *r, struct http1 *http);

/* Bridges HTTP/2 between the legs (bridge borrowed), before any byte moved: from now on the
 * bridge decides what each leg is sent. Not combined with relay_inspect_http1. */
void relay_bridge_h2(struct relay *r, struct h2_bridge *bridge);

/* Tells the relay that a leg handled a post-handshake message (a TLS 1.3 session ticket or
 * key update): OpenSSL's state machine set up record buffers for it that only a later write
 * of application data would release, so the relay frees them when it next waits. */
void relay_note_post_handshake(struct relay *r, enum relay_side side);

/* Tells the relay which readiness the event loop reported (RELAY_WANT_* bits). A leg whose
 * last read found nothing is not read again until its socket is reported readable, so a pump
 * makes one failed read per leg and wakeup at most, and none after a short read. */
void relay_note_ready(struct relay *r, unsigned ready);

/* Moves as much as possible without blocking. RELAY_CONTINUE: wait for r->want;
 * RELAY_FINISHED: both directions ended cleanly; RELAY_FAILED: err holds the reason, naming
 * the side ("client: Connection reset by peer"). */
enum relay_status relay_pump(struct relay *r, char *err, size_t errlen);

/* After a reply of its own (a block page, a 400 or 502) the relay reads and drops what the
 * client still sends until the client closes, so that closing does not reset the connection
 * before the client has read the reply; at most this many bytes. */
#define RELAY_LINGER_MAX (16u << 20)

/* The reply is out and the relay only waits for the client to close: the caller bounds that
 * wait in time. */
bool relay_lingering(const struct relay *r);

/* Returns buffers to the pool; the relay is unusable afterwards. */
void relay_release(struct relay *r);

#endif
