/* conn_int: the connection's state, shared by the files that make up the conn module
 * (conn.c: the state machine; conn_http.c: HTTP hooks and the request log; conn_record.c: the
 * record at close). Nothing outside the module includes this. */
#ifndef SLUICE_CONN_INT_H
#define SLUICE_CONN_INT_H

#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "conn.h"
#include "connlog.h"
#include "relay.h"
#include "snapshot.h"
#include "tls.h"

struct dial;
struct http1;
struct http1_hooks;
struct mint_leaf;

enum conn_state {
    CONN_PROXY_REQUEST, /* explicit: waiting for the whole request head */
    CONN_PEEK,          /* waiting for a whole ClientHello, or deciding it is not TLS */
    CONN_DIAL,          /* resolving and connecting to the upstream */
    CONN_UPSTREAM_TLS,  /* handshake with the upstream; the client's is held */
    CONN_CLIENT_TLS,    /* handshake with the client under the forged leaf */
    CONN_RELAY,         /* moving bytes both ways */
    CONN_FAIL_READ,     /* upstream failed: reading the client's request */
    CONN_FAIL_WRITE,    /* upstream failed: writing the 502 page */
};

struct conn {
    struct conn *next, *prev; /* the worker's list */
    struct worker *w;
    struct snapshot *snap;    /* the configuration this connection started with (own ref) */
    uint64_t id;
    enum conn_state state;
    enum connlog_action action;
    int cfd, ufd;
    SSL *cssl, *ussl;
    struct event cev_r, cev_w, uev_r, uev_w, timer;
    unsigned watching;        /* RELAY_WANT_* bits whose events are added */
    bool peeking;             /* cev_r is edge-triggered (peek states) */
    bool got_bytes;           /* the client has sent something */
    bool closing;             /* close once the current callback returns */
    bool upstream_failed;     /* the client gets a 502 page or an alert, never content */
    bool block_page;          /* blocked by policy: the client gets the 403 block page */
    bool leaf_sent;           /* the hello callback handed the forged leaf to OpenSSL */
    bool relay_started;
    bool upstream_tls_done;   /* handshakes completed (post-handshake messages may later */
    bool client_tls_done;     /* put OpenSSL's state machine back "in init") */
    bool fail_with_alert;     /* ... an alert: the client offered ALPN, but not HTTP/1.1 */
    const struct config_listen *listen;
    struct sockaddr_storage client, dst;
    bool have_dst;
    char *host;               /* the name the upstream must prove: SNI, else target host */
    char *target;             /* explicit and fixed: the host to dial */
    uint16_t port;
    char *sni;
    uint8_t *alpn_offer;      /* client's ALPN list, wire format */
    size_t alpn_offer_len;
    char *fwd_head;           /* explicit plain HTTP: the rewritten request head */
    size_t fwd_len;
    struct dial *dial;
    struct tls_verify_result vr;
    struct mint_leaf *leaf;
    int up_version;
    struct relay relay;
    struct http1 *http;       /* HTTP/1.1 inspector, when the policy has HTTP rules */
    char *page;               /* CONN_FAIL_WRITE: the response, and how much is sent */
    size_t page_len, page_off;
    struct timeval started;
    struct timeval last_active;
    const char *rule;         /* the policy rule that decided (owned by snap), or NULL */
    const char *err_stage;
    char err_reason[160];
};

static inline const struct config *conn_cfg(const struct conn *c)
{
    return &c->snap->cfg;
}

/* The HTTP/1.1 inspector's hooks: the policy's HTTP rules and the request log (conn_http.c). */
extern const struct http1_hooks conn_http_hooks;

/* Writes the connection's record to the connection log, if there is one (conn_record.c). */
void conn_log_record(struct conn *c);

#endif
