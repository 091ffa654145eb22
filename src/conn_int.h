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
struct conn_heads;
struct h2_bridge;
struct h2_hooks;
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
    CONN_FAIL_LINGER,   /* the page is out: dropping what the client still sends */
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
    bool lingering;           /* after a reply of the gateway's own: closes at the timer */
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
    struct http1 *http;       /* HTTP/1.1 inspector, when HTTP is inspected */
    struct h2_bridge *h2;     /* HTTP/2 bridge, when HTTP is inspected and both legs chose h2 */
    struct conn_heads *heads; /* request log: header lists of exchanges in flight */
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
/* The HTTP/2 bridge's hooks: the same rules and log for HTTP/2 streams (conn_http.c). */
extern const struct h2_hooks conn_h2_hooks;

/* Frees what conn_http keeps for the connection (after the inspector and bridge are freed,
 * whose last exchanges it logs). */
void conn_http_release(struct conn *c);

/* The request header fields of exchange `key` (HTTP/1.1: its number; HTTP/2: the client's
 * stream id), kept from the request head when the policy has header keys, for the decisions
 * made at the response; 0 and NULL otherwise. Borrowed until the exchange ends. */
struct policy_http_header;
size_t conn_http_request_fields(struct conn *c, uint32_t key,
                                const struct policy_http_header **out);

/* Writes the connection's record to the connection log, if there is one (conn_record.c). */
void conn_log_record(struct conn *c);

/* Body rules (conn_body.c): the body hooks of the HTTP/1.1 inspector and the HTTP/2 bridge,
 * for the hook tables in conn_http.c. arg is the struct conn. */
struct http1_block;
struct http1_body_info;
struct http1_body_plan;
struct h2_block;
struct h2_body_info;
struct h2_body_plan;
void conn_body_http1_begin(void *arg, const struct http1_body_info *info,
                           struct http1_body_plan *plan);
int conn_body_http1_data(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                         struct http1_block *blk);
void conn_body_h2_begin(void *arg, const struct h2_body_info *info, struct h2_body_plan *plan);
int conn_body_h2_data(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                      struct h2_block *blk);
void conn_body_end(void *arg, void *body); /* both: frees the body's state */

#endif
